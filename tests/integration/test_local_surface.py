"""What a local mesh leaves open to the other users of its machine: nothing.

No Envoy of the mesh has an admin port. Each one's admin interface (which stops it,
`/quitquitquit`, or fails its health checks, `/healthcheck/fail`) is a unix socket that
only the mesh's owner may connect to, and no TCP port of the mesh takes those commands;
in containers the probe listener serves readiness through that socket and refuses them.
The run directory, whose databases, trace store and logs hold customer and order ids, is
0700, and nothing in it is readable by anyone else: the supervisor's umask is 0077.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import envoy
from mesh.control.plan import MAX_SOCKET_PATH_BYTES, PlanError, make_plan
from mesh.control.probe import grpc_serving
from mesh.control.process import PRIVATE_UMASK, pid_alive
from mesh.control.state import all_pids
from mesh.control.topology import parse
from mesh.deploy import compose, containers
from tests.support import tiny_catalog
from tests.support.mesh import ROOT, RunningMesh
from tests.support.sidecar import started_sidecar
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: The admin commands another user would send to stop an Envoy or take it out of service.
ADMIN_COMMANDS = ("/healthcheck/fail", "/quitquitquit")


@dataclasses.dataclass(frozen=True)
class Envoy:
    name: str
    pid: int
    admin_socket: Path
    listeners: set[int]
    """The TCP ports the state says this Envoy listens on."""


def _port(address: str) -> int:
    """The port of `http://host:port` or `host:port`."""
    port = urllib.parse.urlsplit(address if "//" in address else f"//{address}").port
    assert port is not None, address
    return port


def envoys(state: dict[str, Any]) -> list[Envoy]:
    """Every Envoy of the mesh: each instance's sidecar, and the edge."""
    found = [
        Envoy(
            i["instance"],
            i["sidecar_pid"],
            Path(i["admin_socket"]),
            {i["inbound_port"], *i["outbound"].values()},
        )
        for i in state["instances"]
    ]
    edge = state["edge"]
    ports = {_port(edge[url]) for url in ("url", "http_url", "https_url") if edge.get(url)}
    if edge.get("deny_list_port"):
        ports.add(edge["deny_list_port"])
    found.append(Envoy("edge", edge["pid"], Path(edge["admin_socket"]), ports))
    return found


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports the process `pid` listens on (its sockets in /proc/PID/net/tcp*)."""
    inodes = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def post(port: int, path: str) -> int | None:
    """POST `path` to 127.0.0.1:`port` as plain HTTP/1.1: the status, or None when what
    listens there answers no HTTP (TLS, gRPC only)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST", path, body=b"")
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


# -- the Envoys' admin interfaces ---------------------------------------------------------


def test_no_envoy_of_the_mesh_has_an_admin_port_only_an_owner_only_socket(
    mesh: RunningMesh,
) -> None:
    state = mesh.state()
    found = envoys(state)
    assert len(found) == len(state["instances"]) + 1
    for part in [*state["instances"], state["edge"]]:
        assert not [key for key in part if "admin_port" in key], part
    for one in found:
        info = one.admin_socket.lstat()
        assert stat.S_ISSOCK(info.st_mode), one
        assert stat.S_IMODE(info.st_mode) == 0o600, (one, oct(info.st_mode))
        assert info.st_uid == os.getuid()
        assert mode(one.admin_socket.parent) == 0o700
        assert one.admin_socket.is_relative_to(mesh.run_dir)
        assert len(os.fsencode(one.admin_socket)) <= MAX_SOCKET_PATH_BYTES
        # It is the admin interface: it answers, through the socket only.
        assert envoy.admin_ready(one.admin_socket), one
        # And the Envoy listens on TCP where the state says, and nowhere else.
        assert listening_tcp_ports(one.pid) == one.listeners, one
    table = mesh.meshctl("status").stdout
    assert f"{mesh.run_dir}/envoy/INSTANCE.sock" in table
    assert "ADMIN_PORT" not in table


