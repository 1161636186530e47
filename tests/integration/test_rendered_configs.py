"""Configurations rendered from mesh.yaml and the contracts, checked by the real binaries."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.control import conformance, edge_tls, envoy, natsconf
from mesh.control.api import Api
from mesh.control.binaries import find_binary
from mesh.control.contracts import DESCRIPTOR_SET
from mesh.control.envoy import edge
from mesh.control.envoy.edge_rules import HEALTH_CHECK_PATH
from mesh.control.pki import MeshPKI
from mesh.control.plan import MeshPlan, make_plan
from mesh.control.topology import Faults, Topology, load
from mesh.runtime import admission
from mesh.runtime.telemetry import TelemetrySettings
from tests.support import envoy_validation
from tests.support.mesh import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load(ROOT / "mesh.yaml")


@pytest.fixture(scope="module")
def api() -> Api:
    return Api.from_descriptor_set(ROOT / DESCRIPTOR_SET)


@pytest.fixture(scope="module")
def rendered(
    topology: Topology, api: Api, tmp_path_factory: pytest.TempPathFactory
) -> tuple[MeshPlan, dict[str, dict[str, Any]], dict[str, Path]]:
    return render(topology, api, tmp_path_factory.mktemp("run"))


def render(
    topology: Topology, api: Api, run_dir: Path
) -> tuple[MeshPlan, dict[str, dict[str, Any]], dict[str, Path]]:
    """Every sidecar's configuration, and where it is written, as the supervisor does it."""
    plan = make_plan(topology, run_dir)
    pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
    configs, paths = {}, {}
    for instance in plan.instances:
        cert = pki.ensure(instance.service, instance.name)
        sds = envoy.write_sds(run_dir / instance.name, cert.cert_path, cert.key_path, pki.ca_path)
        configs[instance.name] = envoy.sidecar_config(topology, plan, instance, api, sds)
        paths[instance.name] = envoy.write_config(
            configs[instance.name], run_dir / instance.name / "envoy.yaml"
        )
    return plan, configs, paths


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_real_envoy_accepts_every_sidecar_config(
    rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]],
) -> None:
    _, _, paths = rendered
    for name, path in paths.items():
        assert_envoy_accepts(path, name)


def assert_envoy_accepts(path: Path, name: str) -> None:
    """The real Envoy takes the configuration at `path`, and none of its fields is
    deprecated (a later Envoy would refuse it)."""
    assert envoy_validation.refusal(path) == "", name


def test_every_socket_is_on_loopback(
    rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]],
) -> None:
    _, configs, _ = rendered
    addresses = {
        node["address"]
        for config in configs.values()
        for node in _walk(config)
        if "port_value" in node
    }
    assert addresses == {"127.0.0.1"}


def _outbound_routes(config: dict[str, Any], dependency: str) -> dict[str, dict[str, Any]]:
    listener = next(
        item
        for item in config["static_resources"]["listeners"]
        if item["name"] == f"outbound-{dependency}"
    )
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    return {r["match"].get("path", "*"): r["route"] for r in routes}


def test_retries_follow_the_idempotency_the_contracts_declare(
    rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]],
) -> None:
    _, configs, _ = rendered
    routes = _outbound_routes(configs["orders-0"], "catalog")
    read = routes["/shop.catalog.v1.CatalogService/GetProduct"]["retry_policy"]["retry_on"]
    create = routes["/shop.catalog.v1.CatalogService/CreateProduct"]["retry_policy"]["retry_on"]
    unknown = routes["*"]["retry_policy"]["retry_on"]
    assert {"unavailable", "reset", "gateway-error"} <= set(read.split(","))
    for unsafe in (create, unknown):
        assert set(unsafe.split(",")) == {
            "connect-failure",
            "refused-stream",
            "reset-before-request",
            "retriable-headers",
        }
    # A per-try timeout only where the try that timed out is tried again.
    assert (
        routes["/shop.catalog.v1.CatalogService/GetProduct"]["retry_policy"]["per_try_timeout"]
        == "1.000s"
    )
    for path in ("/shop.catalog.v1.CatalogService/CreateProduct", "*"):
        assert "per_try_timeout" not in routes[path]["retry_policy"]


