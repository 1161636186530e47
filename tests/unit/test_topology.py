"""mesh.yaml: loading, defaults and deep merging, and every mistake refused with its line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from textwrap import dedent

import pytest

from mesh.control.topology import (
    BACKGROUND,
    CHEAP,
    DEFAULT_CALL_POLICY,
    EXPENSIVE,
    SERVING,
    Admission,
    CallPolicy,
    Faults,
    FixedPorts,
    MethodPolicy,
    Topology,
    TopologyError,
    load,
    parse,
    parse_duration,
)
from mesh.runtime.admission import Backlog

REPOSITORY_MESH_YAML = Path(__file__).resolve().parents[2] / "mesh.yaml"

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


def _error(text: str) -> TopologyError:
    with pytest.raises(TopologyError) as caught:
        parse(dedent(text))
    return caught.value


def _policy(text: str, caller: str = "a", callee: str = "b") -> CallPolicy:
    return parse(dedent(text)).services[caller].calls[callee]


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
    policy = _policy(
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
    error = _error("services:\n  a:\n    ports: {app: 9000, admin: 9100}\n")
    assert error.line == 3
    assert "a.ports.admin: Envoy's admin interface has no port" in str(error)


def test_anchors_and_merge_keys_share_a_policy() -> None:
    policy = _policy(
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
    error = _error(f"services:\n  a:\n    calls:\n      b: {{timeout: {value}}}\n  b: {{}}\n")
    assert error.line == 4
    assert str(error).startswith("mesh.yaml:4: services.a.calls.b.timeout")
    assert expected in str(error)


# -- mistakes ----------------------------------------------------------------------------


def test_errors_are_value_errors_with_file_and_line() -> None:
    error = _error("services:\n  a: {replicas: 0}\n")
    assert isinstance(error, ValueError)
    assert (error.source, error.line) == ("mesh.yaml", 2)
    assert str(error) == "mesh.yaml:2: services.a.replicas must be between 1 and 16, got 0"


def test_invalid_yaml_reports_the_line_of_the_yaml_error() -> None:
    error = _error("services:\n  a: {}\n   b: {}\n")
    assert str(error).startswith("mesh.yaml:3: invalid YAML")


def test_source_label_appears_in_messages() -> None:
    with pytest.raises(TopologyError, match=r"^deploy/mesh\.yaml:1: unknown key"):
        parse("servics: {}\n", source="deploy/mesh.yaml")


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("servics:\n  a: {}\n", 1, "unknown key 'servics' in the topology"),
        ("services:\n  a:\n    replica: 2\n", 3, "unknown key 'replica' in services.a"),
        (
            "services:\n  a: {calls: {b: {retries: {attempt: 3}}}}\n  b: {}\n",
            2,
            "unknown key 'attempt' in services.a.calls.b.retries",
        ),
        ("defaults:\n  timout: 1s\nservices: {a: {}}\n", 2, "unknown key 'timout' in defaults"),
        ("edge: {exposed: [a]}\nservices: {a: {}}\n", 1, "unknown key 'exposed' in edge"),
        ("services:\n  a: {ports: {apps: 9000}}\n", 2, "unknown key 'apps'"),
    ],
)
def test_unknown_keys_are_refused_not_ignored(text: str, line: int, expected: str) -> None:
    error = _error(text)
    assert error.line == line
    assert expected in str(error)


def test_unknown_key_suggests_the_close_one() -> None:
    assert "did you mean 'replicas'?" in str(_error("services:\n  a: {replica: 2}\n"))


def test_a_key_given_twice_is_refused() -> None:
    error = _error("services:\n  a: {}\n  a: {replicas: 2}\n")
    assert error.line == 3
    assert "'a' twice" in str(error)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("- a\n- b\n", 1, "the topology must be a mapping, got a list"),
        ("services: [a, b]\n", 1, "services must be a mapping, got a list"),
        ("services:\n  a: {replicas: two}\n", 2, "must be an integer, got a string ('two')"),
        ("services:\n  a: {replicas: true}\n", 2, "must be an integer, got a boolean"),
        ("services:\n  a: {replicas: 1.5}\n", 2, "must be an integer, got a number"),
        ("services:\n  a: [b]\n", 2, "services.a must be a mapping, got a list"),
        ("services:\n  a: {calls: [b]}\n  b: {}\n", 2, "calls must be a mapping of service"),
        ("edge: {expose: a}\nservices: {a: {}}\n", 1, "edge.expose must be a list"),
        ("namespace: 7\nservices: {a: {}}\n", 1, "namespace must be a string"),
        (
            "defaults: {retries: {budget_percent: lots}}\nservices: {a: {}}\n",
            1,
            "budget_percent must be a number",
        ),
        ("services:\n  a: !!python/object:os.system {}\n", 2, "unsupported tag"),
    ],
)
def test_wrong_types_are_refused(text: str, line: int, expected: str) -> None:
    error = _error(text)
    assert error.line == line
    assert expected in str(error)


@pytest.mark.parametrize(("replicas", "ok"), [(0, False), (1, True), (16, True), (17, False)])
def test_replicas_range(replicas: int, ok: bool) -> None:
    text = f"services:\n  a: {{replicas: {replicas}}}\n"
    if ok:
        assert parse(text).services["a"].replicas == replicas
    else:
        assert "must be between 1 and 16" in str(_error(text))


def test_call_to_an_unknown_service_names_it_and_the_known_ones() -> None:
    error = _error(
        """\
        services:
          inventory: {}
          catalog:
            calls:
              inventroy: {timeout: 1s}
        """
    )
    assert str(error) == (
        "mesh.yaml:5: catalog calls unknown service 'inventroy' "
        "(known: catalog, inventory); did you mean 'inventory'?"
    )


def test_edge_may_expose_only_known_services_once() -> None:
    unknown = _error("edge:\n  expose:\n    - a\n    - c\nservices: {a: {}, b: {}}\n")
    assert unknown.line == 4
    assert "edge.expose names unknown service 'c' (known: a, b)" in str(unknown)

    twice = _error("edge: {expose: [a, a]}\nservices: {a: {}}\n")
    assert "names 'a' twice" in str(twice)


def test_a_service_calling_itself_is_refused() -> None:
    error = _error("services:\n  a:\n    calls:\n      a: {}\n")
    assert str(error) == "mesh.yaml:4: a calls itself"


def test_a_cycle_in_calls_names_its_services_and_the_closing_call() -> None:
    error = _error(
        """\
        services:
          a: {calls: {b: {methods: all}}}
          b: {calls: {c: {methods: all}}}
          c:
            calls:
              a: {methods: all}
          d: {calls: {a: {methods: all}}}
        """
    )
    assert error.line == 6
    assert "calls form a cycle: a -> b -> c -> a" in str(error)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("retries: {attempts: -1}", "attempts must be between 0 and 10, got -1"),
        ("retries: {attempts: 11}", "attempts must be between 0 and 10, got 11"),
        ("retries: {budget_percent: 101}", "budget_percent must be between 0 and 100, got 101"),
        ("retries: {min_retry_concurrency: -1}", "min_retry_concurrency must be between 0"),
        ("outlier_detection: {consecutive_5xx: -1}", "consecutive_5xx must be between 1"),
        ("outlier_detection: {max_ejection_percent: 150}", "must be between 0 and 100, got 150"),
        ("circuit_breaker: {max_requests: 0}", "max_requests must be between 1"),
        ("retries: {backoff: {base: 1s, max: 100ms}}", "backoff.max (0.1s) is shorter"),
    ],
)
def test_out_of_range_policy_values_are_refused(snippet: str, expected: str) -> None:
    error = _error(f"services:\n  a:\n    calls:\n      b: {{{snippet}}}\n  b: {{}}\n")
    assert error.line == 4
    assert expected in str(error)


def test_a_per_try_timeout_beyond_the_merged_timeout_is_refused_at_the_call() -> None:
    # Lowering only `timeout` leaves the default per-try timeout (1s) longer than the call.
    error = _error(
        "services:\n  a:\n    calls:\n      b: {methods: all, timeout: 500ms}\n  b: {}\n"
    )
    assert error.line == 4
    assert "per_try_timeout (1s) is longer than timeout (0.5s)" in str(error)
    # Without retries there is nothing to start, so the same timeout is fine.
    assert _policy(
        "services:\n  a: {calls: {b: {methods: all, timeout: 500ms, retries: {attempts: 0}}}}\n"
        "  b: {}\n"
    ).timeout == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("edge: {port: 70000}\nservices: {a: {}}\n", 1, "edge.port must be between 0 and 65535"),
        ("nats: {port: -1}\nservices: {a: {}}\n", 1, "nats.port must be between 0 and 65535"),
        ("services:\n  a: {ports: {app: 65536}}\n", 2, "must be between 0 and 65535"),
        (
            "services:\n  a: {replicas: 3, ports: {inbound: 65534}}\n",
            2,
            "replica 2 would listen on 65536",
        ),
    ],
)
def test_out_of_range_ports_are_refused(text: str, line: int, expected: str) -> None:
    error = _error(text)
    assert error.line == line
    assert expected in str(error)


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "services:\n  a: {ports: {app: 9000}}\n  b:\n    ports: {inbound: 9000}\n",
            4,
            "b replica 0 inbound port 9000 collides with the a replica 0 app port 9000",
        ),
        (
            "services:\n  a:\n    replicas: 2\n    ports: {app: 9000, inbound: 9001}\n",
            4,
            "a replica 1 app port 9001 collides with the a replica 0 inbound port 9001",
        ),
        (
            "edge: {port: 9000}\nservices:\n  a: {ports: {inbound: 9000}}\n",
            3,
            "a replica 0 inbound port 9000 collides with the edge port 9000",
        ),
        (
            "nats: {port: 8080}\nservices: {a: {}}\n",
            1,
            "nats port 8080 collides with the edge port 8080",
        ),
    ],
)
def test_fixed_ports_may_not_collide(text: str, line: int, expected: str) -> None:
    error = _error(text)
    assert error.line == line
    assert expected in str(error)


def test_free_ports_never_collide() -> None:
    topology = parse(
        "edge: {port: 0}\nnats: {port: 0}\n"
        "services:\n  a: {replicas: 4, ports: {app: 0, inbound: 0}}\n  b: {}\n"
    )
    assert topology.edge.port == 0
    assert topology.services["a"].ports == FixedPorts(None, None)


@pytest.mark.parametrize(
    "trust_domain", ["Shop.Local", "shop..local", "shop_local", "-shop.local", "shop.local.", '""']
)
def test_bad_trust_domains_are_refused(trust_domain: str) -> None:
    error = _error(f"trust_domain: {trust_domain}\nservices: {{a: {{}}}}\n")
    assert error.line == 1
    assert "not a valid SPIFFE trust domain" in str(error)


def test_a_dns_like_trust_domain_is_accepted() -> None:
    assert parse("trust_domain: prod-1.example.org\nservices: {a: {}}\n").spiffe_id("a") == (
        "spiffe://prod-1.example.org/ns/shop/sa/a"
    )


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", "namespace: shop\n", "services:\n", "services: {}\n"],
)
def test_a_topology_without_services_is_refused(text: str) -> None:
    error = _error(text)
    assert "no services" in str(error) or "empty" in str(error)
    assert error.line is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  edge: {}\n", "'edge' is reserved"),
        ("services:\n  Orders: {}\n", "'Orders' is not a valid name"),
        ("services:\n  order_v2: {}\n", "'order_v2' is not a valid name"),
        ("namespace: Shop\nservices: {a: {}}\n", "namespace 'Shop' is not a valid name"),
    ],
)
def test_names_must_be_usable_in_dns_and_spiffe_ids(text: str, expected: str) -> None:
    assert expected in str(_error(text))


def test_a_topology_built_by_hand_with_a_cycle_has_no_start_order() -> None:
    good = parse("services: {a: {calls: {b: {methods: all}}}, b: {}}\n")
    b = dataclasses.replace(good.services["b"], calls={"a": DEFAULT_CALL_POLICY})
    looped = dataclasses.replace(good, services={"a": good.services["a"], "b": b})
    assert isinstance(looped, Topology)
    with pytest.raises(ValueError, match="cycle among: a, b"):
        looped.start_order()


# -- events ------------------------------------------------------------------------------


def test_consumes_lists_the_subjects_of_other_services_events() -> None:
    topology = parse("services:\n  orders: {}\n  inventory:\n    consumes: [orders.order_placed]\n")
    assert topology.services["inventory"].consumes == ("orders.order_placed",)
    assert topology.services["inventory"].consumed_subjects == ["shop.orders.order_placed"]
    assert topology.services["orders"].consumed_subjects == []


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("orders.OrderPlaced", "must be <producer>.<event>, the event in snake case"),
        ("orders", "must be <producer>.<event>"),
        ("ordres.order_placed", "names no other service (known: inventory, orders)"),
        ("inventory.stock_reserved", "names no other service"),
        ("7", "must be a string"),
    ],
)
def test_a_bad_consumes_entry_is_refused_at_its_line(entry: str, expected: str) -> None:
    error = _error(f"services:\n  orders: {{}}\n  inventory:\n    consumes:\n      - {entry}\n")
    assert error.line == 5
    assert expected in str(error)


def test_an_event_consumed_twice_is_refused() -> None:
    error = _error(
        "services:\n  orders: {}\n  inventory:\n"
        "    consumes: [orders.order_placed, orders.order_placed]\n"
    )
    assert "lists 'orders.order_placed' twice" in str(error)


# -- telemetry ---------------------------------------------------------------------------


def test_telemetry_traces_everything_to_the_local_store_by_default() -> None:
    settings = parse("services: {a: {}}\n").telemetry
    assert (settings.tracing, settings.sampling_percent, settings.endpoint()) == (True, 100.0, None)
    tuned = parse(
        "services: {a: {}}\n"
        "telemetry: {tracing: true, sampling_percent: 10, otlp_endpoint: 'jaeger:4317'}\n"
    ).telemetry
    assert (tuned.sampling_percent, tuned.endpoint()) == (10.0, ("jaeger", 4317))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("tracing: yes please", "telemetry.tracing must be true or false"),
        ("sampling_percent: 150", "telemetry.sampling_percent must be between 0 and 100"),
        ("otlp_endpoint: jaeger", "must be host:port (e.g. otel-collector:4317)"),
        ("otlp_endpoint: 'jaeger:99999'", "must be host:port"),
        ("exporter: otlp", "unknown key 'exporter' in telemetry"),
    ],
)
def test_bad_telemetry_is_refused_at_its_line(entry: str, expected: str) -> None:
    error = _error(f"services: {{a: {{}}}}\ntelemetry:\n  {entry}\n")
    assert error.line == 3
    assert expected in str(error)


# -- faults ------------------------------------------------------------------------------


def test_faults_are_read_with_their_defaults() -> None:
    topology = parse(
        dedent("""\
        services:
          a:
            faults:
              abort: {percent: 20}
              delay: {percent: 10, duration: 1500ms}
          b:
            faults:
              abort: {percent: 2.5, grpc_status: RESOURCE_EXHAUSTED}
          c: {}
        """)
    )
    assert topology.services["a"].faults == Faults(20.0, "UNAVAILABLE", 10.0, 1.5)
    assert topology.services["b"].faults == Faults(2.5, "RESOURCE_EXHAUSTED", 0.0, 0.0)
    assert topology.services["c"].faults is None


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ("{abort: {}}", "services.a.faults.abort needs `percent`"),
        ("{abort: {percent: 120}}", "services.a.faults.abort.percent must be between 0 and 100"),
        (
            "{abort: {percent: 5, grpc_status: UNAVAILBLE}}",
            "services.a.faults.abort.grpc_status must be a gRPC error status such as "
            "UNAVAILABLE, got 'UNAVAILBLE'; did you mean 'UNAVAILABLE'?",
        ),
        ("{abort: {percent: 5, grpc_status: OK}}", "must be a gRPC error status"),
        ("{delay: {percent: 5}}", "services.a.faults.delay needs `duration`"),
        ("{delay: {percent: 5, duration: 2}}", "services.a.faults.delay.duration must be a"),
        ("{reset: {percent: 5}}", "reset"),
    ],
)
def test_bad_faults_are_refused_with_their_line(faults: str, expected: str) -> None:
    error = _error(f"services:\n  a:\n    faults: {faults}\n")
    assert expected in str(error)
    assert error.line == 3


# -- methods and admission -----------------------------------------------------------------


def test_methods_and_admission_are_read_with_their_defaults() -> None:
    topology = parse(
        dedent("""\
        admission: {max_in_flight: 32}
        services:
          identity:
            methods:
              Login: {cost: expensive, timeout: 5s}
              GetJwks: {timeout: 250ms}
          orders:
            admission: {max_in_flight: 4, expensive_in_flight: 1}
        """)
    )
    identity, orders = topology.services["identity"], topology.services["orders"]
    assert identity.method("Login") == MethodPolicy(EXPENSIVE, 5.0)
    assert identity.method("GetJwks") == MethodPolicy(CHEAP, 0.25)
    assert identity.method("Register") == MethodPolicy()  # not named: the defaults
    assert identity.expensive_methods == {"Login"}
    assert identity.admission == Admission(max_in_flight=32, expensive_in_flight=2)
    assert orders.admission == Admission(max_in_flight=4, expensive_in_flight=1)


def test_a_backlog_and_a_priority_are_read_and_a_service_inherits_the_default_backlog() -> None:
    topology = parse(
        dedent("""\
        admission: {backlog: {total: 50}}
        services:
          orders:
            admission: {backlog: {total: 400, per_client: 100}}
          payments: {priority: background}
        """)
    )
    orders, payments = topology.services["orders"], topology.services["payments"]
    assert orders.admission.backlog == Backlog(total=400, per_client=100)
    assert orders.priority == SERVING
    assert payments.admission.backlog == Backlog(total=50, per_client=50)
    assert payments.priority == BACKGROUND


def test_the_repository_runs_the_sagas_steps_in_the_background_and_bounds_their_backlog() -> None:
    topology = load(REPOSITORY_MESH_YAML)
    background = {name for name, s in topology.services.items() if s.priority == BACKGROUND}
    assert background == {"inventory", "payments", "processor", "shipping", "notifications"}
    assert {name for name, s in topology.services.items() if s.admission.backlog} == {"orders"}


def test_the_repository_marks_password_hashing_expensive() -> None:
    identity = load(REPOSITORY_MESH_YAML).services["identity"]
    assert identity.expensive_methods == {"Login", "Register"}
    assert identity.admission.expensive_in_flight < identity.admission.max_in_flight


@pytest.mark.parametrize(
    ("snippet", "line", "expected"),
    [
        (
            "  a:\n    methods:\n      Login: {cost: pricey}\n",
            4,
            "services.a.methods.Login.cost must be one of cheap, expensive, got 'pricey'",
        ),
        (
            "  a:\n    methods:\n      login: {cost: expensive}\n",
            4,
            "services.a.methods.login does not name a method like GetProduct",
        ),
        (
            "  a:\n    methods:\n      Login: {costs: expensive}\n",
            4,
            "unknown key 'costs' in services.a.methods.Login",
        ),
        (
            "  a:\n    methods:\n      Login: {timeout: 0s}\n",
            4,
            "services.a.methods.Login.timeout must be longer than zero",
        ),
        (
            "  a:\n    admission: {max_in_flight: 0}\n",
            3,
            "services.a.admission.max_in_flight must be between 1 and 100000",
        ),
        (
            "  a:\n    admission: {max_in_flight: 2, expensive_in_flight: 3}\n",
            3,
            "services.a.admission: expensive_in_flight (3) is more than max_in_flight (2)",
        ),
        (
            "  a:\n    admission: {backlog: {total: 10, per_client: 11}}\n",
            3,
            "services.a.admission.backlog: per_client (11) is more than total (10)",
        ),
        (
            "  a:\n    admission: {backlog: {per_client: 11}}\n",
            3,
            "services.a.admission.backlog needs `total`",
        ),
        (
            "  a:\n    priority: low\n",
            3,
            "services.a.priority must be one of serving, background, got 'low'",
        ),
    ],
)
def test_bad_methods_and_admission_are_refused_at_their_line(
    snippet: str, line: int, expected: str
) -> None:
    error = _error(f"services:\n{snippet}")
    assert expected in str(error)
    assert error.line == line


# -- what a caller may call ----------------------------------------------------------------


def test_a_call_names_the_methods_it_may_use_or_a_group() -> None:
    topology = parse(
        "services:\n  a: {calls: {b: {methods: [GetX, ListX]}, c: {methods: public}}}\n"
        "  b: {}\n  c: {}\n"
    )
    assert topology.services["a"].grants == {"b": ("GetX", "ListX"), "c": "public"}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{}", "services.a.calls.b needs `methods`"),
        ("{methods: some}", "must be one of"),
        ("{methods: [getX]}", "'getX' is not a method name"),
        ("{methods: [GetX, GetX]}", "lists 'GetX' twice"),
        ("{methods: []}", "names no method"),
    ],
)
def test_a_call_without_a_proper_list_of_methods_is_refused(entry: str, expected: str) -> None:
    error = _error(f"services:\n  a:\n    calls:\n      b: {entry}\n  b: {{}}\n")
    assert error.line == 4
    assert expected in str(error)
