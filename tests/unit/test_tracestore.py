"""The trace store: what it keeps of OTLP spans, its bound, its look-ups, its waterfall."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from mesh.control.tracestore import (
    RECENT,
    Span,
    TraceSearch,
    TraceStore,
    TraceSummary,
    render_waterfall,
)

#: An arbitrary moment, so offsets in the tests read as milliseconds from it.
EPOCH_NS = 1_700_000_000_000_000_000


def trace_id(n: int) -> str:
    return f"{n:032x}"


def span_id(n: int) -> str:
    return f"{n:016x}"


def ns(ms: float) -> int:
    return EPOCH_NS + round(ms * 1_000_000)


def string(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def otlp_span(
    trace: int,
    span: int,
    parent: int | None = None,
    *,
    name: str = "op",
    start_ms: float = 0.0,
    end_ms: float = 1.0,
    kind: trace_pb2.Span.SpanKind.ValueType = trace_pb2.Span.SPAN_KIND_SERVER,
    error: str | None = None,
    attributes: dict[str, str] | None = None,
) -> trace_pb2.Span:
    """A span as an exporter sends it; `error` is the message of an ERROR status."""
    code = (
        trace_pb2.Status.STATUS_CODE_UNSET if error is None else trace_pb2.Status.STATUS_CODE_ERROR
    )
    return trace_pb2.Span(
        trace_id=bytes.fromhex(trace_id(trace)),
        span_id=bytes.fromhex(span_id(span)),
        parent_span_id=b"" if parent is None else bytes.fromhex(span_id(parent)),
        name=name,
        kind=kind,
        start_time_unix_nano=ns(start_ms),
        end_time_unix_nano=ns(end_ms),
        status=trace_pb2.Status(code=code, message=error or ""),
        attributes=[KeyValue(key=k, value=string(v)) for k, v in (attributes or {}).items()],
    )


def batch(service: str, *spans: trace_pb2.Span, instance: str = "") -> trace_pb2.ResourceSpans:
    """One exporter's spans, under its resource (`service.name`, `service.instance.id`)."""
    resource = [KeyValue(key="service.name", value=string(service))]
    if instance:
        resource.append(KeyValue(key="service.instance.id", value=string(instance)))
    return trace_pb2.ResourceSpans(
        resource=Resource(attributes=resource),
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TraceStore]:
    store = TraceStore(tmp_path / "traces.db")
    try:
        yield store
    finally:
        store.close()


def test_keeps_each_span_with_its_service_kind_status_and_attributes(store: TraceStore) -> None:
    added = store.add(
        [
            batch("edge", otlp_span(1, 1, name="ingress", end_ms=9.0)),
            batch(
                "orders",
                otlp_span(
                    1, 2, parent=1, name="PlaceOrder", start_ms=1.0, end_ms=8.5,
                    kind=trace_pb2.Span.SPAN_KIND_CLIENT, error="out of stock",
                    attributes={"shop.order_id": "o-1", "rpc.system": "grpc"},
                ),
                instance="orders-1",
            ),
        ]
    )  # fmt: skip

    assert added == 2
    assert store.trace(trace_id(1)) == [
        Span(
            trace_id=trace_id(1), span_id=span_id(1), parent_span_id="", service="edge",
            instance="", name="ingress", kind="SERVER", start_ns=ns(0), end_ns=ns(9),
            status="UNSET", status_message="", attributes={},
        ),
        Span(
            trace_id=trace_id(1), span_id=span_id(2), parent_span_id=span_id(1),
            service="orders", instance="orders-1", name="PlaceOrder", kind="CLIENT",
            start_ns=ns(1), end_ns=ns(8.5), status="ERROR", status_message="out of stock",
            attributes={"shop.order_id": "o-1", "rpc.system": "grpc"},
        ),
    ]  # fmt: skip
    assert store.trace(trace_id(1))[1].duration_ms == 7.5


def test_attribute_values_are_kept_as_text(store: TraceStore) -> None:
    span = otlp_span(1, 1)
    span.attributes.extend(
        [
            KeyValue(key="int", value=AnyValue(int_value=42)),
            KeyValue(key="double", value=AnyValue(double_value=0.25)),
            KeyValue(key="bool", value=AnyValue(bool_value=True)),
            KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x01\xff")),
            KeyValue(
                key="array",
                value=AnyValue(array_value=ArrayValue(values=[string("a"), AnyValue(int_value=1)])),
            ),
        ]
    )
    store.add([batch("orders", span)])

    assert store.trace(trace_id(1))[0].attributes == {
        "int": "42",
        "double": "0.25",
        "bool": "true",
        "bytes": "01ff",
        "array": '["a", "1"]',
    }


