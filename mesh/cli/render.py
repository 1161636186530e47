"""`meshctl render TARGET [--check]`: the deploy files mesh.yaml implies."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.cli.command import Command, UsageError, add_config, add_run_dir, root, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.edge_tls import CopiedPair
from mesh.control.local import ControlError, load_topology
from mesh.deploy import commands as deploy

#: Targets that print or write somewhere of the caller's choosing, not committed files.
EDGE_FILES, K8S_SECRETS = "edge-files", "k8s-secrets"


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument(
        "target", choices=[*deploy.TARGETS, EDGE_FILES, K8S_SECRETS],
        help="compose: docker-compose.yml, .env, deploy/compose/; envoy: envoy/; k8s: deploy/k8s/; "
        "edge-files DIR: what the edge serves; k8s-secrets: the dev identities as Secrets "
        "(CA kept in RUN_DIR/k8s-pki) to pipe into `kubectl apply -f -`",
    )  # fmt: skip
    command.add_argument("directory", nargs="?", type=Path, help="for edge-files")
    command.add_argument(
        "--tls-cert", type=Path, help="edge-files: copy the user's HTTPS certificate..."
    )
    command.add_argument("--tls-key", type=Path, help="...and its key...")
    command.add_argument("--tls-dir", type=Path, help="...into this directory, for the edge")
    command.add_argument(
        "--deny-list", type=Path, help="edge-files: write the first deny list of API keys here"
    )
    command.add_argument(
        "--check", action="store_true", help="write nothing; fail if a committed file is stale"
    )
    add_config(command)


def _run(args: argparse.Namespace) -> int:
    if args.target == EDGE_FILES and args.directory is None:
        raise UsageError("edge-files: give the DIRECTORY to write")
    checkout = root()
    topology = load_topology(checkout, args.config)
    if args.target == EDGE_FILES:
        return deploy.write_edge_files(
            checkout, topology, args.directory, _copied(args), args.deny_list
        )
    if args.target == K8S_SECRETS:
        return deploy.print_secrets(topology, run_dir(args))
    return deploy.render(checkout, topology, args.target, args.check)


def _copied(args: argparse.Namespace) -> CopiedPair | None:
    given = [args.tls_cert, args.tls_key, args.tls_dir]
    if not any(given):
        return None
    if not all(given):
        raise UsageError("edge-files: --tls-cert, --tls-key and --tls-dir go together")
    return CopiedPair(args.tls_cert, args.tls_key, args.tls_dir)


RENDER = Command(_add_arguments, _run, errors=(ContractsError, ControlError, deploy.DeployError))
