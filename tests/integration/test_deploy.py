"""The deploy files: docker-compose.yml, envoy/, deploy/compose/ and deploy/k8s/, rendered from
mesh.yaml, checked as far as a machine without a Docker engine or a cluster can check
them: current, valid against the Compose and Kubernetes schemas, every Envoy and NATS
configuration accepted by the real binaries (`envoy --mode validate`, `nats-server -t`),
the wiring between containers consistent, a NATS cluster of the rendered kind forming
for real, and a change of `replicas` or `calls` reaching the local mesh, Compose and
Kubernetes alike."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.control import contracts, envoy
from mesh.control.api import Api
from mesh.control.binaries import find_binary
from mesh.control.plan import make_plan
from mesh.control.topology import Topology, parse
from mesh.deploy import compose, containers, kube
from mesh.deploy.commands import rendered
from tests.support.deploy import (
    ROOT,
    by_kind,
    cluster_hosts,
    committed_compose_file,
    compose_spec_check,
    container_root,
    documents,
    envoy_refusal,
    kustomized,
    map_paths,
    repository_topology,
    unknown_to_schemas,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def topology() -> Topology:
    return repository_topology()


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(ROOT / contracts.DESCRIPTOR_SET)


@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    return committed_compose_file()


# -- current and valid -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["compose", "k8s", "envoy"])
def test_the_committed_files_are_the_rendered_ones(topology: Topology, target: str) -> None:
    stale = rendered(ROOT, topology, target).stale(ROOT)
    assert stale == [], f"run `meshctl render {target}`"


@pytest.mark.parametrize(
    ("target", "edited", "leftover"),
    [
        ("compose", compose.FILES_DIR / "orders-0" / "sds-identity.yaml",
         compose.FILES_DIR / "orders-7" / "sds-identity.yaml"),
        ("envoy", compose.bootstrap_path("orders-0"), compose.bootstrap_path("orders-7")),
    ],
)  # fmt: skip
def test_render_check_reports_a_stale_file(
    tmp_path: Path, topology: Topology, target: str, edited: Path, leftover: Path
) -> None:
    files = rendered(ROOT, topology, target)
    files.write(tmp_path)
    # envoy/ also holds its README, which is no rendering's.
    readme = tmp_path / compose.ENVOY_DIR / "README.md"
    readme.parent.mkdir(exist_ok=True)
    readme.write_text("# Envoy\n")
    assert files.stale(tmp_path) == []
    edited_file = tmp_path / edited
    edited_file.write_text(edited_file.read_text() + "# edited\n")
    leftover_file = tmp_path / leftover
    leftover_file.parent.mkdir(exist_ok=True)
    leftover_file.write_text("{}")
    assert files.stale(tmp_path) == [edited, leftover]
    files.write(tmp_path)
    assert files.stale(tmp_path) == []
    assert readme.is_file()


def test_the_compose_file_follows_the_compose_specification() -> None:
    result = compose_spec_check(ROOT / compose.COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_each_overlay_builds_and_every_object_validates(overlay: str) -> None:
    objects = kustomized(ROOT / kube.K8S_DIR / "overlays" / overlay)
    assert unknown_to_schemas(objects) == []
    namespaces = {
        item["metadata"].get("namespace") for item in objects if item["kind"] != "Namespace"
    }
    assert namespaces == {"shop"}


def _committed_root(tmp_path: Path, name: str, topology: Topology) -> Path:
    """A container's directory, with a certificate for each committed Compose instance."""
    return container_root(tmp_path, name, topology, os.listdir(ROOT / compose.FILES_DIR))


def test_every_envoy_configuration_passes_envoy_validation(
    tmp_path: Path, topology: Topology
) -> None:
    """Each bootstrap the containers run, as committed, with its files where it looks; no
    deprecated field in any."""
    jobs: list[tuple[Path, dict[str, str]]] = []
    for bootstrap in sorted((ROOT / compose.ENVOY_DIR).glob("*.yaml")):
        sds = ROOT / compose.FILES_DIR / bootstrap.stem
        files = {p.name: p.read_text() for p in sds.iterdir()}
        jobs.append((bootstrap, {containers.ENVOY_BOOTSTRAP: bootstrap.read_text(), **files}))
    for path in sorted((ROOT / kube.BASE).glob("*.yaml")):
        for item in documents(path.read_text()):
            if item["kind"] == "ConfigMap" and containers.ENVOY_BOOTSTRAP in item["data"]:
                jobs.append((path / item["metadata"]["name"], item["data"]))
    services = len(topology.services)
    assert len(jobs) == 2 * (services + 1)  # each service and the edge, Compose and Kubernetes
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda job: envoy_refusal(
                    str(job[0]), job[1], _committed_root(tmp_path, f"c{jobs.index(job)}", topology)
                ),
                jobs,
            )
        )
    failures = [f"{name}: {refusal}" for name, refusal in results if refusal]
    assert failures == []


def test_every_nats_configuration_passes_nats_validation(
    tmp_path: Path, topology: Topology
) -> None:
    k8s = by_kind(documents((ROOT / kube.BASE / "nats.yaml").read_text()), "ConfigMap")
    configs = {
        "compose": (ROOT / compose.FILES_DIR / "nats" / containers.NATS_CONFIG).read_text(),
        "k8s": k8s["nats-config"]["data"][containers.NATS_CONFIG],
    }
    root = _committed_root(tmp_path, "nats", topology)
    for name, text in configs.items():
        path = tmp_path / f"{name}.conf"
        path.write_text(map_paths(text, root))
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