def test_call_policy_and_budget_come_from_mesh_yaml(
    topology: Topology, rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]]
) -> None:
    plan, configs, _ = rendered
    policy = topology.services["catalog"].calls["inventory"]
    cluster = next(
        c for c in configs["catalog-0"]["static_resources"]["clusters"] if c["name"] == "inventory"
    )
    thresholds = cluster["circuit_breakers"]["thresholds"][0]
    assert (
        thresholds["retry_budget"]["min_retry_concurrency"] == policy.retries.min_retry_concurrency
    )
    # No more in flight than inventory's apps admit (its sidecars would refuse the rest).
    inventory = topology.services["inventory"]
    assert thresholds["max_requests"] == min(
        policy.circuit_breaker.max_requests,
        inventory.replicas * inventory.admission.max_in_flight,
    )
    assert (
        cluster["outlier_detection"]["consecutive_5xx"] == policy.outlier_detection.consecutive_5xx
    )
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [
        i.inbound_port for i in plan.of("inventory")
    ]
    route = _outbound_routes(configs["catalog-0"], "inventory")["*"]
    assert route["timeout"] == f"{policy.timeout:.3f}s"


def test_inbound_authorizes_declared_callers_and_the_edge_for_public_methods(
    topology: Topology, api: Api, rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]]
) -> None:
    _, configs, _ = rendered
    inbound = next(
        item
        for item in configs["inventory-0"]["static_resources"]["listeners"]
        if item["name"] == "inbound"
    )
    manager = inbound["filter_chains"][0]["filters"][0]["typed_config"]
    [rbac] = [f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
    policies = rbac["typed_config"]["rules"]["policies"]
    callers = {name: policy for name, policy in policies.items() if name.startswith("caller-")}
    assert list(callers) == ["caller-catalog"]
    catalog = callers["caller-catalog"]
    assert [p["authenticated"]["principal_name"]["exact"] for p in catalog["principals"]] == [
        "spiffe://shop.local/ns/shop/sa/catalog"
    ]
    granted = {p["url_path"]["path"]["exact"] for p in catalog["permissions"]}
    assert granted == {
        "/shop.inventory.v1.InventoryService/SetStock",
        "/shop.inventory.v1.InventoryService/BatchGetStock",
    }
    edge_paths = {
        p["url_path"]["path"]["exact"] for p in policies["edge-public-methods"]["permissions"]
    }
    # The edge also checks a public service's health for its clients.
    assert edge_paths == {*(m.path for m in api.public("inventory")), HEALTH_CHECK_PATH}
    assert "/shop.inventory.v1.InventoryService/ReserveStock" not in edge_paths
    tls = inbound["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True


def test_nats_config_is_valid_and_fsyncs_every_write(
    topology: Topology, rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]], tmp_path: Path
) -> None:
    plan, _, _ = rendered
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    config = natsconf.write_config(topology, pki, tmp_path / "nats", plan.nats_port)
    text = config.read_text()
    assert "http:" not in text  # no monitor: it takes no credentials
    assert "sync_interval: always" in text
    assert f'listen: "127.0.0.1:{plan.nats_port}"' in text
    assert "verify_and_map: true" in text
    # One user per service identity, allowed its own subjects and consumer only.
    for name in topology.services:
        assert f'user = "{pki.spiffe_id(name)}"' in text
        assert f'"shop.{name}.>"' in text
        assert f'"$JS.API.CONSUMER.MSG.NEXT.SHOP_EVENTS.{name}"' in text
    checked = subprocess.run(
        [find_binary("nats-server"), "--config", str(config), "-t"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def _managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        node["typed_config"]
        for node in _walk(config)
        if node.get("name") == "envoy.filters.network.http_connection_manager"
    ]


def test_every_envoy_traces_to_the_trace_store_unless_told_otherwise(
    topology: Topology,
    api: Api,
    rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]],
    tmp_path: Path,
) -> None:
    plan, configs, _ = rendered
    orders = configs["orders-0"]
    for manager in _managers(orders):
        tracer = manager["tracing"]["provider"]["typed_config"]
        assert tracer["grpc_service"]["envoy_grpc"]["cluster_name"] == envoy.TRACE_CLUSTER
        assert tracer["service_name"] == "orders-sidecar"
    directions = {listener["name"]: listener["traffic_direction"]
                  for listener in orders["static_resources"]["listeners"]}  # fmt: skip
    assert directions == {"inbound": "INBOUND", "outbound-catalog": "OUTBOUND"}
    [store] = [c for c in orders["static_resources"]["clusters"] if c["name"] == "trace_store"]
    assert store["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": plan.trace_port}}
    }

    # Off: no tracing at all. A collector: spans go there instead, and Envoy takes it.
    pki = MeshPKI(tmp_path / "pki", topology.trust_domain, topology.namespace)
    cert = pki.ensure("orders", "orders-0")
    sds = envoy.write_sds(tmp_path / "orders-0", cert.cert_path, cert.key_path, pki.ca_path)
    instance = plan.instance("orders-0")
    off = dataclasses.replace(topology, telemetry=TelemetrySettings(tracing=False))
    assert not any(
        "tracing" in m for m in _managers(envoy.sidecar_config(off, plan, instance, api, sds))
    )
    collector = TelemetrySettings(otlp_endpoint="otel-collector.observability:4317")
    remote = envoy.sidecar_config(
        dataclasses.replace(topology, telemetry=collector), plan, instance, api, sds
    )
    [store] = [c for c in remote["static_resources"]["clusters"] if c["name"] == "trace_store"]
    assert store["type"] == "STRICT_DNS"
    assert store["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {
            "socket_address": {"address": "otel-collector.observability", "port_value": 4317}
        }
    }
    assert_envoy_accepts(envoy.write_config(remote, tmp_path / "remote.yaml"), "remote")


