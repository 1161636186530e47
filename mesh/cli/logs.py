"""`meshctl logs SERVICE [--trace ID] [--consumer SUBJECT] [--json]`: every instance's
last lines; `meshctl logs edge`, the edge's access log."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError
from mesh.control.logfiles import LogFilter, app_logs, last_lines
from mesh.runtime import telemetry


def logs(run_dir: Path, service: str, lines: int, kept: LogFilter, raw: bool = False) -> int:
    """Print the last `lines` of each instance of `service` (`edge`: the edge's access log
    and its Envoy's own lines) that `kept` keeps.

    With a trace id or a consumer to keep, those lines from the whole log (the services and
    the edge log JSON lines with `trace_id`, the edge's with `consumer`); `raw` prints the
    lines as they are stored.
    """
    paths = app_logs(run_dir, service)
    if not paths:
        raise ControlError(f"no logs of {service!r} in {run_dir / 'logs'}")
    whole = kept.trace_id is not None or kept.consumer is not None
    for instance, path in paths.items():
        if whole:
            found, _ = last_lines(path, None, kept, tail_bytes=None)
        else:
            found, _ = last_lines(path, lines, kept)
        for line in found:
            print(f"{instance:<16}| {line if raw else telemetry.readable(line)}")
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("service")
    command.add_argument("-n", "--lines", type=int, default=50, help="lines per instance")
    command.add_argument("--trace", metavar="TRACE_ID", help="only the lines of this trace")
    command.add_argument(
        "--consumer", metavar="SUBJECT", help="edge: only the requests of this consumer"
    )
    command.add_argument("--json", action="store_true", help="the JSON lines as stored")


def _run(args: argparse.Namespace) -> int:
    kept = LogFilter(trace_id=args.trace, consumer=args.consumer)
    return logs(run_dir(args), args.service, args.lines, kept, args.json)


LOGS = Command(_add_arguments, _run, errors=(ContractsError, ControlError))
