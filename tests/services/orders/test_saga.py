"""How each saga event moves an order (services.orders.saga.STEPS), without a database."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message

from mesh.runtime.events import new_event, subject
from mesh.runtime.money import Money
from services.orders.domain import (
    Order,
    OrderLine,
    OrderStatus,
    ShippingAddress,
    StepOutcome,
    cancelled_order,
    new_order,
)
from services.orders.saga import STEPS
from shop.events.v1 import events_pb2

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def order() -> Order:
    line = OrderLine("p1", "Tea", 2, Money("EUR", 300))
    return new_order(
        customer_id="c1",
        lines=(line,),
        shipping_address=ShippingAddress("DE", postal_code="10115"),
        payment_token="tok_visa",
        now=NOW,
    )


def apply(current: Order, producer: str, event: str, payload: Message) -> Order:
    return STEPS[subject(producer, event)](current, new_event(producer, current.id, payload))


def test_a_scheduled_shipment_confirms_a_pending_order() -> None:
    placed = order()
    reserved = apply(placed, "inventory", "stock_reserved", events_pb2.StockReserved())
    captured = apply(
        reserved,
        "payments",
        "payment_captured",
        events_pb2.PaymentCaptured(payment_id="pay1", amount=Money("EUR", 600).to_proto()),
    )
    confirmed = apply(
        captured,
        "shipping",
        "shipment_scheduled",
        events_pb2.ShipmentScheduled(shipment_id="s1", tracking_number="SHPX", carrier="DHL"),
    )
    assert confirmed.status is OrderStatus.CONFIRMED
    assert (confirmed.payment_id, confirmed.shipment_id, confirmed.tracking_number) == (
        "pay1", "s1", "SHPX",
    )  # fmt: skip
    assert [s.name for s in confirmed.history] == [
        "OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentScheduled", "OrderConfirmed",
    ]  # fmt: skip
    assert captured.history[-1].detail == "6.00 EUR captured."


def test_a_capture_that_comes_after_the_scheduling_confirms_the_order_then() -> None:
    reserved = apply(order(), "inventory", "stock_reserved", events_pb2.StockReserved())
    scheduled = apply(
        reserved,
        "shipping",
        "shipment_scheduled",
        events_pb2.ShipmentScheduled(shipment_id="s1", tracking_number="SHPX", carrier="DHL"),
    )
    assert (scheduled.status, scheduled.payment_id) == (OrderStatus.PENDING, "")
    confirmed = apply(
        scheduled,
        "payments",
        "payment_captured",
        events_pb2.PaymentCaptured(payment_id="pay1", amount=Money("EUR", 600).to_proto()),
    )
    assert (confirmed.status, confirmed.payment_id) == (OrderStatus.CONFIRMED, "pay1")
    assert [s.name for s in confirmed.history] == [
        "OrderPlaced", "StockReserved", "ShipmentScheduled", "PaymentCaptured", "OrderConfirmed",
    ]  # fmt: skip


def test_a_failure_cancels_only_once_its_compensation_is_done() -> None:
    declined = apply(
        order(), "payments", "payment_declined", events_pb2.PaymentDeclined(reason="card_declined")
    )
    assert declined.status is OrderStatus.PENDING  # the stock is still held
    assert declined.history[-1].outcome is StepOutcome.FAILED
    released = apply(declined, "inventory", "stock_released", events_pb2.StockReleased())
    assert released.status is OrderStatus.CANCELLED
    assert released.cancel_reason == "Payment declined: card_declined"
    assert [s.outcome for s in released.history[-2:]] == [
        StepOutcome.COMPENSATED, StepOutcome.SUCCEEDED,
    ]  # fmt: skip


def test_rejected_stock_cancels_at_once() -> None:
    rejected = apply(
        order(), "inventory", "stock_rejected", events_pb2.StockRejected(reason="not enough")
    )
    assert rejected.status is OrderStatus.CANCELLED
    assert rejected.cancel_reason == "Out of stock: not enough"


def test_a_step_after_the_customer_cancelled_is_recorded_and_changes_nothing() -> None:
    cancelled = cancelled_order(order(), "changed my mind", NOW)
    late = apply(
        cancelled,
        "shipping",
        "shipment_scheduled",
        events_pb2.ShipmentScheduled(shipment_id="s1", tracking_number="SHPX", carrier="DHL"),
    )
    assert late.status is OrderStatus.CANCELLED
    assert late.cancel_reason == "changed my mind"
    released = apply(late, "inventory", "stock_released", events_pb2.StockReleased())
    assert released.status is OrderStatus.CANCELLED
    assert [s.name for s in released.history][-3:] == [
        "OrderCancelled", "ShipmentScheduled", "StockReleased",
    ]  # fmt: skip


def test_steps_take_the_time_their_event_was_raised() -> None:
    event = new_event("inventory", "o1", events_pb2.StockReserved())
    event.occurred_at.FromDatetime(datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC))
    reserved = STEPS[subject("inventory", "stock_reserved")](order(), event)
    assert reserved.history[-1].time == datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)
