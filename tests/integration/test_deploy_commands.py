"""The commands that run inside containers, where the mesh has no supervisor: `meshctl
certs --issue` and `render k8s-secrets` making what the containers mount, `events init`
replicating the streams over a NATS cluster of the rendered kind, and the probe port
that answers the orchestrator."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mesh.control import envoy, natsconf
from mesh.control.binaries import find_binary
from mesh.control.pki import MeshPKI
from mesh.control.plan import free_port
from mesh.control.probe import grpc_serving, http_ok
from mesh.control.topology import Topology, load
from mesh.deploy import compose, kube
from tests.support import tiny_catalog
from tests.support.deploy import (
    MESHCTL,
    ROOT,
    by_kind,
    committed_compose_file,
    documents,
    repository_topology,
)
from tests.support.sidecar import started_sidecar
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def topology() -> Topology:
    return repository_topology()


@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    return committed_compose_file()


# -- what the one-shot containers run ----------------------------------------------------


def _meshctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHCTL, *args], cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, **(env or {})}, timeout=120,
    )  # fmt: skip


def test_meshctl_certs_issue_makes_what_the_containers_mount(
    tmp_path: Path, topology: Topology, compose_file: dict[str, Any]
) -> None:
    """What the compose `certs` container runs: `--verify` (its health check) fails until
    `--issue --every` has issued every certificate the containers mount; then it passes,
    and the keeper stops on SIGTERM."""
    verify = _meshctl("certs", "--verify", "--run-dir", str(tmp_path))
    assert verify.returncode == 1
    assert "orders-0: no certificate for orders" in verify.stderr
    keeper = subprocess.Popen(
        [*MESHCTL, "certs", "--issue", "--every", "3600", "--run-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert keeper.stdout is not None
        assert "certificates good" in keeper.stdout.readline()
        assert _meshctl("certs", "--verify", "--run-dir", str(tmp_path)).returncode == 0
    finally:
        keeper.terminate()
        assert keeper.wait(timeout=10) == 0
        if keeper.stdout is not None:
            keeper.stdout.close()
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    issued = {info.instance: info for info in pki.inspect()}
    mounted = set()
    for text in [yaml.safe_dump(compose_file)] + [
        p.read_text() for p in (ROOT / compose.FILES_DIR).rglob("*") if p.is_file()
    ]:
        mounted |= set(re.findall(r"/shop/pki/([\w-]+)/(?:cert|key|ca)\.pem", text))
    assert "orders-0" in mounted
    assert mounted <= set(issued)
    assert issued["orders-0"].spiffe_id == "spiffe://shop.local/ns/shop/sa/orders"
    again = _meshctl("certs", "--issue", "--run-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert {i.instance: i.serial for i in pki.inspect()} == {k: v.serial for k, v in issued.items()}


def test_k8s_secrets_hold_every_identity_the_manifests_mount(tmp_path: Path) -> None:
    result = _meshctl("render", "k8s-secrets", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    secrets = by_kind(documents(result.stdout), "Secret")
    for secret in secrets.values():
        kubernetes_validate.validate(secret, kube.KUBERNETES_VERSION, strict=True)
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    mounted = set(re.findall(r"secretName: ([\w-]+)", "".join(
        p.read_text() for p in (ROOT / kube.BASE).glob("*.yaml")
    )))  # fmt: skip
    assert mounted == set(secrets)
    pki = MeshPKI(tmp_path / "k8s-pki", "shop.local", "shop")
    nats = next(info for info in pki.inspect() if info.instance == "nats")
    assert set(kube.nats_route_names("shop")) <= set(nats.dns_names)
    # The edge's HTTPS certificate names where clients reach the edge, and no workload.
    https = next(info for info in pki.inspect() if info.instance == "edge-https")
    assert {"localhost", "edge.shop.svc.cluster.local"} <= set(https.dns_names)
    assert (https.ip_addresses, https.spiffe_id) == (("127.0.0.1",), None)


# -- a NATS cluster as Kubernetes runs it ------------------------------------------------


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[tuple[MeshPKI, list[int]]]:
    """Three nats-servers with the cluster configuration the StatefulSet gets (routes over
    mutual TLS, names from $POD_NAME), on loopback; stopped by pid."""
    topology = load(ROOT / "mesh.yaml")
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    server = pki.ensure(natsconf.SERVER_IDENTITY, natsconf.SERVER_IDENTITY, dns_names=["localhost"])
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    routes = [f"nats-route://localhost:{cluster}" for _, _, cluster in ports]
    processes = []
    try:
        for index, (client, monitor, cluster) in enumerate(ports):
            config = tmp_path / f"nats-{index}.conf"
            config.write_text(
                natsconf.render_config(
                    topology, pki, port=client, monitor_port=monitor,
                    store_dir=tmp_path / f"store-{index}",
                    cert_path=server.cert_path, key_path=server.key_path,
                    server_name="$POD_NAME",
                    cluster=natsconf.Cluster(port=cluster, routes=routes),
                )
            )  # fmt: skip
            processes.append(
                subprocess.Popen(
                    [find_binary("nats-server"), "--config", str(config)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    env={**os.environ, "POD_NAME": f"nats-{index}"},
                )
            )  # fmt: skip

        def healthy() -> bool:
            assert all(process.poll() is None for process in processes), "a nats-server exited"
            return all(
                http_ok(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true")
                for _, monitor, _ in ports
            )

        wait_until(healthy, "the NATS cluster healthy", 60)
        yield pki, [client for client, _, _ in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_events_init_replicates_the_streams_over_the_tls_cluster(
    nats_cluster: tuple[MeshPKI, list[int]],
) -> None:
    pki, ports = nats_cluster
    admin = natsconf.admin_settings(pki, ports[0])
    result = _meshctl("events", "init", "--replicas", "3", env=admin.environment())
    assert result.returncode == 0, result.stdout + result.stderr

    async def inspect() -> tuple[int, int, int, list[str]]:
        # Through another server than the one events init used.
        client = await natsconf.admin_settings(pki, ports[2]).connect(max_reconnect_attempts=2)
        try:
            js = client.jetstream()
            info = await js.stream_info("SHOP_EVENTS")
            ack = await js.publish("shop.orders.order_placed", b"x")
            consumers = [c.name for c in await js.consumers_info("SHOP_EVENTS")]
            assert info.cluster is not None
            peers = len(info.cluster.replicas or [])
            return info.config.num_replicas or 0, peers, ack.seq, sorted(consumers)
        finally:
            await client.close()

    replicas, peers, sequence, consumers = asyncio.run(inspect())
    assert replicas == 3
    assert peers == 2  # the leader, and a copy on each other server
    assert sequence == 1
    assert consumers == ["inventory", "notifications", "orders", "payments", "search", "shipping"]


# -- the probe port, for real ------------------------------------------------------------


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"shop_probe_test 1\n"
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    """The status and body of a request (0 when nothing listens yet)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