def test_faults_are_injected_inbound_after_authorization_and_envoy_accepts_them(
    topology: Topology, api: Api, tmp_path: Path
) -> None:
    faults = Faults(abort_percent=20, delay_percent=12.5, delay=1.5)
    services = dict(topology.services)
    services["catalog"] = dataclasses.replace(services["catalog"], faults=faults)
    faulty = dataclasses.replace(topology, services=services)
    _, configs, paths = render(faulty, api, tmp_path)
    for name in ("catalog-0", "orders-0"):
        inbound = next(
            item
            for item in configs[name]["static_resources"]["listeners"]
            if item["name"] == "inbound"
        )
        manager = inbound["filter_chains"][0]["filters"][0]["typed_config"]
        names = [f["name"] for f in manager["http_filters"]]
        # Calls are counted as they arrive, injected failures included (the objectives).
        counted = "envoy.filters.http.grpc_stats"
        if name == "orders-0":
            assert names == [counted, "envoy.filters.http.rbac", "envoy.filters.http.router"]
            continue
        assert names == [counted, "envoy.filters.http.rbac", "envoy.filters.http.fault",
                         "envoy.filters.http.router"]  # fmt: skip
        fault = manager["http_filters"][2]["typed_config"]
        assert fault["abort"] == {
            "grpc_status": 14, "percentage": {"numerator": 200_000, "denominator": "MILLION"}
        }  # fmt: skip
        assert fault["delay"] == {
            "fixed_delay": "1.500s",
            "percentage": {"numerator": 125_000, "denominator": "MILLION"},
        }
    assert_envoy_accepts(paths["catalog-0"], "catalog-0")


# -- overload: admission, deadlines, retries of expensive methods ---------------------------

LOGIN = "/shop.identity.v1.IdentityService/Login"
GET_JWKS = "/shop.identity.v1.IdentityService/GetJwks"


