"""Inventory's part in the order saga.

* `OrderPlaced` -> hold every line of the order, or nothing: `StockReserved` or
  `StockRejected` (a product without stock, or too few units).
* `PaymentDeclined`, `PaymentRefunded`, `OrderCancelled` -> give the held units back
  (the saga compensating): `StockReleased`, once, whichever comes first.
* `OrderConfirmed` -> the held units leave the stock for good (the reservation is
  committed).
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
from services.inventory.domain import ReservationLine, ReservationStatus
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


def handlers(joined: Callable[[Connection], InventoryStore]) -> dict[str, Handler]:
    """The handler of each subject inventory consumes; `joined` puts the store in a delivery's
    transaction (`SqlStore.within`)."""

    async def reserve(delivery: Delivery) -> None:
        placed = delivery.envelope.order_placed
        order_id = delivery.envelope.order_id
        lines = tuple(ReservationLine(line.product_id, line.quantity) for line in placed.lines)
        async with delivery.transaction() as connection:
            try:
                with telemetry.tracer.start_as_current_span("reserve stock"):
                    command = ReserveStock(order_id, lines)
                    reservation = await reserve_stock(joined(connection), command)
            except (FailedPrecondition, NotFound, InvalidArgument) as refusal:
                products = refusal.metadata.get("product_ids") or refusal.metadata.get(
                    "product_id", ""
                )
                event = events_pb2.StockRejected(
                    order_id=order_id,
                    reason=refusal.message,
                    unavailable_product_ids=[p for p in products.split(",") if p],
                )
                await enqueue_event(connection, new_event(PRODUCER, order_id, event))
                log.info("stock for order %s refused: %s", order_id, refusal.message)
                return
            if reservation.status is ReservationStatus.RESERVED:
                reserved = events_pb2.StockReserved(order_id=order_id, lines=placed.lines)
                await enqueue_event(connection, new_event(PRODUCER, order_id, reserved))
            # else the order was cancelled before its stock was reserved: nothing to do

    async def release(delivery: Delivery) -> None:
        envelope = delivery.envelope
        async with delivery.transaction() as connection:
            released = await release_for_order(joined(connection), envelope.order_id)
            if released is not None:
                event = events_pb2.StockReleased(
                    order_id=envelope.order_id, reason=_release_reason(envelope)
                )
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


def _release_reason(envelope: events_pb2.EventEnvelope) -> str:
    kind = envelope.WhichOneof("payload")
    if kind == "payment_declined":
        return f"payment declined: {envelope.payment_declined.reason}"
    if kind == "payment_refunded":
        return f"payment refunded: {envelope.payment_refunded.reason}"
    return f"order cancelled: {envelope.order_cancelled.reason}"
