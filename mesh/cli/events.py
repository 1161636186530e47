"""`meshctl events init`: the event bus's streams and consumers, as mesh.yaml declares."""

from __future__ import annotations

import argparse

from mesh.cli.command import Command, add_config, root
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError, load_topology
from mesh.deploy import commands as deploy


def _add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["init"])
    command.add_argument(
        "--replicas", type=int, default=1, help="copies of each stream (3 in a NATS cluster)"
    )
    command.add_argument(
        "--wait",
        type=float,
        default=deploy.EVENTS_INIT_WAIT_SECONDS,
        help="seconds to keep trying while JetStream does not answer yet"
        f" (default {deploy.EVENTS_INIT_WAIT_SECONDS:g})",
    )
    add_config(command)


def _run(args: argparse.Namespace) -> int:
    return deploy.init_events(load_topology(root(), args.config), args.replicas, args.wait)


EVENTS = Command(_add_arguments, _run, errors=(ContractsError, ControlError, deploy.DeployError))