def test_a_trace_is_ordered_by_start_time(store: TraceStore) -> None:
    store.add([batch("orders", otlp_span(1, 3, start_ms=5), otlp_span(1, 1, start_ms=0))])
    store.add([batch("payments", otlp_span(1, 2, start_ms=2), otlp_span(2, 4, start_ms=1))])

    assert [span.span_id for span in store.trace(trace_id(1))] == [
        span_id(1),
        span_id(2),
        span_id(3),
    ]
    assert store.trace(trace_id(99)) == []


def test_a_span_exported_twice_is_kept_once(store: TraceStore) -> None:
    export = [batch("orders", otlp_span(1, 1, attributes={"shop.order_id": "o-1"}))]

    assert store.add(export) == 1
    assert store.add(export) == 0
    assert len(store.trace(trace_id(1))) == 1


def test_keeps_only_the_newest_spans(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.db", max_spans=5)
    try:
        spans = [otlp_span(n, n, attributes={"shop.order_id": f"o-{n}"}) for n in range(1, 11)]
        assert store.add([batch("orders", *spans[:7])]) == 7
        assert store.add([batch("orders", *spans[7:])]) == 3

        kept = [n for n in range(1, 11) if store.trace(trace_id(n))]
        assert kept == [6, 7, 8, 9, 10]
        assert store.traces_with("shop.order_id", "o-5") == []
        assert store.traces_with("shop.order_id", "o-6") == [trace_id(6)]
    finally:
        store.close()


def test_the_bound_holds_across_reopening(tmp_path: Path) -> None:
    with_room = TraceStore(tmp_path / "traces.db", max_spans=10)
    with_room.add([batch("orders", *(otlp_span(n, n) for n in range(1, 9)))])
    with_room.close()

    smaller = TraceStore(tmp_path / "traces.db", max_spans=3)
    try:
        smaller.add([batch("orders", otlp_span(9, 9))])
        assert [n for n in range(1, 10) if smaller.trace(trace_id(n))] == [7, 8, 9]
    finally:
        smaller.close()


def test_traces_with_finds_an_orders_traces_newest_first(store: TraceStore) -> None:
    store.add(
        [
            batch("orders", otlp_span(1, 1, start_ms=0, attributes={"shop.order_id": "o-1"})),
            batch("orders", otlp_span(2, 2, start_ms=50, attributes={"shop.order_id": "o-2"})),
            batch("payments", otlp_span(3, 3, start_ms=90, attributes={"shop.order_id": "o-1"})),
            batch("payments", otlp_span(3, 4, start_ms=95, attributes={"shop.order_id": "o-1"})),
        ]
    )

    assert store.traces_with("shop.order_id", "o-1") == [trace_id(3), trace_id(1)]
    assert store.traces_with("shop.order_id", "o-2") == [trace_id(2)]
    assert store.traces_with("shop.order_id", "o-3") == []
    assert store.traces_with("rpc.system", "o-1") == []


def test_slowest_ranks_traces_by_their_whole_duration(store: TraceStore) -> None:
    store.add(
        [
            batch("edge", otlp_span(1, 1, name="GET /v1/products", start_ms=0, end_ms=5)),
            # The root is short, its child outlives it: the trace still took 40 ms.
            batch("edge", otlp_span(2, 2, name="POST /v1/orders", start_ms=10, end_ms=12)),
            batch("orders", otlp_span(2, 3, parent=2, start_ms=11, end_ms=50, error="timeout")),
            # Only a child of a caller outside the store: its earliest span stands for it.
            batch("payments", otlp_span(3, 4, parent=99, name="Authorize", start_ms=0, end_ms=20)),
        ]
    )

    assert store.summaries() == [
        TraceSummary(trace_id(2), "edge", "POST /v1/orders", ns(10), 40.0, spans=2, errors=1),
        TraceSummary(trace_id(3), "payments", "Authorize", ns(0), 20.0, spans=1, errors=0),
        TraceSummary(trace_id(1), "edge", "GET /v1/products", ns(0), 5.0, spans=1, errors=0),
    ]
    assert [summary.trace_id for summary in store.summaries(TraceSearch(limit=1))] == [trace_id(2)]


def _calls_between_services(store: TraceStore) -> None:
    """Trace 1: the edge calls catalog. Trace 2: the edge calls orders, which calls catalog
    and fails. Trace 3: orders alone."""
    store.add(
        [
            batch("edge", otlp_span(1, 1, name="GET /v1/products", start_ms=0, end_ms=5)),
            batch("catalog-sidecar", otlp_span(1, 2, parent=1, start_ms=1, end_ms=4)),
            batch("edge", otlp_span(2, 3, name="POST /v1/orders", start_ms=10, end_ms=30)),
            batch("orders", otlp_span(2, 4, parent=3, start_ms=11, end_ms=29)),
            batch("catalog", otlp_span(2, 5, parent=4, start_ms=12, end_ms=20, error="gone")),
            batch("orders", otlp_span(3, 6, name="Relay", start_ms=40, end_ms=41)),
        ]
    )


def test_a_search_lists_the_latest_traces_first(store: TraceStore) -> None:
    _calls_between_services(store)
    found = store.summaries(TraceSearch(order=RECENT))
    assert [s.trace_id for s in found] == [trace_id(3), trace_id(2), trace_id(1)]


def test_a_search_by_service_keeps_every_span_of_the_traces_it_finds(store: TraceStore) -> None:
    _calls_between_services(store)
    found = store.summaries(TraceSearch(services=("catalog", "catalog-sidecar")))
    assert [(s.trace_id, s.spans) for s in found] == [(trace_id(2), 3), (trace_id(1), 2)]


def test_a_search_by_call_finds_the_traces_where_one_service_called_the_other(
    store: TraceStore,
) -> None:
    _calls_between_services(store)
    catalog = ("catalog", "catalog-sidecar")
    from_edge = store.summaries(TraceSearch(calls=(("edge",), catalog)))
    assert [s.trace_id for s in from_edge] == [trace_id(1)]
    from_orders = store.summaries(TraceSearch(calls=(("orders", "orders-sidecar"), catalog)))
    assert [s.trace_id for s in from_orders] == [trace_id(2)]
    assert store.summaries(TraceSearch(calls=(catalog, ("orders",)))) == []


def test_a_search_for_errors_finds_only_traces_with_a_failed_span(store: TraceStore) -> None:
    _calls_between_services(store)
    found = store.summaries(TraceSearch(errors_only=True, services=("orders",)))
    assert [(s.trace_id, s.errors) for s in found] == [(trace_id(2), 1)]


def test_a_search_in_an_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError, match="order is 'slowest' or 'recent'"):
        TraceSearch(order="fastest")


