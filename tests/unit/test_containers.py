"""The container layout's pieces: discovery by address kind, the fixed-port plan, the
rendered files' bookkeeping, certificates with extra DNS names."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from mesh.control import envoy, natsconf
from mesh.control.pki import MeshPKI
from mesh.control.topology import parse
from mesh.deploy import containers
from mesh.deploy.containers import Rendered

TOPOLOGY = parse(
    "services:\n"
    "  inventory: {replicas: 2}\n"
    "  catalog: {calls: {inventory: {methods: all}}}\n"
    "  orders: {replicas: 3, calls: {inventory: {methods: all}, catalog: {methods: all}}}\n"
)


def test_addresses_are_static_and_names_are_resolved_by_dns() -> None:
    static = envoy.upstream("a", [("127.0.0.1", 1), ("10.0.0.2", 2)])
    assert static["type"] == "STATIC"
    named = envoy.upstream("b", [("orders-0", 15006), ("orders-1", 15006)])
    assert named["type"] == "STRICT_DNS"
    assert named["dns_lookup_family"] == "V4_PREFERRED"
    hosts = [
        e["endpoint"]["address"]["socket_address"]
        for e in named["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == [
        {"address": "orders-0", "port_value": 15006},
        {"address": "orders-1", "port_value": 15006},
    ]


ROUTING_ROOT = Path("/etc/shop/routing/current")
VERSIONED = parse(
    "services:\n"
    "  catalog:\n"
    "    versions:\n"
    "      v1: {replicas: 2, weight: 90}\n"
    "      v2: {weight: 10, module: services.catalog.next}\n"
    "  orders: {calls: {catalog: {methods: all}}}\n"
)


def test_the_container_plan_has_fixed_ports_and_named_peers() -> None:
    plan = containers.plan(TOPOLOGY, lambda i: i.name, routing_root=ROUTING_ROOT)
    assert [i.name for i in plan.instances] == [
        "inventory-0", "inventory-1", "catalog-0", "orders-0", "orders-1", "orders-2",
    ]  # fmt: skip
    orders = plan.instance("orders-2")
    assert (orders.app_port, orders.inbound_port, orders.probe_port) == (50051, 15006, 15021)
    assert orders.admin_socket == "/tmp/envoy-admin.sock"
    assert dict(orders.outbound) == {"catalog": 15101, "inventory": 15102}
    assert plan.listen_host == "0.0.0.0"
    assert plan.endpoints_of("inventory") == [("inventory-0", 15006), ("inventory-1", 15006)]


def test_one_template_per_service_reached_through_the_service_name() -> None:
    plan = containers.plan(
        TOPOLOGY, lambda i: f"{i.service}.shop.svc", routing_root=ROUTING_ROOT, replicas=False
    )
    assert [i.name for i in plan.instances] == ["inventory-0", "catalog-0", "orders-0"]
    assert plan.endpoints_of("orders") == [("orders.shop.svc", 15006)]


def test_each_version_runs_its_own_instances_reached_apart() -> None:
    plan = containers.plan(VERSIONED, lambda i: i.name, routing_root=ROUTING_ROOT)
    assert [i.name for i in plan.instances] == [
        "catalog-v1-0", "catalog-v1-1", "catalog-v2-0", "orders-0",
    ]  # fmt: skip
    assert plan.endpoints_of("catalog", "v1") == [("catalog-v1-0", 15006), ("catalog-v1-1", 15006)]
    assert plan.endpoints_of("catalog", "v2") == [("catalog-v2-0", 15006)]
    assert plan.routing_root == str(ROUTING_ROOT)
    canary = plan.instance("catalog-v2-0")
    assert containers.app_command(VERSIONED, canary)[:3] == [
        "python",
        "-m",
        "services.catalog.next",
    ]
    stable = plan.instance("catalog-v1-0")
    assert containers.app_command(VERSIONED, stable)[:3] == ["python", "-m", "services.catalog"]
    # One template per version, as one Deployment per version runs it.
    templates = containers.plan(
        VERSIONED, lambda i: i.name, routing_root=ROUTING_ROOT, replicas=False
    )
    assert [i.name for i in templates.instances] == ["catalog-v1-0", "catalog-v2-0", "orders-0"]


def test_the_split_is_one_file_per_version_and_read_only_where_it_is_routed_to() -> None:
    assert containers.split_files(VERSIONED) == {
        "routing.catalog_v1": "90",
        "routing.catalog_v2": "10",
    }
    assert containers.split_files(TOPOLOGY) == {}
    split = {containers.ENVOY_BOOTSTRAP: "node: {}\nlayered_runtime:\n  layers: []\n"}
    assert containers.reads_split(split)
    nested = {containers.ENVOY_BOOTSTRAP: "node: {}\nx:\n  layered_runtime: {}\n"}
    assert not containers.reads_split(nested)


def test_a_collector_is_set_only_where_mesh_yaml_names_none() -> None:
    assert containers.with_collector(TOPOLOGY, "jaeger").telemetry.otlp_endpoint == "jaeger:4317"
    named = parse("telemetry: {otlp_endpoint: 'otel:4317'}\nservices:\n  a: {}\n")
    assert containers.with_collector(named, "jaeger").telemetry.otlp_endpoint == "otel:4317"


def test_rendered_files_know_what_is_stale_and_prune_what_is_not_theirs(tmp_path: Path) -> None:
    owned = Path("deploy/x")
    files = Rendered({owned / "a.yaml": "a: 1\n", Path("top.yml"): "b: 2\n"}, owned=(owned,))
    assert files.stale(tmp_path) == [owned / "a.yaml", Path("top.yml")]
    files.write(tmp_path)
    assert files.stale(tmp_path) == []
    (tmp_path / owned / "old.yaml").write_text("gone: true\n")
    (tmp_path / "top.yml").write_text("b: 3\n")
    assert files.stale(tmp_path) == [Path("top.yml"), owned / "old.yaml"]
    files.write(tmp_path)
    assert not (tmp_path / owned / "old.yaml").exists()
    assert files.stale(tmp_path) == []


def test_a_rendered_link_is_swapped_after_its_files_and_old_layers_go(tmp_path: Path) -> None:
    owned = Path("deploy/x")
    first = Rendered(
        {owned / "layers" / "a" / "key": "1\n"},
        owned=(owned,),
        links={owned / "current": "layers/a"},
    )
    assert first.stale(tmp_path) == [owned / "layers" / "a" / "key", owned / "current"]
    first.write(tmp_path)
    assert (tmp_path / owned / "current" / "key").read_text() == "1\n"
    assert first.stale(tmp_path) == []
    second = Rendered(
        {owned / "layers" / "b" / "key": "2\n"},
        owned=(owned,),
        links={owned / "current": "layers/b"},
    )
    assert second.stale(tmp_path) == [
        owned / "layers" / "b" / "key", owned / "current", owned / "layers" / "a" / "key",
    ]  # fmt: skip
    second.write(tmp_path)
    assert os.readlink(tmp_path / owned / "current") == "layers/b"
    assert (tmp_path / owned / "current" / "key").read_text() == "2\n"
    assert not (tmp_path / owned / "layers" / "a").exists()
    assert sorted(p.name for p in (tmp_path / owned).iterdir()) == ["current", "layers"]
    assert second.stale(tmp_path) == []
    # Without versions, the link and its layer are gone with the directory they were in.
    none = Rendered({owned / "a.yaml": "a: 1\n"}, owned=(owned,))
    assert none.stale(tmp_path) == [
        owned / "a.yaml", owned / "current", owned / "layers" / "b" / "key",
    ]  # fmt: skip
    none.write(tmp_path)
    assert sorted(p.name for p in (tmp_path / owned).iterdir()) == ["a.yaml"]


def test_dumped_yaml_keeps_order_shows_files_as_blocks_and_has_no_aliases() -> None:
    shared = {"k": "v"}
    text = containers.dump({"z": 1, "a": shared, "b": shared, "file": "line 1\nline 2\n"})
    assert text.index("z:") < text.index("a:")
    assert "&" not in text
    assert "*" not in text
    assert "file: |\n  line 1\n  line 2\n" in text
    assert yaml.safe_load(text)["file"] == "line 1\nline 2\n"


def test_a_certificate_is_reissued_when_it_lacks_a_dns_name(tmp_path: Path) -> None:
    pki = MeshPKI(tmp_path, "shop.local", "shop")
    first = pki.ensure("nats", "nats")
    assert first.dns_names == ("nats.shop.svc",)
    routes = ["nats-0.nats-cluster.shop.svc.cluster.local"]
    second = pki.ensure("nats", "nats", dns_names=routes)
    assert second.serial != first.serial
    assert second.dns_names == ("nats.shop.svc", *routes)
    assert pki.ensure("nats", "nats", dns_names=routes).serial == second.serial
    assert pki.ensure("nats", "nats").serial == second.serial


def test_a_clustered_nats_config_routes_over_verified_tls(tmp_path: Path) -> None:
    pki = MeshPKI(tmp_path, "shop.local", "shop")
    config = natsconf.render_config(
        TOPOLOGY, pki, port=4222, monitor_port=8222, store_dir=Path("/data"),
        cert_path=Path("/c/tls.crt"), key_path=Path("/c/tls.key"), ca_path=Path("/c/ca.crt"),
        host="0.0.0.0", server_name="$POD_NAME",
        cluster=natsconf.Cluster(port=6222, routes=["nats-route://n0:6222", "nats-route://n1:6222"]),
    )  # fmt: skip
    assert "server_name: $POD_NAME\n" in config
    cluster = config[config.index("cluster {") : config.index("authorization {")]
    assert '  routes: [\n    "nats-route://n0:6222"\n    "nats-route://n1:6222"\n  ]\n' in cluster
    assert "no_advertise: true" in cluster
    assert '    ca_file: "/c/ca.crt"\n    verify: true\n' in cluster
    assert config.count("verify_and_map: true") == 1
