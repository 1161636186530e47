"""`meshctl`: the list of its commands, their parser, and running the one chosen.

Each command lives in a module of `mesh.cli` that defines its `Command`; `COMMANDS` lists
them in the order `meshctl --help` shows (all but the hidden ones, which meshctl runs
itself). Only the chosen command's module is imported, when argparse reaches its name:
most of them import the generated code, which `meshctl proto gen` makes on a fresh
checkout.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mesh.cli.command import Command, Forwarded, UsageError


@dataclass(frozen=True)
class Listing:
    """A command as `meshctl --help` lists it, and where its `Command` is defined."""

    name: str
    summary: str
    #: `module:attribute` of the command's `Command` (or `Forwarded`).
    target: str
    #: Run by meshctl itself, not by its users: `meshctl --help` leaves it out.
    hidden: bool = False

    def load(self) -> Command | Forwarded:
        module, attribute = self.target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, Command | Forwarded), self.target
        return command


COMMANDS = (
    Listing("proto", "contracts: generate, lint, guard, vendor", "mesh.cli.proto:PROTO"),
    Listing("up", "start the mesh, wait until healthy, say where to reach it", "mesh.cli.up:UP"),
    Listing(
        "supervise",
        "run a mesh until SIGTERM: what `up --detach` leaves in the background",
        "mesh.cli.up:SUPERVISE",
        hidden=True,
    ),
    Listing("down", "stop a mesh started with `up --detach`", "mesh.cli.down:DOWN"),
    Listing("status", "each instance's pids, ports and health", "mesh.cli.status:STATUS"),
    Listing("logs", "a service's logs (every instance)", "mesh.cli.logs:LOGS"),
    Listing(
        "alerts",
        "alerts firing and pending: the services' objectives and the mesh's own",
        "mesh.cli.alerts:ALERTS",
    ),
    Listing(
        "trace", "one trace as a waterfall: an order's, or by trace id", "mesh.cli.trace:TRACE"
    ),
    Listing("traces", "recent traces, the slowest first", "mesh.cli.trace:TRACES"),
    Listing("dlq", "dead letters: list, show one, replay one or --all", "mesh.cli.dlq:DLQ"),
    Listing(
        "rollout",
        "move a service's calls to a new version: canary steps or blue-green, undo",
        "mesh.cli.rollout:ROLLOUT",
    ),
    Listing("certs", "the mesh CA and every certificate it issued", "mesh.cli.certs:CERTS"),
    Listing(
        "render",
        "write deploy files from mesh.yaml: compose, envoy, k8s, edge-files, k8s-secrets",
        "mesh.cli.render:RENDER",
    ),
    Listing("events", "the event bus: `events init`", "mesh.cli.events:EVENTS"),
    Listing(
        "bench",
        "measure what the mesh costs a request (six paths to one RPC, ratios to direct), "
        "or with `saga` how many orders per second the saga completes",
        "mesh.cli.bench:BENCH",
    ),
    Listing(
        "chaos",
        "break part of a mesh of its own on purpose; PASS or FAIL against a criterion",
        "mesh.cli.chaos:CHAOS",
    ),
    Listing(
        "token",
        "mint a development JWT signed by identity's key (see `meshctl token --help`)",
        "mesh.cli.token:TOKEN",
    ),
    Listing(
        "keys",
        "API keys for machine consumers: create (shown once), list, revoke",
        "mesh.cli.keys:KEYS",
    ),
)
LISTED = {listing.name: listing for listing in COMMANDS}


class _CommandParser(argparse.ArgumentParser):
    """A command's parser, given the command's arguments once argparse reaches it.

    It takes every argument after the command's name, so one it does not know is its own
    mistake, told with its own usage (`meshctl up --detatch`), not with meshctl's.
    """

    def __init__(self, *, listing: Listing | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listing = listing

    # argparse calls this on the chosen command's parser only, before parsing its arguments.
    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        if self._listing is not None:
            command = self._listing.load()
            self._listing = None
            if isinstance(command, Command):
                command.add_arguments(self)
            self.set_defaults(command_parser=self)
        parsed, unknown = super().parse_known_args(*args, **kwargs)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed, unknown


def parser(reveal: str | None = None) -> argparse.ArgumentParser:
    """meshctl's parser: one sub-parser a command, filled in when chosen.

    A hidden command has a sub-parser only when `reveal` names it: argparse cannot hide
    one, whose name would show in the usage and in the choices a mistyped command lists.
    """
    top = argparse.ArgumentParser(
        prog="meshctl", description="Run and inspect the shop's service mesh."
    )
    commands = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for listing in COMMANDS:
        # A sub-parser added without `help` is left out of `meshctl --help`.
        if not listing.hidden:
            commands.add_parser(
                listing.name, help=listing.summary, description=listing.summary, listing=listing
            )
        elif listing.name == reveal:
            commands.add_parser(listing.name, description=listing.summary, listing=listing)
    return top


def _reported(errors: tuple[type[Exception], ...], run: Callable[[], int]) -> int:
    """`run()`'s exit status; one of the `errors` a command expects is one line, status 1."""
    try:
        return run()
    except errors as error:
        print(f"meshctl: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = LISTED.get(argv[0]) if argv else None
    # argparse would take a forwarded command's options (`--subject`) as meshctl's own.
    if chosen is not None and isinstance(forwarded := chosen.load(), Forwarded):
        return _reported(forwarded.errors, functools.partial(forwarded.run, argv[1:]))
    args = parser(reveal=chosen.name if chosen else None).parse_args(argv)
    command = LISTED[args.command].load()
    assert isinstance(command, Command)
    try:
        return _reported(command.errors, functools.partial(command.run, args))
    except UsageError as error:
        command_parser: argparse.ArgumentParser = args.command_parser
        command_parser.error(str(error))