def span(
    span: int,
    parent: int | None,
    service: str,
    name: str,
    start_ms: float,
    end_ms: float,
    error: str = "",
) -> Span:
    """A stored span of trace 1, for rendering."""
    return Span(
        trace_id=trace_id(1),
        span_id=span_id(span),
        parent_span_id="" if parent is None else span_id(parent),
        service=service,
        instance="",
        name=name,
        kind="SERVER",
        start_ns=ns(start_ms),
        end_ns=ns(end_ms),
        status="ERROR" if error else "OK",
        status_message=error,
        attributes={},
    )


#: The waterfall of `WATERFALL_SPANS`: an orphan (its parent is elsewhere) at the top.
WATERFALL = f"""\
trace {trace_id(1)}: 6 spans, 20.00 ms, 1 error
 start ms    dur ms  service  operation        status timeline
     0.00     20.00  edge     POST /v1/orders  ok     |██████████████████████████████|
     2.00     16.00  orders     PlaceOrder     ok     |   ████████████████████████   |
     4.00      6.00  stock        Reserve      ERROR  |      █████████               | out of stock
    11.00      5.00  pay          Authorize    ok     |                ████████      |
    17.00      0.10  orders       commit       ok     |                          ▏   |
    19.00      1.00  mail     SendMail         ok     |                            ██|"""


def test_waterfall_nests_children_under_their_parent_in_start_order() -> None:
    spans = [
        span(4, 2, "pay", "Authorize", 11, 16),
        span(6, 77, "mail", "SendMail", 19, 20),
        span(3, 2, "stock", "Reserve", 4, 10, error="out of stock"),
        span(2, 1, "orders", "PlaceOrder", 2, 18),
        span(5, 2, "orders", "commit", 17, 17.1),
        span(1, None, "edge", "POST /v1/orders", 0, 20),
    ]

    assert render_waterfall(spans) == WATERFALL


def test_waterfall_of_nothing() -> None:
    assert render_waterfall([]) == "no spans"
