"""`meshctl logs SERVICE [--trace ID] [--json]`: every instance's last lines."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError
from mesh.control.logfiles import LogFilter, app_logs, last_lines
from mesh.runtime import telemetry


def logs(
    run_dir: Path, service: str, lines: int, trace_id: str | None = None, raw: bool = False
) -> int:
    """Print the last `lines` of each instance of `service`.

    With `trace_id`, only the lines logged within that trace (the services log JSON lines
    with `trace_id`); `raw` prints the lines as they are stored.
    """
    paths = app_logs(run_dir, service)
    if not paths:
        raise ControlError(f"no logs of {service!r} in {run_dir / 'logs'}")
    for instance, path in paths.items():
        if trace_id is None:
            found, _ = last_lines(path, lines, LogFilter())
        else:  # a trace's lines, from the whole log
            found, _ = last_lines(path, None, LogFilter(trace_id=trace_id), tail_bytes=None)
        for line in found:
            print(f"{instance:<16}| {line if raw else telemetry.readable(line)}")
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("service")
    command.add_argument("-n", "--lines", type=int, default=50, help="lines per instance")
    command.add_argument("--trace", metavar="TRACE_ID", help="only the lines of this trace")
    command.add_argument("--json", action="store_true", help="the JSON lines as stored")


def _run(args: argparse.Namespace) -> int:
    return logs(run_dir(args), args.service, args.lines, args.trace, args.json)


LOGS = Command(_add_arguments, _run, errors=(ContractsError, ControlError))