def test_the_probe_port_answers_the_orchestrator_and_nothing_else(tmp_path: Path) -> None:
    """A sidecar with a probe port (as in a pod) in front of a real app: Envoy's readiness,
    the app's gRPC health and both sets of metrics answer; anything else does not."""
    metrics = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    with contextlib.ExitStack() as stack:
        stack.callback(metrics.server_close)
        stack.callback(metrics.shutdown)
        app, address = stack.enter_context(tiny_catalog.served())
        instance, sidecar = started_sidecar(
            stack, tmp_path, address, metrics_port=metrics.server_address[1]
        )
        probe = f"127.0.0.1:{instance.probe_port}"

        def ready() -> bool:
            assert sidecar.poll() is None, "envoy exited"
            return _get(f"http://{probe}{envoy.READY_PATH}")[0] == 200

        wait_until(ready, "the sidecar ready")
        assert grpc_serving(probe)
        assert _get(f"http://{probe}/metrics") == (200, "shop_probe_test 1\n")
        status, stats = _get(f"http://{probe}/stats/prometheus")
        assert status == 200
        assert "envoy_server_live" in stats
        # Nothing else of the admin interface or the app is reachable here.
        assert _get(f"http://{probe}/ready")[0] == 404
        assert _get(f"http://{probe}/config_dump")[0] == 404
        assert _get(f"http://{probe}{envoy.READY_PATH}", "POST")[0] == 404
        assert _get(f"http://{probe}/quitquitquit", "POST")[0] == 404
        # The app stops: the pod is no longer ready, but the sidecar itself still is.
        app.terminate()
        app.wait(timeout=10)
        assert not grpc_serving(probe)
        assert _get(f"http://{probe}{envoy.READY_PATH}")[0] == 200


def test_events_init_with_no_jetstream_says_so_in_one_line_after_its_wait(
    tmp_path: Path, topology: Topology
) -> None:
    """A Job started before NATS answers keeps trying for `--wait` seconds, each try one
    connection, then says why in one line: no traceback, no line per failed try."""
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    admin = natsconf.admin_settings(pki, free_port())  # nothing listens there
    started = time.monotonic()
    result = _meshctl("events", "init", "--wait", "2", env=admin.environment())
    took = time.monotonic() - started
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"meshctl: JetStream at {admin.url} did not take the streams within 2 s")
    assert took < 60, f"--wait 2 took {took:.0f} s"
