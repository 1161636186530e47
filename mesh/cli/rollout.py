"""`meshctl rollout start | status | undo | weights`: move a service's calls from one of its
versions to another while the mesh runs (`mesh.control.rollouts`)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.cli.command import Command, UsageError, add_run_dir, run_dir
from mesh.control import routing
from mesh.control.local import ControlError, running_state
from mesh.control.rollouts import actions, report, store
from mesh.control.rollouts.actions import RolloutError
from mesh.control.rollouts.model import (
    BLUE_GREEN,
    CANARY,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_STEPS,
    ENDED,
    PROMOTED,
    RolloutSpec,
)
from mesh.control.topology import Topology, load, parse_duration

#: How often `--wait` looks at the rollout.
WAIT_POLL_SECONDS = 0.5


def _mesh(args: argparse.Namespace) -> tuple[Path, Topology, dict[str, Any]]:
    """The run directory, topology and state of the mesh running there."""
    where = run_dir(args)
    state = running_state(where)
    if state is None:
        raise ControlError(f"no mesh is running from {where}")
    return where, load(Path(state["config"])), state


def _percent(text: str) -> float:
    try:
        return float(text.removesuffix("%")) / 100
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percent (e.g. 1% or 0.5%)") from None


def _milliseconds(text: str) -> float:
    try:
        return parse_duration(text) * 1000
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(step) for step in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of percents: 5,25,50,100"
        ) from None


def _spec(args: argparse.Namespace) -> RolloutSpec:
    try:
        return RolloutSpec(
            service=args.service,
            canary=args.canary,
            strategy=BLUE_GREEN if args.blue_green else CANARY,
            steps=(100,) if args.blue_green else args.steps,
            interval=args.interval,
            max_error_rate=args.max_error_rate,
            max_p99_ms=args.max_p99,
            min_requests=args.min_requests,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _start(args: argparse.Namespace) -> int:
    where, topology, state = _mesh(args)
    rollout = actions.start(where, topology, _spec(args), state["instances"])
    print(report.decision_line(rollout.decisions[-1], rollout))
    if not args.wait:
        print(f"`meshctl rollout status {args.service}` follows it")
        return 0
    return _follow(where, args.service, len(rollout.decisions))


def _follow(where: Path, service: str, seen: int) -> int:
    """Print each decision as it is made, until the rollout ends; 0 if promoted."""
    while True:
        rollout = store.load(where, service)
        if rollout is None:
            raise RolloutError(f"{service} has had no rollout in this mesh")
        for decision in rollout.decisions[seen:]:
            print(report.decision_line(decision, rollout), flush=True)
        seen = len(rollout.decisions)
        if rollout.status in ENDED:
            print(f"{service}: {rollout.status}")
            return 0 if rollout.status == PROMOTED else 1
        time.sleep(WAIT_POLL_SECONDS)


def _status(args: argparse.Namespace) -> int:
    where, topology, _ = _mesh(args)
    if args.watch:
        if args.service is None:
            raise UsageError("--watch follows the rollout of one service: name it")
        actions.versions(topology, args.service)
        return _follow(where, args.service, 0)
    rollouts = store.every(where)
    if args.json:
        print(json.dumps([r.to_json() for r in rollouts], indent=2))
        return 0
    for line in report.status_lines(where, topology, args.service):
        print(line)
    return 0


def _undo(args: argparse.Namespace) -> int:
    where, topology, _ = _mesh(args)
    rollout = actions.undo(where, topology, args.service)
    print(report.decision_line(rollout.decisions[-1], rollout))
    return 0


def _share(text: str) -> tuple[str, int]:
    version, equals, share = text.partition("=")
    if not equals or not share.removesuffix("%").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not VERSION=PERCENT (e.g. v2=10)")
    return version, int(share.removesuffix("%"))


def _weights(args: argparse.Namespace) -> int:
    where, topology, _ = _mesh(args)
    if args.shares:
        actions.set_weights(where, topology, args.service, dict(args.shares))
    for line in report.status_lines(where, topology, args.service)[:1]:
        print(line)
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    steps = command.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    start = steps.add_parser(
        "start",
        help="move a service's calls to its version --canary, step by step (or --blue-green)",
        description=(
            "Give the canary each step's share of the calls for --interval, comparing its "
            "calls (rate, server errors, p99, as every caller's Envoy counts them) with the "
            "stable version's over the same window: on to the next step while it stays "
            "within the limits, back to the stable version at once when it breaches one."
        ),
    )
    add_run_dir(start)
    start.add_argument("service")
    start.add_argument("--canary", required=True, help="the version to move the calls to")
    start.add_argument(
        "--steps", type=_steps, default=DEFAULT_STEPS, metavar="PERCENTS",
        help="the canary's share at each step (default 5,25,50,100)",
    )  # fmt: skip
    start.add_argument(
        "--interval", type=_seconds, default=DEFAULT_INTERVAL_SECONDS,
        help="how long each step is watched (default 30s)",
    )  # fmt: skip
    start.add_argument(
        "--max-error-rate", type=_percent, default=0.01, metavar="PERCENT",
        help="the share of the canary's calls that may end in a server error (default 1%%)",
    )  # fmt: skip
    start.add_argument(
        "--max-p99", type=_milliseconds, metavar="DURATION",
        help="the canary's p99 limit, e.g. 200ms (default: none)",
    )  # fmt: skip
    start.add_argument(
        "--min-requests", type=int, default=DEFAULT_MIN_REQUESTS,
        help=f"calls the canary needs in a window to be judged (default {DEFAULT_MIN_REQUESTS})",
    )  # fmt: skip
    start.add_argument(
        "--blue-green", action="store_true",
        help="switch every call at once after a smoke check, then watch one interval",
    )  # fmt: skip
    start.add_argument("--wait", action="store_true", help="follow it to its end")
    start.set_defaults(action=_start)
    status = steps.add_parser("status", help="each split, and where its last rollout stands")
    add_run_dir(status)
    status.add_argument("service", nargs="?")
    status.add_argument("--json", action="store_true", help="the rollouts' state as JSON")
    status.add_argument(
        "--watch", action="store_true",
        help="follow the service's rollout, each decision as it is made, to its end "
        "(exit 0 if promoted, 1 if rolled back or undone)",
    )  # fmt: skip
    status.set_defaults(action=_status)
    undo = steps.add_parser(
        "undo", help="stop a rollout, or reverse the last one: the split of before, at once"
    )
    add_run_dir(undo)
    undo.add_argument("service")
    undo.set_defaults(action=_undo)
    weights = steps.add_parser(
        "weights", help="show a service's split, or set it by hand: v1=90 v2=10"
    )
    add_run_dir(weights)
    weights.add_argument("service")
    weights.add_argument("shares", nargs="*", type=_share, metavar="VERSION=PERCENT")
    weights.set_defaults(action=_weights)


def _run(args: argparse.Namespace) -> int:
    action: Callable[[argparse.Namespace], int] = args.action
    return action(args)


ROLLOUT = Command(
    _add_arguments,
    _run,
    errors=(ControlError, RolloutError, routing.WeightsError, store.UnreadableRollout),
)
