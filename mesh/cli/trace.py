"""`meshctl trace ID` and `meshctl traces --slow`: the traces the trace store kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError
from mesh.control.tracestore import TraceSearch, TraceStore, render_waterfall
from mesh.runtime import telemetry


def _trace_store(run_dir: Path) -> TraceStore:
    path = run_dir / "traces" / "traces.db"
    if not path.exists():
        raise ControlError(f"no traces in {path}: `meshctl up` runs the trace store")
    return TraceStore(path)


def show_trace(run_dir: Path, key: str) -> int:
    """Print the trace of `key` as a waterfall.

    An order id finds the trace its placement started (every saga step joins it); a
    32-hex-digit trace id is taken as is.
    """
    store = _trace_store(run_dir)
    try:
        trace_ids = store.traces_with(telemetry.ORDER_ID, key) or [key.lower()]
        spans = store.trace(trace_ids[-1])  # the oldest: where the order was placed
    finally:
        store.close()
    if not spans:
        raise ControlError(f"no trace of {key!r} (an order id or a trace id)")
    print(render_waterfall(spans))
    return 0


def slow_traces(run_dir: Path, limit: int) -> int:
    """Print the slowest traces kept, slowest first."""
    store = _trace_store(run_dir)
    try:
        summaries = store.summaries(TraceSearch(limit=limit))
    finally:
        store.close()
    print(f"{'TRACE':<34}{'MS':>9}  {'SPANS':>5}  {'ERRORS':>6}  ROOT")
    for summary in summaries:
        print(
            f"{summary.trace_id:<34}{summary.duration_ms:>9.1f}  {summary.spans:>5}  "
            f"{summary.errors:>6}  {summary.root_service} {summary.root_name}"
        )
    return 0


def _add_trace_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("id", help="an order id, or a trace id (32 hex digits)")


def _add_traces_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("--slow", action="store_true", help="rank by duration (the default)")
    command.add_argument("-n", "--limit", type=int, default=10, help="how many traces")


def _trace(args: argparse.Namespace) -> int:
    return show_trace(run_dir(args), args.id)


def _traces(args: argparse.Namespace) -> int:
    return slow_traces(run_dir(args), args.limit)


TRACE = Command(_add_trace_arguments, _trace, errors=(ContractsError, ControlError))
TRACES = Command(_add_traces_arguments, _traces, errors=(ContractsError, ControlError))