@pytest.fixture(scope="module")
def edge_config(
    topology: Topology, api: Api, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    run_dir = tmp_path_factory.mktemp("edge")
    plan = make_plan(topology, run_dir)
    pki = MeshPKI(run_dir / "pki", topology.trust_domain, topology.namespace)
    rules = edge.resolve_rules(topology, api)
    assert plan.edge is not None
    url, keys = "http://127.0.0.1:8080", plan.edge.deny_list
    files = edge.write_files(run_dir / "edge", ROOT / DESCRIPTOR_SET, topology, rules, url, keys)
    cert = pki.ensure("edge", "edge")
    sds = envoy.write_sds(run_dir / "edge", cert.cert_path, cert.key_path, pki.ca_path)
    served = edge_tls.server_pair(topology, pki, None)
    sds = envoy.write_server_sds(sds, run_dir / "edge", *served)
    config = edge.edge_config(topology, plan, api, sds, files)
    return config, envoy.write_config(config, run_dir / "edge" / "envoy.yaml")


def _edge_routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return {r["match"]["path"]: r["route"] for r in routes if "path" in r["match"] and "route" in r}


def test_an_expensive_method_is_never_retried_after_it_may_have_started(
    topology: Topology, edge_config: tuple[dict[str, Any], Path]
) -> None:
    """Login hashes a password: no per-try timeout, no retry on a failure after which it
    may be running still; only a refusal that says it never started is sent again."""
    config, path = edge_config
    assert_envoy_accepts(path, "edge")
    routes = _edge_routes(config)
    login, jwks = routes[LOGIN], routes[GET_JWKS]
    assert "per_try_timeout" not in login["retry_policy"]
    assert set(login["retry_policy"]["retry_on"].split(",")) == set(
        envoy.RETRY_ON_NOT_APPLIED.split(",")
    )
    assert login["retry_policy"]["retriable_headers"] == [
        {"name": admission.NOT_APPLIED_HEADER, "present_match": True}
    ]
    # GetJwks is as idempotent and cheap: retried after a per-try timeout.
    assert jwks["retry_policy"]["per_try_timeout"] == "1.000s"
    assert "gateway-error" in jwks["retry_policy"]["retry_on"]
    # Each waits as long as mesh.yaml says, and no longer than the client's grpc-timeout.
    declared = topology.services["identity"].method("Login").timeout
    assert declared is not None
    assert login["timeout"] == f"{declared:.3f}s"
    assert login["max_stream_duration"] == {
        "max_stream_duration": f"{declared:.3f}s", "grpc_timeout_header_max": f"{declared:.3f}s",
    }  # fmt: skip
    assert jwks["timeout"] == f"{topology.edge.timeout:.3f}s"


def _edge_rbac_policies(config: dict[str, Any]) -> dict[str, Any]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    rbac = next(
        f for f in manager["typed_config"]["http_filters"] if f["name"] == "envoy.filters.http.rbac"
    )
    policies: dict[str, Any] = rbac["typed_config"]["rules"]["policies"]
    return policies


def test_envoy_validation_refuses_a_deprecated_field(
    edge_config: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    """The edge with one claim matched by RBAC's deprecated `Principal.metadata`, which
    Envoy still runs: the configuration tests refuse it, naming the field."""
    config, accepted = edge_config
    assert envoy_validation.refusal(accepted) == ""
    deprecated = copy.deepcopy(config)
    [principal] = _edge_rbac_policies(deprecated)["token-without-subject"]["principals"]
    issuer = principal["and_ids"]["ids"][0]
    issuer["metadata"] = issuer.pop("sourced_metadata")["metadata_matcher"]
    path = envoy.write_config(deprecated, tmp_path / "edge" / "envoy.yaml")
    assert "envoy.config.rbac.v3.Principal.metadata" in envoy_validation.refusal(path)


def test_a_sidecar_admits_what_its_app_admits_and_health_always(
    topology: Topology, rendered: tuple[MeshPlan, dict[str, Any], dict[str, Path]]
) -> None:
    _, configs, _ = rendered
    config = configs["identity-0"]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    admitted = topology.services["identity"].admission

    def limits(cluster: str) -> dict[str, int]:
        thresholds = clusters[cluster]["circuit_breakers"]["thresholds"]
        return {t["priority"]: t["max_requests"] for t in thresholds}

    assert limits(envoy.LOCAL_APP) == {
        "DEFAULT": admitted.max_in_flight, "HIGH": envoy.LOOPBACK_MAX_REQUESTS,
    }  # fmt: skip
    assert limits(envoy.LOCAL_APP_EXPENSIVE)["DEFAULT"] == admitted.expensive_in_flight
    inbound = next(
        item for item in config["static_resources"]["listeners"] if item["name"] == "inbound"
    )
    manager = inbound["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    by_match = {r["match"].get("path") or r["match"]["prefix"]: r["route"] for r in routes}
    assert by_match["/grpc."] == {"cluster": envoy.LOCAL_APP, "timeout": "0s", "priority": "HIGH"}
    assert by_match[LOGIN]["cluster"] == envoy.LOCAL_APP_EXPENSIVE
    assert by_match["/"]["cluster"] == envoy.LOCAL_APP
    # A service without expensive methods has no second cluster.
    catalog = {c["name"] for c in configs["catalog-0"]["static_resources"]["clusters"]}
    assert envoy.LOCAL_APP_EXPENSIVE not in catalog


def test_a_method_mesh_yaml_names_must_exist(topology: Topology, api: Api) -> None:
    identity = topology.services["identity"]
    misnamed = dataclasses.replace(
        identity, methods={"Logon": dataclasses.replace(identity.method("Login"), line=7)}
    )
    broken = dataclasses.replace(topology, services={**topology.services, "identity": misnamed})
    [error] = conformance.problems(broken, api)
    assert error.line == 7
    assert "identity has no method 'Logon'" in str(error)
    assert "Login" in str(error)