def test_no_tcp_port_of_the_mesh_takes_an_admin_command(mesh: RunningMesh) -> None:
    """Every port the state lists, and every port an Envoy listens on, gets POST
    /healthcheck/fail and /quitquitquit: every Envoy keeps running, ready, and every
    instance SERVING, without a restart."""
    before = mesh.state()
    ports = {port for one in envoys(before) for port in one.listeners}
    for instance in before["instances"]:
        ports |= {instance["app_port"], instance["inbound_port"], instance["metrics_port"]}
    ports |= {
        _port(before["nats"]["url"]),
        _port(before["traces"]["endpoint"]),
    }
    answers = {(port, path): post(port, path) for port in sorted(ports) for path in ADMIN_COMMANDS}
    assert not [found for found, status in answers.items() if status == 200], answers
    time.sleep(1)  # a /quitquitquit would have stopped an Envoy by now
    for one in envoys(before):
        assert pid_alive(one.pid), f"{one.name} stopped"
        assert envoy.admin_ready(one.admin_socket), f"{one.name} failed its health checks"
        assert envoy.admin_stats(one.admin_socket, r"^server\.live$")["server.live"] == 1
    health: dict[str, str] = {}

    def every_instance_serving() -> dict[str, Any] | None:
        state = mesh.state()
        health.update({i["instance"]: i["health"] for i in state["instances"]})
        return state if set(health.values()) == {"SERVING"} else None

    after = wait_until(every_instance_serving, lambda: f"every instance SERVING: {health}", 10, 0.5)
    assert [(i["sidecar_pid"], i["restarts"]) for i in after["instances"]] == [
        (i["sidecar_pid"], i["restarts"]) for i in before["instances"]
    ]
    assert after["edge"]["pid"] == before["edge"]["pid"]


def test_nats_listens_on_its_tls_client_port_only(mesh: RunningMesh) -> None:
    """No HTTP monitor (it takes no credentials): the supervisor asks JetStream itself,
    over TLS as the mesh's administrator."""
    nats = mesh.state()["nats"]
    assert listening_tcp_ports(nats["pid"]) == {_port(nats["url"])}
    assert "monitor" not in nats


def test_the_probe_listener_serves_readiness_through_the_socket_and_no_admin_command(
    tmp_path: Path,
) -> None:
    """A sidecar as in a container (with its probe listener) in front of a real app: the
    orchestrator's readiness and Compose's health check answer, an admin command there
    is 404 and changes nothing; the admin itself is the socket."""
    with contextlib.ExitStack() as stack:
        app, address = stack.enter_context(tiny_catalog.served())
        instance, sidecar = started_sidecar(stack, tmp_path, address)
        probe = f"127.0.0.1:{instance.probe_port}"

        def ready() -> int | None:
            connection = http.client.HTTPConnection("127.0.0.1", instance.probe_port, timeout=5)
            try:
                connection.request("GET", envoy.READY_PATH)
                return connection.getresponse().status
            except (OSError, http.client.HTTPException):
                return None
            finally:
                connection.close()

        def sidecar_ready() -> bool:
            assert sidecar.poll() is None, "envoy exited"
            return ready() == 200

        wait_until(sidecar_ready, "the sidecar ready")
        socket_path = Path(instance.admin_socket)
        assert stat.S_ISSOCK(socket_path.lstat().st_mode)
        assert mode(socket_path) == 0o600
        assert listening_tcp_ports(sidecar.pid) == {instance.inbound_port, instance.probe_port}
        # Compose's health check of an Envoy container, as rendered, on this probe port.
        rendered = yaml.safe_load((ROOT / compose.COMPOSE_FILE).read_text())
        check = rendered["services"]["catalog-0"]["healthcheck"]["test"]
        assert check[:2] == ["CMD", "bash"]
        local = [
            part.replace(
                f"/dev/tcp/127.0.0.1/{containers.PROBE_PORT}",
                f"/dev/tcp/127.0.0.1/{instance.probe_port}",
            )
            for part in check[1:]
        ]
        assert local != check[1:]
        assert subprocess.run(local, timeout=10, check=False).returncode == 0
        for path in ADMIN_COMMANDS:
            assert post(instance.probe_port, path) == 404
        time.sleep(0.5)  # a /quitquitquit that got through would have stopped Envoy by now
        assert sidecar.poll() is None, "a POST on the probe port stopped Envoy"
        assert ready() == 200
        assert grpc_serving(probe)
        # Through the socket (we own it) the admin does take commands, and readiness,
        # on the probe port and in Compose's check, follows it.
        assert envoy.admin_request(socket_path, "/healthcheck/fail", "POST")[0] == 200
        assert ready() == 503
        assert subprocess.run(local, timeout=10, check=False).returncode != 0
        assert envoy.admin_request(socket_path, "/healthcheck/ok", "POST")[0] == 200
        assert ready() == 200
        app.terminate()
        app.wait(timeout=10)


