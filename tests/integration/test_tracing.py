"""One trace per order: edge, sidecars, services and NATS hops, read from the mesh's
trace store; and the services' log lines carry the same trace ids."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.type import postal_address_pb2

from mesh.control.topology import load
from mesh.control.tracestore import Span, TraceStore
from mesh.runtime.telemetry import DEADLINE_ATTRIBUTE
from shop.orders.v1 import orders_service_pb2 as orders_pb
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc
from tests.support.mesh import RunningMesh, bearer, customer
from tests.support.saga import CANCELLED, CONFIRMED, place, stocked_product, wait_until_terminal
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: (parent's service, child's service, child's kind): the hops of an order's trace.
SYNC_HOPS = [
    ("edge", "orders-sidecar", "SERVER"),  # the edge calls the orders sidecar
    ("orders-sidecar", "orders", "SERVER"),  # which calls the orders app
    ("orders", "orders-sidecar", "CLIENT"),  # orders prices the order: out via its sidecar
    ("orders-sidecar", "catalog-sidecar", "SERVER"),  # over mTLS to catalog's sidecar
    ("catalog-sidecar", "catalog", "SERVER"),
]
#: The saga over NATS: each step's consumer span is a child of the previous producer's
#: (payments and shipping also consume the placement, each with a span of its own).
ASYNC_HOPS = [
    ("orders", "inventory", "shop.orders.order_placed process"),
    ("inventory", "payments", "shop.inventory.stock_reserved process"),
    ("payments", "shipping", "shop.payments.payment_captured process"),
    ("shipping", "orders", "shop.shipping.shipment_scheduled process"),
]


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as client:
        yield client


def order_trace(mesh: RunningMesh, order_id: str, timeout: float = 30) -> list[Span]:
    """The spans of the order's trace once every hop has arrived (each process exports
    its spans in batches, on its own schedule)."""
    steps: set[tuple[str, str]] = set()

    def complete() -> list[Span] | None:
        found = traces_of(mesh, order_id)
        store = TraceStore(mesh.run_dir / "traces" / "traces.db")
        try:
            spans = store.trace(found[-1]) if found else []
        finally:
            store.close()
        steps.clear()
        steps.update((span.service, span.name) for span in spans)
        arrived = _async_steps_with_parents(spans) and _hops(spans) >= set(SYNC_HOPS)
        return spans if arrived else None

    return wait_until(
        complete, lambda: f"trace of {order_id} complete: {sorted(steps)}", timeout, 0.25
    )


def _async_steps_with_parents(spans: list[Span]) -> bool:
    """Whether every saga step's consumer span and the producer span it continues
    have arrived (the two come from different processes)."""
    ids = {span.span_id for span in spans}
    steps = {(span.service, span.name): span for span in spans}
    return all(
        (service, name) in steps and steps[service, name].parent_span_id in ids
        for _, service, name in ASYNC_HOPS
    )


def _hops(spans: list[Span]) -> set[tuple[str, str, str]]:
    by_id = {span.span_id: span for span in spans}
    return {
        (by_id[span.parent_span_id].service, span.service, span.kind)
        for span in spans
        if span.parent_span_id in by_id
    }


def test_an_order_is_one_trace_from_the_edge_through_every_saga_step(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    order_id = ended_order(edge, mesh, "tok_visa", CONFIRMED)
    spans = order_trace(mesh, order_id)
    assert len({span.trace_id for span in spans}) == 1
    hops = _hops(spans)
    for hop in SYNC_HOPS:
        assert hop in hops, f"no {hop} in {sorted(hops)}"
    by_id = {span.span_id: span for span in spans}
    for producer, consumer, name in ASYNC_HOPS:
        [step] = [s for s in spans if s.name == name and s.service == consumer]
        assert step.kind == "CONSUMER"
        parent = by_id[step.parent_span_id]
        assert (parent.service, parent.kind) == (producer, "PRODUCER")
        assert step.attributes["shop.order_id"] == order_id
    # The reservation and the outbox writes are spans of their own.
    assert any(s.name == "reserve stock" and s.service == "inventory" for s in spans)
    assert any(s.name.startswith("outbox write shop.orders.order_placed") for s in spans)

    # `meshctl trace ORDER_ID` prints that trace as a waterfall.
    shown = mesh.meshctl("trace", order_id).stdout
    assert spans[0].trace_id in shown.splitlines()[0]
    for name in ("orders-sidecar", "shop.payments.payment_captured process", "catalog"):
        assert name in shown
    slow = mesh.meshctl("traces", "--slow").stdout.splitlines()
    assert slow[0].split()[:2] == ["TRACE", "MS"]
    assert len(slow) > 1

    # Log lines of the order's work carry its trace id: orders says it was placed and
    # confirmed (a step that changes nothing an operator watches logs nothing).
    assert_logged_in_trace(mesh, ("orders",), spans[0].trace_id, order_id)


def test_the_log_lines_of_a_failed_order_carry_its_trace_id(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    order_id = ended_order(edge, mesh, "tok_declined", CANCELLED)
    found = wait_until(lambda: traces_of(mesh, order_id), f"a trace of {order_id}", 30, 0.25)
    # Payments declines the card, inventory gives the stock back, orders cancels.
    assert_logged_in_trace(mesh, ("orders", "inventory", "payments"), found[-1], order_id)


def ended_order(edge: httpx.Client, mesh: RunningMesh, card: str, status: str) -> str:
    """A new customer's order of a stocked product, paid with `card`, ended in `status`."""
    admin = bearer(mesh.token("trace-admin", "catalog:write"))
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order_id = place(edge, token, product_id, payment_token=card)
    assert wait_until_terminal(edge, token, order_id)["status"] == status
    return order_id


