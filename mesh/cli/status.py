"""`meshctl status [--json]`: each instance of the running mesh, from its `state.json`.

Every command but `up` reads the run directory's state, which the supervisor keeps
current; none of them finds processes by name, only by the pids recorded there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control import routing
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError, running_state, status_table
from mesh.control.rollouts import report, store
from mesh.control.topology import load


def status(run_dir: Path, as_json: bool) -> int:
    state = running_state(run_dir)
    if state is None:
        print(json.dumps({"status": "down"}) if as_json else f"no mesh is running from {run_dir}")
        return 3
    if as_json:
        print(json.dumps(state, indent=2))
        return 0
    print(status_table(state))
    if (run_dir / routing.ROUTING_DIR).is_dir():  # a service has versions
        lines = report.status_lines(run_dir, load(Path(state["config"])), last=1)
        print("\n".join(lines))
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("--json", action="store_true", help="machine-readable output")


def _run(args: argparse.Namespace) -> int:
    return status(run_dir(args), args.json)


STATUS = Command(
    _add_arguments, _run, errors=(ContractsError, ControlError, store.UnreadableRollout)
)
