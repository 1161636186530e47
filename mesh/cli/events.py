"""`meshctl events init | replay SERVICE --from-start`: the event bus's streams and
consumers, as mesh.yaml declares; and the rebuild of a service's read model."""

from __future__ import annotations

import argparse
import asyncio
import os

from nats.js import JetStreamContext

from mesh.cli.command import Command, UsageError, add_config, add_run_dir, root, run_dir
from mesh.control import deadletters, natsconf, rebuilds
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError, load_topology, running_state
from mesh.deploy import commands as deploy
from mesh.runtime.events import NatsSettings

REPLAY_TIMEOUT_SECONDS = 600.0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("action", choices=["init", "replay"])
    command.add_argument("service", nargs="?", help="replay: whose read model to rebuild")
    command.add_argument(
        "--from-start",
        action="store_true",
        help="replay: from the first event kept, dropping the read model once rebuilt",
    )
    command.add_argument(
        "--no-wait", action="store_true", help="replay: ask for the rebuild, do not follow it"
    )
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
    add_run_dir(command)


def _admin(args: argparse.Namespace) -> NatsSettings:
    """meshctl's NATS: `SHOP_NATS_*` when set (in a cluster), else the running mesh's."""
    if os.environ.get("SHOP_NATS_URL"):
        return NatsSettings.from_environment(natsconf.ADMIN_IDENTITY, dict(os.environ))
    state = running_state(run_dir(args))
    if state is None:
        raise ControlError(f"no mesh is running from {run_dir(args)} (or set SHOP_NATS_URL)")
    return natsconf.admin_from_state(state)


def _replay(args: argparse.Namespace) -> int:
    if not args.service or not args.from_start:
        raise UsageError("meshctl events replay SERVICE --from-start")
    subjects = rebuilds.rebuilt_subjects(load_topology(root(), args.config), args.service)
    wait = None if args.no_wait else REPLAY_TIMEOUT_SECONDS

    async def work(js: JetStreamContext) -> float:
        return await rebuilds.rebuild(js, args.service, subjects, wait_seconds=wait, say=print)

    asyncio.run(deadletters.with_jetstream(_admin(args), work))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.action == "replay":
        return _replay(args)
    return deploy.init_events(load_topology(root(), args.config), args.replicas, args.wait)


EVENTS = Command(
    _add_arguments,
    _run,
    errors=(ContractsError, ControlError, deploy.DeployError, rebuilds.RebuildError),
)
