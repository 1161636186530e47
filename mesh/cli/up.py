"""`meshctl up [--detach]`, and the `supervise` a detached mesh runs in the background."""

from __future__ import annotations

import argparse

from mesh.cli.command import Command, add_config, add_run_dir, root, run_dir
from mesh.control import local
from mesh.control.contracts import ContractsError


def _add_mesh_arguments(command: argparse.ArgumentParser) -> None:
    add_config(command)
    command.add_argument(
        "--edge-port", type=int, help="the edge's port instead of mesh.yaml's (0: a free one)"
    )
    command.add_argument(
        "--https-port",
        type=int,
        help="the edge's HTTPS port instead of mesh.yaml's edge.https.port (0: a free one)",
    )


def _add_up_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument(
        "--detach", action="store_true", help="return once healthy; `down` stops it"
    )
    _add_mesh_arguments(command)


def _add_supervise_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    _add_mesh_arguments(command)


def _up(args: argparse.Namespace) -> int:
    if args.detach:
        return local.up_detached(
            root(), run_dir(args), args.config, args.edge_port, args.https_port
        )
    return _supervise(args, foreground=True)


def _supervise(args: argparse.Namespace, foreground: bool = False) -> int:
    return local.supervise(
        root(),
        run_dir(args),
        args.config,
        foreground=foreground,
        edge_port=args.edge_port,
        https_port=args.https_port,
    )


UP = Command(_add_up_arguments, _up, errors=(ContractsError, local.ControlError))
SUPERVISE = Command(
    _add_supervise_arguments, _supervise, errors=(ContractsError, local.ControlError)
)
