"""Inventory's part in the order saga.

* `OrderPlaced` -> hold every line of the order, or nothing: `StockReserved` or
  `StockRejected` (a product without stock, or too few units).
* `PaymentDeclined`, `PaymentRefunded`, `OrderCancelled` -> give the held units back
  (the saga compensating): `StockReleased`, once, whichever comes first.
* `OrderConfirmed` -> the held units leave the stock for good (the reservation is
  committed).

The decisions (what an event asks of the stock, and which event reports the outcome)
are pure functions of the event and the reservation; `handlers` applies them, with the
inventory's use cases, in the event's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mesh.runtime import telemetry
from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from mesh.runtime.events import new_event, subject
from mesh.runtime.storage import enqueue_event
from services.inventory.domain import Reservation, ReservationLine, ReservationStatus
from services.inventory.handlers import (
    ReserveStock,
    commit_reservation,
    release_for_order,
    reserve_stock,
)
from services.inventory.ports import InventoryStore
from shop.events.v1 import events_pb2

PRODUCER = "inventory"

log = logging.getLogger(__name__)

#: The errors with which the stock refuses an order (it is rejected, not retried).
REFUSALS = (FailedPrecondition, NotFound, InvalidArgument)
Refusal = FailedPrecondition | NotFound | InvalidArgument


def reservation_of(envelope: events_pb2.EventEnvelope) -> ReserveStock:
    """What `OrderPlaced` asks of the stock: every line of the order, held for it."""
    lines = envelope.order_placed.lines
    return ReserveStock(
        envelope.order_id, tuple(ReservationLine(line.product_id, line.quantity) for line in lines)
    )


def reservation_reported(
    envelope: events_pb2.EventEnvelope, outcome: Reservation | Refusal
) -> events_pb2.StockReserved | events_pb2.StockRejected | None:
    """The event that tells the saga how the order's stock was reserved; None when the
    order was cancelled before its stock was reserved (nothing is held, nothing to say)."""
    if not isinstance(outcome, Reservation):
        return _rejected(envelope.order_id, outcome)
    if outcome.status is not ReservationStatus.RESERVED:
        return None
    return events_pb2.StockReserved(order_id=envelope.order_id, lines=envelope.order_placed.lines)


def _rejected(order_id: str, refusal: Refusal) -> events_pb2.StockRejected:
    products = refusal.metadata.get("product_ids") or refusal.metadata.get("product_id", "")
    return events_pb2.StockRejected(
        order_id=order_id,
        reason=refusal.message,
        unavailable_product_ids=[p for p in products.split(",") if p],
    )


def release_reported(
    envelope: events_pb2.EventEnvelope, released: Reservation | None
) -> events_pb2.StockReleased | None:
    """`StockReleased` for the units the compensation gave back; None when it gave back
    nothing (released before, committed, or never held)."""
    if released is None:
        return None
    return events_pb2.StockReleased(order_id=envelope.order_id, reason=_release_reason(envelope))


def _release_reason(envelope: events_pb2.EventEnvelope) -> str:
    kind = envelope.WhichOneof("payload")
    if kind == "payment_declined":
        return f"payment declined: {envelope.payment_declined.reason}"
    if kind == "payment_refunded":
        return f"payment refunded: {envelope.payment_refunded.reason}"
    return f"order cancelled: {envelope.order_cancelled.reason}"


def handlers(joined: Callable[[Connection], InventoryStore]) -> dict[str, Handler]:
    """The handler of each subject inventory consumes; `joined` puts the store in a delivery's
    transaction (`SqlStore.within`)."""

    async def reserve(delivery: Delivery) -> None:
        envelope = delivery.envelope
        async with delivery.transaction() as connection:
            outcome = await _reserve(joined(connection), reservation_of(envelope))
            event = reservation_reported(envelope, outcome)
            if event is not None:
                await enqueue_event(connection, new_event(PRODUCER, envelope.order_id, event))

    async def release(delivery: Delivery) -> None:
        envelope = delivery.envelope
        async with delivery.transaction() as connection:
            released = await release_for_order(joined(connection), envelope.order_id)
            event = release_reported(envelope, released)
            if event is not None:
                log.info("stock of order %s released: %s", envelope.order_id, event.reason)
                await enqueue_event(connection, new_event(PRODUCER, envelope.order_id, event))

    async def commit(delivery: Delivery) -> None:
        async with delivery.transaction() as connection:
            await commit_reservation(joined(connection), delivery.envelope.order_id)

    return {
        subject("orders", "order_placed"): reserve,
        subject("payments", "payment_declined"): release,
        subject("payments", "payment_refunded"): release,
        subject("orders", "order_cancelled"): release,
        subject("orders", "order_confirmed"): commit,
    }


async def _reserve(store: InventoryStore, command: ReserveStock) -> Reservation | Refusal:
    """Hold the order's stock; a refusal is the answer to report, not a failure to retry."""
    try:
        with telemetry.tracer.start_as_current_span("reserve stock"):
            return await reserve_stock(store, command)
    except REFUSALS as refusal:
        log.info("stock for order %s refused: %s", command.order_id, refusal.message)
        return refusal
