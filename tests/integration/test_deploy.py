"""The deploy files: docker-compose.yml, deploy/compose/ and deploy/k8s/, rendered from
mesh.yaml, checked as far as a machine without a Docker engine or a cluster can check
them: current, valid against the Compose and Kubernetes schemas, every Envoy and NATS
configuration accepted by the real binaries (`envoy --mode validate`, `nats-server -t`),
the wiring between containers consistent, a NATS cluster of the rendered kind forming
for real, and a change of `replicas` or `calls` reaching the local mesh, Compose and
Kubernetes alike."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import os
import re
import shutil
import subprocess
import sys
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

from mesh.control import contracts, envoy, natsconf
from mesh.control.api import Api
from mesh.control.binaries import find_binary
from mesh.control.pki import MeshPKI
from mesh.control.plan import free_port, make_plan
from mesh.control.probe import grpc_serving, http_ok
from mesh.control.topology import Topology, load, parse
from mesh.deploy import compose, containers, kube
from mesh.deploy.commands import rendered
from tests.support import tiny_catalog
from tests.support.sidecar import started_sidecar

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MESHCTL = [sys.executable, "-m", "mesh.cli"]
#: Absolute paths the containers see; a test maps them into its own directory.
_CONTAINER_PATHS = ("/etc/envoy", "/etc/shop/identity", "/shop/pki", "/shop/edge", "/shop/nats")
#: Kinds from CRDs, which the Kubernetes schemas do not know (checked field by field here).
_CRD_KINDS = {("cert-manager.io/v1", "Certificate")}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load(ROOT / "mesh.yaml")


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(ROOT / contracts.DESCRIPTOR_SET)


@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / compose.COMPOSE_FILE).read_text())
    return document


def _documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def _objects(directory: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k` would apply: the built overlay (or base)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here, so kustomize cannot build the overlays")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return _documents(result.stdout)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


# -- current and valid -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_the_committed_files_are_the_rendered_ones(topology: Topology, target: str) -> None:
    stale = rendered(ROOT, topology, target).stale(ROOT)
    assert stale == [], f"run `meshctl render {target}`"


def test_render_check_reports_a_stale_file(tmp_path: Path, topology: Topology) -> None:
    files = rendered(ROOT, topology, "compose")
    files.write(tmp_path)
    assert files.stale(tmp_path) == []
    envoy_file = tmp_path / compose.FILES_DIR / "orders-0" / containers.ENVOY_BOOTSTRAP
    envoy_file.write_text(envoy_file.read_text() + "# edited\n")
    leftover = tmp_path / compose.FILES_DIR / "orders-7" / "envoy.yaml"
    leftover.parent.mkdir()
    leftover.write_text("{}")
    assert files.stale(tmp_path) == [
        envoy_file.relative_to(tmp_path),
        leftover.relative_to(tmp_path),
    ]
    files.write(tmp_path)
    assert files.stale(tmp_path) == []


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema", "vendor.compose-spec",
            str(ROOT / compose.COMPOSE_FILE),
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_builds_and_every_object_validates(overlay: str) -> None:
    objects = _objects(ROOT / kube.K8S_DIR / "overlays" / overlay)
    unknown = []
    for item in objects:
        if (item["apiVersion"], item["kind"]) in _CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(item, kube.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(f"{item['apiVersion']} {item['kind']}")
    assert unknown == []
    namespaces = {
        item["metadata"].get("namespace") for item in objects if item["kind"] != "Namespace"
    }
    assert namespaces == {"shop"}


def _map_paths(text: str, root: Path) -> str:
    for path in _CONTAINER_PATHS:
        text = text.replace(path, f"{root}{path}")
    return text


def _validate_envoy(directory: Path, files: dict[str, str], root: Path) -> tuple[str, int, str]:
    """Write an Envoy container's files with its paths under `root`; `envoy --mode validate`."""
    config_dir = Path(f"{root}/etc/envoy")
    if config_dir.exists():
        shutil.rmtree(config_dir)
    config_dir.mkdir(parents=True)
    for name, text in files.items():
        (config_dir / name).write_text(_map_paths(text, root))
    result = subprocess.run(
        [find_binary("envoy"), "--mode", "validate", "--log-level", "critical",
         "--config-path", str(config_dir / containers.ENVOY_BOOTSTRAP)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return str(directory), result.returncode, result.stdout + result.stderr


def _container_root(tmp_path: Path, name: str, topology: Topology) -> Path:
    """A directory laid out like a container: certificates, the edge's files."""
    root = tmp_path / name
    pki = MeshPKI(Path(f"{root}/shop/pki"), topology.trust_domain, topology.namespace)
    identity_dir = Path(f"{root}/etc/shop/identity")
    identity_dir.mkdir(parents=True)
    info = pki.ensure("orders", name)
    for source, target in (
        (info.cert_path, "tls.crt"), (info.key_path, "tls.key"), (pki.ca_path, "ca.crt")
    ):  # fmt: skip
        shutil.copyfile(source, identity_dir / target)
    for instance in os.listdir(ROOT / compose.FILES_DIR):
        pki.ensure("orders", instance)
    subprocess.run(
        [*MESHCTL, "render", "edge-files", f"{root}/shop/edge"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    return root


def test_every_envoy_configuration_passes_envoy_validation(
    tmp_path: Path, topology: Topology
) -> None:
    """Each bootstrap the containers run, as committed, with its files where it looks."""
    jobs: list[tuple[Path, dict[str, str]]] = []
    for directory in sorted((ROOT / compose.FILES_DIR).iterdir()):
        if (directory / containers.ENVOY_BOOTSTRAP).is_file():
            jobs.append((directory, {p.name: p.read_text() for p in directory.iterdir()}))
    for path in sorted((ROOT / kube.BASE).glob("*.yaml")):
        for item in _documents(path.read_text()):
            if item["kind"] == "ConfigMap" and containers.ENVOY_BOOTSTRAP in item["data"]:
                jobs.append((path / item["metadata"]["name"], item["data"]))
    services = len(topology.services)
    assert len(jobs) == 2 * (services + 1)  # each service and the edge, Compose and Kubernetes
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda job: _validate_envoy(
                    job[0], job[1], _container_root(tmp_path, f"c{jobs.index(job)}", topology)
                ),
                jobs,
            )
        )
    failures = [f"{name}: {output}" for name, code, output in results if code != 0]
    assert failures == []


def test_every_nats_configuration_passes_nats_validation(
    tmp_path: Path, topology: Topology
) -> None:
    k8s = _by_kind(_documents((ROOT / kube.BASE / "nats.yaml").read_text()), "ConfigMap")
    configs = {
        "compose": (ROOT / compose.FILES_DIR / "nats" / containers.NATS_CONFIG).read_text(),
        "k8s": k8s["nats-config"]["data"][containers.NATS_CONFIG],
    }
    root = _container_root(tmp_path, "nats", topology)
    for name, text in configs.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(_map_paths(text, root))
        result = subprocess.run(
            [find_binary("nats-server"), "-t", "-c", str(path)],
            capture_output=True, text=True, check=False,
            env={**os.environ, "POD_NAME": "nats-0"},
        )  # fmt: skip
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


# -- the wiring --------------------------------------------------------------------------


def _one_shot(service: dict[str, Any]) -> bool:
    return bool(service.get("restart") == "no")


def test_compose_containers_start_in_order_and_are_checked(compose_file: dict[str, Any]) -> None:
    services: dict[str, dict[str, Any]] = compose_file["services"]
    for name, service in services.items():
        assert _one_shot(service) or "healthcheck" in service, f"{name} has no health check"
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = (
                "service_completed_successfully" if _one_shot(services[target])
                else "service_healthy" if "network_mode" not in service
                or service["network_mode"] != f"service:{target}"
                or name.endswith("-app")
                else "service_started"
            )  # fmt: skip
            assert condition["condition"] == expected, f"{name} -> {target}"
    # An order compose can follow: no cycle.
    done: set[str] = set()
    while len(done) < len(services):
        ready = {
            n for n, s in services.items() if n not in done and set(s.get("depends_on", {})) <= done
        }
        assert ready, f"a depends_on cycle among {sorted(set(services) - done)}"
        done |= ready


def test_compose_publishes_only_the_edge_and_the_trace_ui(compose_file: dict[str, Any]) -> None:
    services: dict[str, dict[str, Any]] = compose_file["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {
        "edge": ["${EDGE_PUBLISH}:8080"],
        compose.JAEGER_HOST: ["${JAEGER_UI_PUBLISH}:16686"],
    }
    env = dict(
        line.split("=", 1)
        for line in (ROOT / compose.ENV_FILE).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["EDGE_PUBLISH"].startswith("127.0.0.1:")
    assert env["JAEGER_UI_PUBLISH"].startswith("127.0.0.1:")
    for name, service in services.items():
        variable = re.fullmatch(r"\$\{(\w+)\}", service["image"])
        assert variable, f"{name}'s image is not a variable of .env"
        assert variable.group(1) in env, f"{name}'s image is not pinned in .env"
        if "network_mode" in service:
            owner = service["network_mode"].removeprefix("service:")
            assert owner in services
            assert "ports" not in service
            assert "hostname" not in service
    assert env["ENVOY_IMAGE"].startswith("envoyproxy/envoy:v1.40.")


def test_compose_mounts_exist_and_volumes_are_declared(compose_file: dict[str, Any]) -> None:
    declared = set(compose_file["volumes"])
    for name, service in compose_file["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def _listeners(config: dict[str, Any]) -> dict[str, int]:
    return {
        listener["name"]: listener["address"]["socket_address"]["port_value"]
        for listener in config["static_resources"]["listeners"]
    }


def _cluster_hosts(config: dict[str, Any], cluster: str) -> list[tuple[str, int]]:
    for entry in config["static_resources"]["clusters"]:
        if entry["name"] == cluster:
            return [
                (
                    endpoint["endpoint"]["address"]["socket_address"]["address"],
                    endpoint["endpoint"]["address"]["socket_address"]["port_value"],
                )
                for group in entry["load_assignment"]["endpoints"]
                for endpoint in group["lb_endpoints"]
            ]
    raise KeyError(cluster)


def test_each_compose_app_reaches_its_dependencies_through_its_sidecar(
    compose_file: dict[str, Any], topology: Topology
) -> None:
    services = compose_file["services"]
    for name, service in topology.services.items():
        for index in range(service.replicas):
            instance = f"{name}-{index}"
            config = yaml.safe_load(
                (ROOT / compose.FILES_DIR / instance / containers.ENVOY_BOOTSTRAP).read_text()
            )
            listeners = _listeners(config)
            environment = services[f"{instance}-app"]["environment"]
            assert services[f"{instance}-app"]["network_mode"] == f"service:{instance}"
            assert environment["SHOP_INSTANCE"] == instance
            for dependency in service.calls:
                port = listeners[f"outbound-{dependency}"]
                assert environment[f"SHOP_{dependency.upper()}_ADDRESS"] == f"127.0.0.1:{port}"
                peers = topology.services[dependency].replicas
                assert _cluster_hosts(config, dependency) == [
                    (f"{dependency}-{i}", containers.INBOUND_PORT) for i in range(peers)
                ]
            assert _cluster_hosts(config, "local_app") == [("127.0.0.1", containers.APP_PORT)]
            assert listeners["inbound"] == containers.INBOUND_PORT


def test_kubernetes_pods_are_probed_limited_and_budgeted() -> None:
    objects = _objects(ROOT / kube.K8S_DIR / "overlays" / "prod")
    deployments = _by_kind(objects, "Deployment")
    budgets = _by_kind(objects, "PodDisruptionBudget")
    certificates = _by_kind(objects, "Certificate")
    for name, deployment in deployments.items():
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        # Jaeger keeps traces in memory, in one replica: nothing to budget.
        assert name in budgets or component == "tracing", f"{name} has no PodDisruptionBudget"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"] + pod.get("initContainers", []):
            resources = container.get("resources", {})
            assert resources.get("requests"), container["name"]
            assert resources.get("limits"), container["name"]
            if container.get("restartPolicy") == "Always" or container in pod["containers"]:
                assert "readinessProbe" in container, container["name"]
                assert "livenessProbe" in container, container["name"]
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in certificates
    for name in ("catalog", "orders", "payments"):
        app = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        variables = {entry["name"]: entry for entry in app["env"]}
        secret = variables[f"SHOP_{name.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": f"{name}-database", "key": "url"}
        assert f"{name}-postgres" in _by_kind(objects, "StatefulSet")
    nats = _by_kind(objects, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == kube.NATS_REPLICAS
    route_names = certificates["nats-identity"]["spec"]["dnsNames"]
    assert set(kube.nats_route_names("shop")) <= set(route_names)
    for certificate in certificates.values():
        spec = certificate["spec"]
        identity = certificate["metadata"]["name"].removesuffix("-identity")
        assert spec["uris"] == [f"spiffe://shop.local/ns/shop/sa/{identity}"]
        assert spec["secretName"] == certificate["metadata"]["name"]
        assert spec["issuerRef"]["name"] == "shop-mesh-ca"
        assert "client auth" in spec["usages"]


# -- one change, three ways --------------------------------------------------------------


def _changed_topology() -> Topology:
    """mesh.yaml with three orders replicas and notifications newly calling orders."""
    text = (ROOT / "mesh.yaml").read_text()
    text = text.replace("  orders:\n    replicas: 1\n", "  orders:\n    replicas: 3\n", 1)
    text = text.replace(
        "  notifications:\n    replicas: 1\n",
        "  notifications:\n    replicas: 1\n"
        "    calls:\n      orders: {methods: all, timeout: 3s}\n",
        1,
    )
    return parse(text)


def test_replicas_and_calls_change_the_local_mesh_compose_and_kubernetes(
    tmp_path: Path, api: Api
) -> None:
    topology = _changed_topology()
    assert topology.services["orders"].replicas == 3
    assert "orders" in topology.services["notifications"].calls
    # The local mesh: three orders instances, notifications' sidecar balancing over them.
    plan = make_plan(topology, tmp_path)
    assert [i.name for i in plan.of("orders")] == ["orders-0", "orders-1", "orders-2"]
    notifications = plan.of("notifications")[0]
    sds = envoy.SdsFiles(tmp_path, tmp_path, tmp_path, tmp_path)
    local = envoy.sidecar_config(topology, plan, notifications, api, sds)
    assert _cluster_hosts(local, "orders") == [
        ("127.0.0.1", i.inbound_port) for i in plan.of("orders")
    ]
    # Compose: three orders containers, the same cluster by their names, RBAC admits the caller.
    files = compose.render(topology, api).files
    document = yaml.safe_load(files[Path(compose.COMPOSE_FILE)])
    services = document["services"]
    assert {f"orders-{i}" for i in range(3)} | {f"orders-{i}-app" for i in range(3)} <= set(
        services
    )
    caller = yaml.safe_load(files[compose.FILES_DIR / "notifications-0" / "envoy.yaml"])
    assert _cluster_hosts(caller, "orders") == [(f"orders-{i}", 15006) for i in range(3)]
    route_timeouts = {
        route["route"]["timeout"]
        for listener in caller["static_resources"]["listeners"]
        if listener["name"] == "outbound-orders"
        for route in listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
            "virtual_hosts"
        ][0]["routes"]
    }
    assert route_timeouts == {"3.000s"}
    app = services["notifications-0-app"]
    assert app["environment"]["SHOP_ORDERS_ADDRESS"] == "127.0.0.1:15101"
    assert {f"orders-{i}-app" for i in range(3)} <= set(app["depends_on"])
    spiffe = "spiffe://shop.local/ns/shop/sa/notifications"
    for i in range(3):
        assert spiffe in files[compose.FILES_DIR / f"orders-{i}" / "envoy.yaml"]
    assert spiffe not in (ROOT / compose.FILES_DIR / "orders-0" / "envoy.yaml").read_text()
    # Kubernetes: the Deployment's replicas, the caller's cluster on the headless Service.
    manifests = kube.render(topology, api).files
    orders = _by_kind(_documents(manifests[kube.BASE / "orders.yaml"]), "Deployment")["orders"]
    assert orders["spec"]["replicas"] == 3
    config_maps = _by_kind(_documents(manifests[kube.BASE / "notifications.yaml"]), "ConfigMap")
    k8s_caller = yaml.safe_load(config_maps["notifications-envoy"]["data"]["envoy.yaml"])
    assert _cluster_hosts(k8s_caller, "orders") == [("orders.shop.svc.cluster.local", 15006)]
    assert (
        next(c for c in k8s_caller["static_resources"]["clusters"] if c["name"] == "orders")["type"]
        == "STRICT_DNS"
    )
    assert spiffe in manifests[kube.BASE / "orders.yaml"]


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
    secrets = _by_kind(_documents(result.stdout), "Secret")
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
        deadline = time.monotonic() + 60
        for process, (_, monitor, _) in zip(processes, ports, strict=True):
            while not http_ok(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"):
                assert process.poll() is None, "a nats-server exited"
                assert time.monotonic() < deadline, "the NATS cluster did not become healthy"
                time.sleep(0.1)
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
    assert consumers == ["inventory", "notifications", "orders", "payments", "shipping"]


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
        deadline = time.monotonic() + 30
        while _get(f"http://{probe}{envoy.READY_PATH}")[0] != 200:
            assert sidecar.poll() is None, "envoy exited"
            assert time.monotonic() < deadline, "the sidecar never became ready"
            time.sleep(0.1)
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
