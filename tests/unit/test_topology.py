"""mesh.yaml: loading, defaults and deep merging, the topology's queries, durations."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mesh.control.topology import (
    DEFAULT_CALL_POLICY,
    FixedPorts,
    TopologyError,
    load,
    parse,
    parse_duration,
)
from tests.support.topology import REPOSITORY_MESH_YAML, call_policy, parse_error

#: The example of the file format, as documented.
EXAMPLE = """\
trust_domain: shop.local
namespace: shop
defaults:
  timeout: 2s
  retries:
    attempts: 2
    per_try_timeout: 1s
    backoff: {base: 25ms, max: 250ms}
    budget_percent: 20
    min_retry_concurrency: 16
  outlier_detection:
    consecutive_5xx: 5
    consecutive_gateway_failure: 2
    interval: 2s
    base_ejection_time: 10s
    max_ejection_percent: 50
  circuit_breaker:
    max_connections: 1024
    max_pending_requests: 1024
    max_requests: 1024
nats:
  port: 0
edge:
  port: 8080
  expose: [catalog, orders, identity, shipping, payments, notifications, inventory]
services:
  inventory: {}
  identity: {}
  shipping: {}
  payments: {}
  notifications: {}
  catalog:
    calls:
      inventory: {methods: [SetStock], timeout: 1s}
  orders:
    replicas: 2
    ports: {app: 0, inbound: 0}
    calls:
      catalog:
        methods: [BatchGetProducts]
        retries: {attempts: 3}
