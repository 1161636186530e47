"""mesh.yaml: every mistake refused with its file, its line and, for a typo, the likely key."""

from __future__ import annotations

import dataclasses

import pytest

from mesh.control.topology import (
    DEFAULT_CALL_POLICY,
    FixedPorts,
    Topology,
    TopologyError,
    parse,
)
from tests.support.topology import call_policy, parse_error

# -- mistakes ----------------------------------------------------------------------------


def test_errors_are_value_errors_with_file_and_line() -> None:
    error = parse_error("services:\n  a: {replicas: 0}\n")
    assert isinstance(error, ValueError)
    assert (error.source, error.line) == ("mesh.yaml", 2)
    assert str(error) == "mesh.yaml:2: services.a.replicas must be between 1 and 16, got 0"


def test_invalid_yaml_reports_the_line_of_the_yaml_error() -> None:
    error = parse_error("services:\n  a: {}\n   b: {}\n")
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
    error = parse_error(text)
    assert error.line == line
    assert expected in str(error)


def test_unknown_key_suggests_the_close_one() -> None:
    assert "did you mean 'replicas'?" in str(parse_error("services:\n  a: {replica: 2}\n"))


def test_a_key_given_twice_is_refused() -> None:
    error = parse_error("services:\n  a: {}\n  a: {replicas: 2}\n")
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
    error = parse_error(text)
    assert error.line == line
    assert expected in str(error)


@pytest.mark.parametrize(("replicas", "ok"), [(0, False), (1, True), (16, True), (17, False)])
def test_replicas_range(replicas: int, ok: bool) -> None:
    text = f"services:\n  a: {{replicas: {replicas}}}\n"
    if ok:
        assert parse(text).services["a"].replicas == replicas
    else:
        assert "must be between 1 and 16" in str(parse_error(text))


def test_call_to_an_unknown_service_names_it_and_the_known_ones() -> None:
    error = parse_error(
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
    unknown = parse_error("edge:\n  expose:\n    - a\n    - c\nservices: {a: {}, b: {}}\n")
    assert unknown.line == 4
    assert "edge.expose names unknown service 'c' (known: a, b)" in str(unknown)

    twice = parse_error("edge: {expose: [a, a]}\nservices: {a: {}}\n")
    assert "names 'a' twice" in str(twice)


def test_a_service_calling_itself_is_refused() -> None:
    error = parse_error("services:\n  a:\n    calls:\n      a: {}\n")
    assert str(error) == "mesh.yaml:4: a calls itself"


def test_a_cycle_in_calls_names_its_services_and_the_closing_call() -> None:
    error = parse_error(
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
    error = parse_error(f"services:\n  a:\n    calls:\n      b: {{{snippet}}}\n  b: {{}}\n")
    assert error.line == 4
    assert expected in str(error)


def test_a_per_try_timeout_beyond_the_merged_timeout_is_refused_at_the_call() -> None:
    # Lowering only `timeout` leaves the default per-try timeout (1s) longer than the call.
    error = parse_error(
        "services:\n  a:\n    calls:\n      b: {methods: all, timeout: 500ms}\n  b: {}\n"
    )
    assert error.line == 4
    assert "per_try_timeout (1s) is longer than timeout (0.5s)" in str(error)
    # Without retries there is nothing to start, so the same timeout is fine.
    assert call_policy(
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
    error = parse_error(text)
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
    error = parse_error(text)
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
    error = parse_error(f"trust_domain: {trust_domain}\nservices: {{a: {{}}}}\n")
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
    error = parse_error(text)
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
    assert expected in str(parse_error(text))


def test_a_topology_built_by_hand_with_a_cycle_has_no_start_order() -> None:
    good = parse("services: {a: {calls: {b: {methods: all}}}, b: {}}\n")
    b = dataclasses.replace(good.services["b"], calls={"a": DEFAULT_CALL_POLICY})
    looped = dataclasses.replace(good, services={"a": good.services["a"], "b": b})
    assert isinstance(looped, Topology)
    with pytest.raises(ValueError, match="cycle among: a, b"):
        looped.start_order()
