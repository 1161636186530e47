"""What `meshctl up` checks before it starts anything: every problem it can see cheaply,
all at once, one line each.

Without it, an edge port another process holds is found when the edge's Envoy fails to
bind, after NATS, the trace store and every service have started; a method mesh.yaml
names that the contracts lack, when a renderer meets it halfway through the start. The
preflight looks first: the run directory can be made and written and its sockets' paths
fit (`mesh.control.plan`); the binaries are installed; mesh.yaml fits the contracts
(`mesh.control.conformance`); the user's own certificate for the edge's HTTPS, if
mesh.yaml names one, can be read and matches its key (`mesh.control.edge_tls`); and
every port the plan listens on is free on loopback, one that is not named with what
wanted it and the line of mesh.yaml that fixed it.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
from pathlib import Path

from mesh.control import conformance, edge_tls
from mesh.control.api import Api
from mesh.control.binaries import BinaryNotFoundError, find_binary
from mesh.control.plan import MeshPlan, PlanError, make_plan
from mesh.control.topology import Topology

#: The binaries a local mesh runs besides Python.
BINARIES = ("envoy", "nats-server")


def problems(
    topology: Topology,
    descriptor_set: Path,
    run_dir: Path,
    edge_port: int | None = None,
    https_port: int | None = None,
) -> list[str]:
    """Everything that would stop a local mesh of `topology` in `run_dir`, one line each;
    nothing is created or started (a port is only tried, and let go at once)."""
    found = [
        *run_dir_problems(run_dir),
        *binary_problems(),
        *contract_problems(topology, descriptor_set),
        *module_problems(topology),
        *edge_tls.problems(topology),
    ]
    try:
        plan = make_plan(topology, run_dir, edge_port=edge_port, https_port=https_port)
    except PlanError as error:
        return [*found, str(error)]
    return [*found, *port_problems(plan, topology)]


def run_dir_problems(run_dir: Path) -> list[str]:
    """Whether `run_dir` is, or can be made, a directory we may write in."""
    existing = next(p for p in (run_dir, *run_dir.parents) if os.path.exists(p))
    if not existing.is_dir():
        return [f"the run directory {run_dir} cannot be made: {existing} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [
            f"the run directory {run_dir} cannot be written: {existing} is not writable "
            "by this user; choose another with --run-dir"
        ]
    return []


def binary_problems() -> list[str]:
    found = []
    for name in BINARIES:
        try:
            find_binary(name)
        except BinaryNotFoundError as error:
            found.append(str(error))
    return found


def contract_problems(topology: Topology, descriptor_set: Path) -> list[str]:
    if not descriptor_set.is_file():
        return [f"{descriptor_set} is missing: run `make gen` first"]
    api = Api.from_descriptor_set(descriptor_set)
    return [str(error) for error in conformance.problems(topology, api)]


def module_problems(topology: Topology) -> list[str]:
    """Each version's `module:` that no installed package or checkout module provides."""
    return [
        f"{topology.source or 'mesh.yaml'}: services.{name}.versions.{version.name}.module: "
        f"no module {version.module!r} to run"
        for name, service in topology.services.items()
        for version in service.versions
        if version.module is not None and not _importable(version.module)
    ]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that does not exist
        return False


def port_problems(plan: MeshPlan, topology: Topology) -> list[str]:
    """Each port of the plan that two of its listeners want, or that is not free now."""
    wanted: dict[int, list[str]] = {}
    for port, owner in plan.listeners():
        wanted.setdefault(port, []).append(owner)
    found = []
    for port, owners in wanted.items():
        line = topology.port_lines.get(port)
        where = "" if line is None else f"{topology.source or 'mesh.yaml'}:{line}: "
        if len(owners) > 1:
            found.append(f"{where}port {port} is wanted by both {' and '.join(owners)}")
        elif (reason := unavailable(plan.listen_host, port)) is not None:
            found.append(f"{where}port {port} on {plan.listen_host}, for {owners[0]}, {reason}")
    return found


def unavailable(host: str, port: int) -> str | None:
    """Why a server could not listen on `host:port` now; None if it could."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Envoy and NATS do, so that connections of an earlier run still in TIME_WAIT
        # do not count as taking the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OverflowError:
            return "is not a port (0 to 65535)"
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "is taken by another process"
            return f"cannot be listened on: {error.strerror}"
    return None