# -- paths and files ----------------------------------------------------------------------


def test_a_run_dir_too_deep_for_the_admin_sockets_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH_BYTES - len(str(tmp_path))))
    with pytest.raises(PlanError, match="unix socket's path may be at most 107"):
        make_plan(parse("services:\n  catalog: {}\n"), deep)
    result = subprocess.run(
        [sys.executable, "-m", "mesh.cli", "up", "--detach", "--run-dir", str(deep)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1
    assert ".sock would be" in result.stderr
    assert "use a run directory with a path" in result.stderr
    assert not deep.exists()


def test_the_run_dir_and_everything_in_it_are_their_owners_only(mesh: RunningMesh) -> None:
    state = mesh.state()
    run_dir = mesh.run_dir
    assert mode(run_dir) == 0o700
    for pid in all_pids(state):
        assert umask_of(pid) == PRIVATE_UMASK, pid
    open_to_others, certificates = [], []
    for path in [run_dir, *run_dir.rglob("*")]:
        try:
            info = path.lstat()
        except FileNotFoundError:  # a temporary file, gone since
            continue
        assert info.st_uid == os.getuid(), path
        if stat.S_ISLNK(info.st_mode) or not stat.S_IMODE(info.st_mode) & 0o077:
            continue
        # Certificates are public (pki gives them 0644), in 0700 directories.
        if path.name in ("cert.pem", "ca.pem") and path.parent.parent == run_dir / "pki":
            certificates.append(path)
            assert mode(path.parent) == 0o700
            continue
        open_to_others.append(f"{path.relative_to(run_dir)}: {oct(info.st_mode)}")
    assert open_to_others == []
    assert certificates
    private = [
        Path(state["traces"]["db"]),
        run_dir / "supervisor.log",
        run_dir / "state.json",
        *sorted((run_dir / "logs").glob("*.log")),
        *sorted(run_dir.glob("*/*.db")),
    ]
    for instance in state["instances"]:
        assert run_dir / "logs" / f"{instance['instance']}.log" in private
        assert run_dir / "logs" / f"{instance['instance']}.envoy.log" in private
    assert mesh.database("orders") in private
    for path in private:
        assert path.is_file(), path
        assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"


def test_an_earlier_run_dir_is_made_private_too(tmp_path: Path) -> None:
    """What a mesh from before the umask left (0755, 0644) loses group and other access."""
    run_dir = tmp_path / "run"
    (run_dir / "traces").mkdir(parents=True)
    (run_dir / "traces").chmod(0o755)
    run_dir.chmod(0o755)
    old = run_dir / "traces" / "traces.db"
    old.write_text("spans")
    old.chmod(0o644)
    program = (
        "import sys, pathlib; from mesh.control.process import make_private; "
        "make_private(pathlib.Path(sys.argv[1])); "
        "open(pathlib.Path(sys.argv[1]) / 'new.log', 'w').close()"
    )
    subprocess.run([sys.executable, "-c", program, str(run_dir)], check=True, timeout=30)
    assert mode(run_dir) == 0o700
    assert mode(run_dir / "traces") == 0o700
    assert mode(old) == 0o600
    assert mode(run_dir / "new.log") == 0o600