"""


# -- loading -----------------------------------------------------------------------------


def test_example_loads_with_deep_merged_call_policies() -> None:
    topology = parse(EXAMPLE)

    assert (topology.trust_domain, topology.namespace) == ("shop.local", "shop")
    assert topology.nats.port is None
    assert topology.edge.port == 8080
    assert topology.edge.expose[:2] == ("catalog", "orders")
    orders = topology.services["orders"]
    assert orders.replicas == 2
    assert orders.ports == FixedPorts(app=None, inbound=None)
    assert topology.source is None

    to_inventory = topology.services["catalog"].calls["inventory"]
    assert to_inventory.timeout == 1.0
    assert to_inventory.retries == DEFAULT_CALL_POLICY.retries

    to_catalog = orders.calls["catalog"]
    assert to_catalog.retries.attempts == 3
    # Everything the entry does not name comes from `defaults`.
    assert to_catalog.retries.per_try_timeout == 1.0
    assert to_catalog.retries.backoff_max == 0.25
    assert to_catalog.timeout == 2.0


def test_built_in_defaults_apply_when_the_file_leaves_everything_out() -> None:
    topology = parse("services: {a: {calls: {b: {methods: all}}}, b: {}}\n")

    assert (topology.trust_domain, topology.namespace) == ("shop.local", "shop")
    assert topology.services["a"].calls["b"] == DEFAULT_CALL_POLICY
    assert topology.services["a"].replicas == 1
    assert topology.edge.port == 8080
    assert topology.edge.expose == ()
    assert topology.nats.port is None


def test_built_in_defaults_are_the_documented_values() -> None:
    policy = DEFAULT_CALL_POLICY
    assert policy.timeout == 2.0
    assert dataclasses.astuple(policy.retries) == (2, 1.0, 0.025, 0.25, 20.0, 16)
    assert dataclasses.astuple(policy.outlier_detection) == (5, 2, 2.0, 10.0, 50)
    assert dataclasses.astuple(policy.circuit_breaker) == (1024, 1024, 1024)


def test_merge_runs_built_ins_then_defaults_then_the_call() -> None:
    policy = call_policy(
        """\
        defaults:
          retries: {backoff: {max: 1s}}
          circuit_breaker: {max_requests: 64}
        services:
          a:
            calls:
              b: {methods: all, retries: {attempts: 5, backoff: {base: 50ms}}}
          b: {}
        """
    )
    assert policy.retries.attempts == 5
    assert policy.retries.backoff_base == 0.05
    assert policy.retries.backoff_max == 1.0  # from defaults, untouched by the call
    assert policy.retries.per_try_timeout == 1.0  # built in
    assert policy.circuit_breaker.max_requests == 64
    assert policy.circuit_breaker.max_connections == 1024


def test_fixed_ports_are_bases_for_replicas() -> None:
    topology = parse("services:\n  a: {replicas: 3, ports: {app: 9000, inbound: 9100}}\n")
    ports = topology.services["a"].ports
    assert ports == FixedPorts(app=9000, inbound=9100)
    assert ports.for_replica(2) == FixedPorts(app=9002, inbound=9102)


def test_an_admin_port_is_refused_the_admin_is_a_unix_socket() -> None:
    error = parse_error("services:\n  a:\n    ports: {app: 9000, admin: 9100}\n")
    assert error.line == 3
    assert "a.ports.admin: Envoy's admin interface has no port" in str(error)


def test_anchors_and_merge_keys_share_a_policy() -> None:
    policy = call_policy(
        """\
        services:
          a:
            calls:
              b: &slow {methods: all, timeout: 5s, retries: {per_try_timeout: 2s}}
              c: {<<: *slow, timeout: 3s}
          b: {}
          c: {}
        """,
        callee="c",
    )
    assert policy.timeout == 3.0
    assert policy.retries.per_try_timeout == 2.0


def test_load_reads_a_real_file_and_keeps_its_path(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")

    topology = load(path)

    assert topology.source == path
    assert topology.services["orders"].replicas == 2


def test_load_errors_name_the_file_given(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("services:\n  a: {replica: 2}\n", encoding="utf-8")

    with pytest.raises(TopologyError, match=rf"^{re.escape(str(path))}:2: unknown key 'replica'"):
        load(path)


def test_missing_file_is_a_topology_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(TopologyError, match=rf"^{re.escape(str(path))}: cannot read"):
        load(path)


def test_the_topology_is_immutable() -> None:
    topology = parse(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topology.namespace = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        topology.services["x"] = topology.services["orders"]  # type: ignore[index]


# -- queries -----------------------------------------------------------------------------


def test_start_order_puts_callees_first_and_breaks_ties_by_name() -> None:
    topology = parse(
        """\
        services:
          zeta: {calls: {alpha: {methods: all}}}
          mid: {calls: {zeta: {methods: all}, beta: {methods: all}}}
          beta: {}
          alpha: {}
        """
    )
    assert topology.start_order() == ["alpha", "beta", "zeta", "mid"]


def test_start_order_of_the_example() -> None:
    order = parse(EXAMPLE).start_order()
    assert order.index("inventory") < order.index("catalog") < order.index("orders")
    assert sorted(order) == sorted(parse(EXAMPLE).services)


def test_callers_of_lists_callers_sorted() -> None:
    topology = parse(
        "services: {c: {calls: {a: {methods: all}}}, b: {calls: {a: {methods: all}}}, a: {}}\n"
    )
    assert topology.callers_of("a") == ["b", "c"]
    assert topology.callers_of("b") == []
    with pytest.raises(ValueError, match="unknown service 'nope'"):
        topology.callers_of("nope")


def test_spiffe_ids_of_services_and_the_edge() -> None:
    topology = parse("trust_domain: example.org\nnamespace: prod\nservices: {orders: {}}\n")
    assert topology.spiffe_id("orders") == "spiffe://example.org/ns/prod/sa/orders"
    assert topology.spiffe_id("edge") == "spiffe://example.org/ns/prod/sa/edge"
    with pytest.raises(ValueError, match="unknown service 'order'"):
        topology.spiffe_id("order")


def test_repository_mesh_yaml_starts_inventory_then_catalog_then_orders() -> None:
    topology = load(REPOSITORY_MESH_YAML)

    order = topology.start_order()
    assert order.index("inventory") < order.index("catalog") < order.index("orders")
    assert order.index("processor") < order.index("payments")
    assert set(topology.services) == {
        "catalog",
        "inventory",
        "orders",
        "payments",
        "shipping",
        "identity",
        "notifications",
        "processor",
        "search",
    }
    # The processor's only method is internal: the edge has nothing of it to expose.
    assert set(topology.edge.expose) == set(topology.services) - {"processor"}
    assert topology.edge.port == 8080
    assert {name: set(s.calls) for name, s in topology.services.items() if s.calls} == {
        "catalog": {"inventory"},
        "orders": {"catalog"},
        "payments": {"processor"},
    }
    assert all(s.replicas == 1 for s in topology.services.values())


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1.5s", 1.5), ("1m", 60.0), ("1h", 3600.0), ("0s", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["2 s", "fast", "-1s", "", "2", "1m30s", "1.s", ".5s", "2S"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"negative|not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2 s", "'2 s' is not a duration"),
        ("fast", "'fast' is not a duration"),
        ("-1s", "is negative"),
        ("2", "must be a duration with a unit"),
        ("0s", "must be longer than zero"),
    ],
)
def test_bad_durations_in_the_file_name_the_line(value: str, expected: str) -> None:
    error = parse_error(f"services:\n  a:\n    calls:\n      b: {{timeout: {value}}}\n  b: {{}}\n")
    assert error.line == 4
    assert str(error).startswith("mesh.yaml:4: services.a.calls.b.timeout")
    assert expected in str(error)
