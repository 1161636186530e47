"""`meshctl alerts [--json]`: the running mesh's alerts that fire or are pending, from its
`state.json` (the supervisor evaluates them: `mesh.control.alerting.local`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control.local import ControlError, alerts_table, running_state


def alerts(run_dir: Path, as_json: bool) -> int:
    state = running_state(run_dir)
    if state is None:
        print(json.dumps({"status": "down"}) if as_json else f"no mesh is running from {run_dir}")
        return 3
    listed = state.get("alerts", [])
    if as_json:
        print(json.dumps(listed, indent=2))
    else:
        print(alerts_table(listed))
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("--json", action="store_true", help="machine-readable output")


def _run(args: argparse.Namespace) -> int:
    return alerts(run_dir(args), args.json)


ALERTS = Command(_add_arguments, _run, errors=(ControlError,))
