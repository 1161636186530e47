"""The orders' part in the saga: follow each order's steps to its final status.

Every step another service reports is added to the order's history, with its time.
The order ends exactly once, and says so with one event:

* `ShipmentScheduled` and `PaymentCaptured`, whichever comes last -> CONFIRMED
  (`OrderConfirmed`): stock held, money taken, parcel scheduled.
* `StockRejected` -> CANCELLED (`OrderCancelled`): nothing was done, nothing to undo.
* `PaymentDeclined` or `ShipmentFailed` -> a failed step; the other services compensate
  in reverse (payments refunds after a failed shipment, inventory releases after a
  declined or refunded payment), and `StockReleased`, the last compensation, makes the
  order CANCELLED with the first failure as its reason. So a CANCELLED order has had
  its money and stock given back.

A step that arrives after the order ended (the customer cancelled meanwhile) is kept in
the history and changes nothing else: the cancellation compensates it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.events import subject
from mesh.runtime.money import Money
from mesh.runtime.storage import utc_now
from services.orders.domain import (
    Order,
    OrderStatus,
    StepOutcome,
    ended,
    first_failure,
    order_not_found,
    with_step,
)
from services.orders.messages import order_ended
from services.orders.ports import OrdersStore
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)

Step = Callable[[Order, events_pb2.EventEnvelope], Order]


def _reserved(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    units = sum(line.quantity for line in envelope.stock_reserved.lines)
    return with_step(
        order, "StockReserved", StepOutcome.SUCCEEDED, f"{units} units reserved.", _now(envelope)
    )


def _rejected(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    reason = f"Out of stock: {envelope.stock_rejected.reason}"
    failed = with_step(order, "StockRejected", StepOutcome.FAILED, reason, _now(envelope))
    return _cancelled(failed, envelope)


def _captured(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    event = envelope.payment_captured
    detail = f"{Money.from_proto(event.amount)} captured."
    captured = with_step(order, "PaymentCaptured", StepOutcome.SUCCEEDED, detail, _now(envelope))
    return _confirmed_when_done(replace(captured, payment_id=event.payment_id), envelope)


def _declined(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    reason = f"Payment declined: {envelope.payment_declined.reason}"
    return with_step(order, "PaymentDeclined", StepOutcome.FAILED, reason, _now(envelope))


def _scheduled(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    event = envelope.shipment_scheduled
    detail = f"Parcel {event.tracking_number} scheduled with {event.carrier}."
    scheduled = replace(
        with_step(order, "ShipmentScheduled", StepOutcome.SUCCEEDED, detail, _now(envelope)),
        shipment_id=event.shipment_id,
        tracking_number=event.tracking_number,
    )
    return _confirmed_when_done(scheduled, envelope)


#: The steps a PENDING order is CONFIRMED after, in whichever order their events come.
CONFIRMING_STEPS = frozenset({"PaymentCaptured", "ShipmentScheduled"})


def _confirmed_when_done(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    """`order` CONFIRMED once its history has every one of CONFIRMING_STEPS, if it is
    still PENDING. Shipping schedules only after the capture, but after a crash of
    orders' consumer the capture's event comes again after the scheduling's, and an
    order is not confirmed without the payment it records."""
    recorded = {step.name for step in order.history}
    if order.status is not OrderStatus.PENDING or not CONFIRMING_STEPS.issubset(recorded):
        return order
    return ended(order, OrderStatus.CONFIRMED, "The order is confirmed.", _now(envelope))


def _shipment_failed(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    reason = f"Shipment failed: {envelope.shipment_failed.reason}"
    return with_step(order, "ShipmentFailed", StepOutcome.FAILED, reason, _now(envelope))


def _refunded(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    event = envelope.payment_refunded
    detail = f"{Money.from_proto(event.amount)} refunded ({event.reason})."
    return with_step(order, "PaymentRefunded", StepOutcome.COMPENSATED, detail, _now(envelope))


def _released(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    detail = f"Stock released ({envelope.stock_released.reason})."
    released = with_step(order, "StockReleased", StepOutcome.COMPENSATED, detail, _now(envelope))
    return _cancelled(released, envelope)


def _cancelled(order: Order, envelope: events_pb2.EventEnvelope) -> Order:
    """`order` CANCELLED for its first failure, if it is still PENDING."""
    if order.status is not OrderStatus.PENDING:
        return order
    reason = first_failure(order) or "compensated"
    return ended(
        order, OrderStatus.CANCELLED, f"Cancelled: {reason}", _now(envelope), cancel_reason=reason
    )


def _now(envelope: events_pb2.EventEnvelope) -> datetime:
    """When the step happened: when its event was raised (else now)."""
    if envelope.HasField("occurred_at"):
        return envelope.occurred_at.ToDatetime(tzinfo=UTC)
    return utc_now()


STEPS: dict[str, Step] = {
    subject("inventory", "stock_reserved"): _reserved,
    subject("inventory", "stock_rejected"): _rejected,
    subject("inventory", "stock_released"): _released,
    subject("payments", "payment_captured"): _captured,
    subject("payments", "payment_declined"): _declined,
    subject("payments", "payment_refunded"): _refunded,
    subject("shipping", "shipment_scheduled"): _scheduled,
    subject("shipping", "shipment_failed"): _shipment_failed,
}


def handlers(joined: Callable[[Connection], OrdersStore]) -> dict[str, Handler]:
    """The handler of each subject orders consumes: each adds its step (see `STEPS`)."""

    def follow(step: Step) -> Handler:
        async def handle(delivery: Delivery) -> None:
            envelope = delivery.envelope
            async with (
                delivery.transaction() as connection,
                joined(connection).transaction() as tx,
            ):
                order = await tx.get(envelope.order_id)
                if order is None:
                    raise order_not_found(envelope.order_id)
                after = step(order, envelope)
                if not await tx.save(after, was=order.status):
                    raise RuntimeError(f"order {order.id} changed meanwhile")
                if after.status is not order.status:
                    await tx.enqueue_event(order_ended(after))
                    log.info(
                        "order %s %s %s", after.id, after.status.name.lower(), after.cancel_reason
                    )

        return handle

    return {name: follow(step) for name, step in STEPS.items()}