def traces_of(mesh: RunningMesh, order_id: str) -> list[str]:
    store = TraceStore(mesh.run_dir / "traces" / "traces.db")
    try:
        return store.traces_with("shop.order_id", order_id)
    finally:
        store.close()


def assert_logged_in_trace(
    mesh: RunningMesh, services: tuple[str, ...], trace_id: str, order_id: str
) -> None:
    """Each of `services` logged a line about `order_id`, and its lines of the trace carry
    the trace and span ids."""
    for service in services:
        lines = mesh.meshctl("logs", service, "--trace", trace_id, "--json").stdout.splitlines()
        records = [json.loads(line.partition("| ")[2]) for line in lines]
        assert records, f"no {service} log line in trace {trace_id}"
        assert {r["trace_id"] for r in records} == {trace_id}
        assert any(order_id in r["message"] for r in records)
        assert all(len(r["span_id"]) == 16 and r["service"] == service for r in records)


HEADER_ROUNDING_MS = 2


def _deadline_ms(spans: list[Span], service: str, method: str) -> int:
    """How long the caller gave `service`'s server span of `method`, as it recorded it."""
    span = next(
        s for s in spans if (s.service, s.kind) == (service, "SERVER") and s.name.endswith(method)
    )
    return int(span.attributes[DEADLINE_ATTRIBUTE])


def test_each_hop_gets_only_the_time_its_caller_has_left(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    """A REST call gets the edge's timeout as its deadline, a native gRPC one its own
    `grpc-timeout`; orders passes what is left on to catalog, and orders' sidecar gives
    catalog no more than its route's timeout either way."""
    admin = bearer(mesh.token("trace-admin", "catalog:write"))
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    by_rest = place(edge, token, product_id)
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        stub: Any = orders_grpc.OrdersServiceStub(channel)
        request = orders_pb.PlaceOrderRequest(
            lines=[orders_pb.OrderLine(product_id=product_id, quantity=1)],
            shipping_address=postal_address_pb2.PostalAddress(
                region_code="DE", postal_code="10115", address_lines=["Hauptstr. 1"]
            ),
            payment_token="tok_visa",
            request_id=str(uuid.uuid4()),
        )
        by_grpc = stub.PlaceOrder(
            request, metadata=[("authorization", f"Bearer {token}")], timeout=1.5
        ).order.id
    topology = load(mesh.config)
    route_ms = topology.services["orders"].calls["catalog"].timeout * 1000
    for order_id, given_ms in ((by_rest, topology.edge.timeout * 1000), (by_grpc, 1500)):
        spans = order_trace(mesh, order_id)
        at_orders = _deadline_ms(spans, "orders", "/PlaceOrder")
        at_catalog = _deadline_ms(spans, "catalog", "/BatchGetProducts")
        assert given_ms - 1000 < at_orders <= given_ms
        # gRPC writes `grpc-timeout` rounded up (to a few significant digits, up to 1%),
        # and orders' sidecar in whole milliseconds.
        assert 0 < at_catalog <= min(at_orders * 1.01 + HEADER_ROUNDING_MS, route_ms)
    # Under the sidecar's 2 s: catalog got what orders had left (as above), not the
    # route's timeout.
    assert at_catalog < 1500 * 1.01 + HEADER_ROUNDING_MS
