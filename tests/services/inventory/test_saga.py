"""Inventory's saga decisions (services.inventory.saga): what each event asks of the
stock and which event reports the outcome, on plain values, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.events import new_event
from services.inventory.domain import (
    Reservation,
    ReservationLine,
    committed,
    insufficient_stock,
    never_reserved,
    new_reservation,
    released,
    stock_not_found,
)
from services.inventory.saga import release_reported, reservation_of, reservation_reported
from shop.events.v1 import events_pb2

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def event(producer: str, payload: Message) -> events_pb2.EventEnvelope:
    return new_event(producer, "o1", payload)


def placed() -> events_pb2.EventEnvelope:
    lines = [
        events_pb2.OrderLine(product_id="tea", quantity=2),
        events_pb2.OrderLine(product_id="mug", quantity=1),
    ]
    return event("orders", events_pb2.OrderPlaced(order_id="o1", lines=lines))


def reservation() -> Reservation:
    return new_reservation("o1", reservation_of(placed()).lines, NOW)


def test_an_order_asks_to_hold_every_one_of_its_lines() -> None:
    command = reservation_of(placed())
    assert command.order_id == "o1"
    assert command.lines == (ReservationLine("tea", 2), ReservationLine("mug", 1))


def test_held_stock_is_reported_with_the_order_lines() -> None:
    reported = reservation_reported(placed(), reservation())
    assert isinstance(reported, events_pb2.StockReserved)
    assert reported.order_id == "o1"
    assert [(line.product_id, line.quantity) for line in reported.lines] == [
        ("tea", 2), ("mug", 1),
    ]  # fmt: skip


def test_an_order_cancelled_before_its_reservation_reports_nothing() -> None:
    assert reservation_reported(placed(), never_reserved("o1", NOW)) is None
    assert reservation_reported(placed(), released(reservation(), NOW)) is None


def test_an_order_whose_reservation_is_committed_reports_nothing() -> None:
    assert reservation_reported(placed(), committed(reservation(), NOW)) is None


def test_too_few_units_reject_the_order_naming_every_short_product() -> None:
    refusal = insufficient_stock(["mug", "tea"])
    reported = reservation_reported(placed(), refusal)
    assert isinstance(reported, events_pb2.StockRejected)
    assert reported.order_id == "o1"
    assert reported.reason == refusal.message
    assert list(reported.unavailable_product_ids) == ["mug", "tea"]


def test_a_product_without_stock_rejects_the_order_naming_it() -> None:
    reported = reservation_reported(placed(), stock_not_found("pen"))
    assert isinstance(reported, events_pb2.StockRejected)
    assert reported.reason == "product 'pen' has no stock"
    assert list(reported.unavailable_product_ids) == ["pen"]


def test_malformed_lines_reject_the_order_naming_no_product() -> None:
    refusal = InvalidArgument.of([FieldViolation("lines", "At least one line must be reserved.")])
    reported = reservation_reported(placed(), refusal)
    assert isinstance(reported, events_pb2.StockRejected)
    assert reported.reason == "invalid request: lines: At least one line must be reserved."
    assert list(reported.unavailable_product_ids) == []


def test_a_release_is_reported_with_the_reason_of_the_event_that_asked_for_it() -> None:
    given_back = released(reservation(), NOW)
    causes = {
        "payment declined: card_declined": event(
            "payments", events_pb2.PaymentDeclined(reason="card_declined")
        ),
        "payment refunded: shipment failed: too heavy": event(
            "payments", events_pb2.PaymentRefunded(reason="shipment failed: too heavy")
        ),
        "order cancelled: changed my mind": event(
            "orders", events_pb2.OrderCancelled(reason="changed my mind")
        ),
    }
    for reason, cause in causes.items():
        reported = release_reported(cause, given_back)
        assert isinstance(reported, events_pb2.StockReleased)
        assert (reported.order_id, reported.reason) == ("o1", reason)


def test_a_release_that_gave_nothing_back_reports_nothing() -> None:
    cancelled = event("orders", events_pb2.OrderCancelled(reason="changed my mind"))
    assert release_reported(cancelled, None) is None
