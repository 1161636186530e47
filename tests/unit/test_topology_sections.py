"""mesh.yaml's sections beyond calls: events, telemetry, faults, methods and admission, grants."""

from __future__ import annotations

from textwrap import dedent

import pytest

from mesh.control.topology import (
    BACKGROUND,
    CHEAP,
    EXPENSIVE,
    SERVING,
    Admission,
    Faults,
    MethodPolicy,
    load,
    parse,
)
from mesh.runtime.admission import Backlog
from tests.support.topology import REPOSITORY_MESH_YAML, parse_error

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
    error = parse_error(
        f"services:\n  orders: {{}}\n  inventory:\n    consumes:\n      - {entry}\n"
    )
    assert error.line == 5
    assert expected in str(error)


def test_an_event_consumed_twice_is_refused() -> None:
    error = parse_error(
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
    error = parse_error(f"services: {{a: {{}}}}\ntelemetry:\n  {entry}\n")
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
    error = parse_error(f"services:\n  a:\n    faults: {faults}\n")
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
    error = parse_error(f"services:\n{snippet}")
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
    error = parse_error(f"services:\n  a:\n    calls:\n      b: {entry}\n  b: {{}}\n")
    assert error.line == 4
    assert expected in str(error)