def test_compose_publishes_the_edge_and_the_operators_uis(compose_file: dict[str, Any]) -> None:
    services: dict[str, dict[str, Any]] = compose_file["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    assert published == {
        "edge": ["${EDGE_PUBLISH}:8080", "${EDGE_HTTPS_PUBLISH}:8443"],
        compose.JAEGER_HOST: ["${JAEGER_UI_PUBLISH}:16686"],
        compose.PROMETHEUS_HOST: ["${PROMETHEUS_PUBLISH}:9090"],
        compose.GRAFANA_HOST: ["${GRAFANA_PUBLISH}:3000"],
    }
    env = dict(
        line.split("=", 1)
        for line in (ROOT / compose.ENV_FILE).read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["EDGE_PUBLISH"].startswith("127.0.0.1:")
    assert env["EDGE_HTTPS_PUBLISH"].startswith("127.0.0.1:")
    assert env["JAEGER_UI_PUBLISH"].startswith("127.0.0.1:")
    assert env["PROMETHEUS_PUBLISH"].startswith("127.0.0.1:")
    assert env["GRAFANA_PUBLISH"].startswith("127.0.0.1:")
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


def test_each_compose_app_reaches_its_dependencies_through_its_sidecar(
    compose_file: dict[str, Any], topology: Topology
) -> None:
    services = compose_file["services"]
    for name, service in topology.services.items():
        for index in range(service.replicas):
            instance = f"{name}-{index}"
            config = yaml.safe_load((ROOT / compose.bootstrap_path(instance)).read_text())
            listeners = _listeners(config)
            environment = services[f"{instance}-app"]["environment"]
            assert services[f"{instance}-app"]["network_mode"] == f"service:{instance}"
            assert environment["SHOP_INSTANCE"] == instance
            for dependency in service.calls:
                port = listeners[f"outbound-{dependency}"]
                assert environment[f"SHOP_{dependency.upper()}_ADDRESS"] == f"127.0.0.1:{port}"
                peers = topology.services[dependency].replicas
                assert cluster_hosts(config, dependency) == [
                    (f"{dependency}-{i}", containers.INBOUND_PORT) for i in range(peers)
                ]
            assert cluster_hosts(config, "local_app") == [("127.0.0.1", containers.APP_PORT)]
            assert listeners["inbound"] == containers.INBOUND_PORT


def test_kubernetes_pods_are_probed_limited_and_budgeted() -> None:
    objects = kustomized(ROOT / kube.K8S_DIR / "overlays" / "prod")
    deployments = by_kind(objects, "Deployment")
    budgets = by_kind(objects, "PodDisruptionBudget")
    certificates = by_kind(objects, "Certificate")
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
        assert f"{name}-postgres" in by_kind(objects, "StatefulSet")
    nats = by_kind(objects, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == kube.NATS_REPLICAS
    route_names = certificates["nats-identity"]["spec"]["dnsNames"]
    assert set(kube.nats_route_names("shop")) <= set(route_names)
    # The edge's HTTPS certificate names where clients dial it, and no workload.
    https = certificates.pop("edge-tls")["spec"]
    assert https["secretName"] == "edge-tls"
    assert "uris" not in https
    assert https["usages"] == ["digital signature", "server auth"]
    assert {"localhost", "edge.shop.svc", "edge.shop.svc.cluster.local"} <= set(https["dnsNames"])
    assert https["ipAddresses"] == ["127.0.0.1"]
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
    assert cluster_hosts(local, "orders") == [
        ("127.0.0.1", i.inbound_port) for i in plan.of("orders")
    ]
    # Compose: three orders containers, the same cluster by their names, RBAC admits the caller.
    files = compose.render(topology, api).files
    document = yaml.safe_load(files[Path(compose.COMPOSE_FILE)])
    services = document["services"]
    assert {f"orders-{i}" for i in range(3)} | {f"orders-{i}-app" for i in range(3)} <= set(
        services
    )
    bootstraps = compose.render_envoy(topology, api).files
    caller = yaml.safe_load(bootstraps[compose.bootstrap_path("notifications-0")])
    assert cluster_hosts(caller, "orders") == [(f"orders-{i}", 15006) for i in range(3)]
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
        assert spiffe in bootstraps[compose.bootstrap_path(f"orders-{i}")]
    assert spiffe not in (ROOT / compose.bootstrap_path("orders-0")).read_text()
    # Kubernetes: the Deployment's replicas, the caller's cluster on the headless Service.
    manifests = kube.render(topology, api).files
    orders = by_kind(documents(manifests[kube.BASE / "orders.yaml"]), "Deployment")["orders"]
    assert orders["spec"]["replicas"] == 3
    config_maps = by_kind(documents(manifests[kube.BASE / "notifications.yaml"]), "ConfigMap")
    k8s_caller = yaml.safe_load(config_maps["notifications-envoy"]["data"]["envoy.yaml"])
    assert cluster_hosts(k8s_caller, "orders") == [("orders.shop.svc.cluster.local", 15006)]
    assert (
        next(c for c in k8s_caller["static_resources"]["clusters"] if c["name"] == "orders")["type"]
        == "STRICT_DNS"
    )
    assert spiffe in manifests[kube.BASE / "orders.yaml"]
