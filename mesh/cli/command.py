"""What a meshctl command is, and the arguments many commands share.

Each command's module defines its `Command`: the arguments it adds to its own parser,
what it runs, and which errors it reports as one line. `mesh.cli.app` lists the modules.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mesh.control import contracts
from mesh.control.plan import DEFAULT_RUN_DIR

DEFAULT_TRIAL_DIR = DEFAULT_RUN_DIR / "trial"


@dataclass(frozen=True)
class Command:
    """A command argparse parses: its arguments, its work, and the errors it expects.

    An error of one of the `errors` types is the user's to fix (a missing file, a mesh not
    running), so it is printed as `meshctl: ERROR` with exit status 1; any other exception
    is a defect and keeps its traceback.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    errors: tuple[type[Exception], ...] = ()


@dataclass(frozen=True)
class Forwarded:
    """A command another program parses: every argument after the command's name is its.

    Its `errors` are reported as a `Command`'s are: one line, exit status 1.
    """

    run: Callable[[Sequence[str]], int]
    errors: tuple[type[Exception], ...] = ()


class UsageError(Exception):
    """A mistake in a command's arguments that its parser cannot see (one argument needs
    another): meshctl prints it under the command's usage, as argparse does, exit status 2.
    """


def root() -> Path:
    """The checkout meshctl runs in."""
    return contracts.Workspace.find().root


def run_dir(args: argparse.Namespace) -> Path:
    """The `--run-dir` given, relative to the checkout unless absolute."""
    given: Path = args.run_dir
    return given if given.is_absolute() else root() / given


def add_run_dir(command: argparse.ArgumentParser) -> None:
    """`--run-dir` of a command that starts or looks into the local mesh."""
    command.add_argument(
        "--run-dir", type=Path, default=DEFAULT_RUN_DIR,
        help="the mesh's state, certificates, logs and databases (default: .mesh)",
    )  # fmt: skip


def add_trial_run_dir(command: argparse.ArgumentParser, whose: str) -> None:
    """`--run-dir` of a command that starts a mesh of its own."""
    command.add_argument(
        "--run-dir", type=Path, default=DEFAULT_TRIAL_DIR,
        help=f"{whose} own mesh (default .mesh/trial; wiped each run)",
    )  # fmt: skip


def add_config(command: argparse.ArgumentParser) -> None:
    """`--config`: the topology file to read instead of the checkout's mesh.yaml."""
    command.add_argument("--config", type=Path, help="the topology (default: mesh.yaml)")
