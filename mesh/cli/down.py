"""`meshctl down`: stop a mesh started with `up --detach`, or say that none is running."""

from __future__ import annotations

import argparse

from mesh.cli.command import Command, add_run_dir, run_dir
from mesh.control import local
from mesh.control.contracts import ContractsError


def _down(args: argparse.Namespace) -> int:
    return local.down(run_dir(args))


DOWN = Command(add_run_dir, _down, errors=(ContractsError, local.ControlError))
