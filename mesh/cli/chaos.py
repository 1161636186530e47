"""`meshctl chaos SCENARIO [--short]`: break part of a mesh of its own, on purpose."""

from __future__ import annotations

import argparse

from mesh.cli.command import Command, add_trial_run_dir, root, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError
from mesh.tools import chaos


def _add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "scenario",
        choices=chaos.SCENARIOS,
        metavar="SCENARIO",
        help="kill-replica (catalog replicas killed under load), poison (poison events "
        "among good orders), crash-saga (saga participants and nats-server killed during "
        "a burst of orders), faults (payments' calls to the processor failed and delayed), "
        "overload (a read and PlaceOrder at multiples of their capacity), bad-canary "
        "(catalog rolled out to a failing version, then to a healthy one) or "
        "hung-dependency (inventory's app hangs under reads with stock levels)",
    )
    command.add_argument(
        "--short", action="store_true", help="the short form (under a minute; the tests run it)"
    )
    add_trial_run_dir(command, "the scenario's")


def _run(args: argparse.Namespace) -> int:
    return chaos.run(root(), run_dir(args), args.scenario, short=args.short)


CHAOS = Command(_add_arguments, _run, errors=(ContractsError, ControlError))
