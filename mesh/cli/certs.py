"""`meshctl certs [--issue [--every S]] [--rotate] [--verify]`: the mesh's certificates."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from mesh.cli.command import Command, add_config, add_run_dir, root, run_dir
from mesh.control.contracts import ContractsError
from mesh.control.local import ControlError, load_topology
from mesh.control.pki import MeshPKI, format_table
from mesh.deploy import commands as deploy


def certs(root: Path, run_dir: Path, config: Path | None, rotate: bool, issue: bool) -> int:
    """Print the table of certificates, after issuing or rotating them if asked."""
    topology = load_topology(root, config)
    pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
    infos = deploy.issue_certificates(topology, pki) if issue else pki.inspect()
    if not infos:
        raise ControlError(f"no certificates in {run_dir / 'pki'}: `meshctl up` creates them")
    if rotate:
        for info in infos:
            if info.identity != "ca":
                pki.renew(info)
        infos = pki.inspect()
    print(format_table(infos, datetime.now(UTC)))
    return 0


def _add_arguments(command: argparse.ArgumentParser) -> None:
    add_run_dir(command)
    command.add_argument("--rotate", action="store_true", help="re-issue every leaf now")
    command.add_argument(
        "--issue", action="store_true",
        help="first issue what is missing or due: the CA, each instance, edge (and its HTTPS), "
        "nats, meshctl",
    )  # fmt: skip
    command.add_argument(
        "--every", type=float, metavar="SECONDS",
        help="with --issue: keep running, renewing what falls due every SECONDS (containers)",
    )  # fmt: skip
    command.add_argument(
        "--verify", action="store_true",
        help="exit 1, naming them, if certificates the mesh needs are missing or due",
    )  # fmt: skip
    add_config(command)


def _run(args: argparse.Namespace) -> int:
    if not (args.verify or args.every):
        return certs(root(), run_dir(args), args.config, args.rotate, args.issue)
    topology = load_topology(root(), args.config)
    pki = MeshPKI(run_dir(args) / "pki", topology.trust_domain, topology.namespace)
    if args.verify:
        return deploy.verify_certificates(topology, pki)
    return deploy.keep_certificates(topology, pki, args.every)


CERTS = Command(_add_arguments, _run, errors=(ContractsError, ControlError, deploy.DeployError))
