"""Shipping's part in the order saga.

* `OrderPlaced` -> remember the customer, address and weight (`mesh.runtime.saga`; the card
  token is not kept).
* `PaymentCaptured` -> schedule the order's one shipment: `ShipmentScheduled`, or
  `ShipmentFailed` when the parcel cannot be sent (the carrier finds no delivery address;
  or what orders refuses before a saga starts: no postal code or address line, a
  malformed region, too heavy), which makes payments refund and inventory release.
* `OrderCancelled` -> call the shipment off if there is one; never ship a cancelled order.

The decisions (what to ship, what to call off, and the event that reports a shipment)
are pure functions of the event, the order's placement and its shipment; `handlers`
reads them, and applies the decisions with shipping's use cases, in the event's
transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.errors import FailedPrecondition, InvalidArgument
from mesh.runtime.events import new_event, subject
from mesh.runtime.saga import placed_order, remember_cancelled, remember_placements
from mesh.runtime.storage import enqueue_event
from services.shipping.domain import Shipment
from services.shipping.handlers import (
    CancelShipment,
    CreateShipment,
    cancel_shipment,
    create_shipment,
)
from services.shipping.ports import ShippingStore
from services.shipping.servicer import destination_from_proto
from shop.events.v1 import events_pb2

PRODUCER = "shipping"
#: Why a parcel cannot be sent: an address or weight it refuses, or the carrier's answer.
Refused = InvalidArgument | FailedPrecondition

log = logging.getLogger(__name__)


def shipment_of(
    order_id: str, placed: events_pb2.OrderPlaced, cancelled: bool
) -> CreateShipment | None:
    """What `PaymentCaptured` asks of shipping: the order's one parcel, to the address
    it was placed with; None for a cancelled order, which is never shipped."""
    if cancelled:
        return None
    return CreateShipment(
        order_id=order_id,
        customer_id=placed.customer_id,
        destination=destination_from_proto(placed.shipping_address),
        weight_grams=placed.weight_grams,
        request_id=f"order-{order_id}",
    )


def shipment_reported(
    order_id: str, outcome: Shipment | Refused
) -> events_pb2.ShipmentScheduled | events_pb2.ShipmentFailed:
    """The event that tells the saga whether the parcel was scheduled, or why it cannot
    be sent."""
    if isinstance(outcome, Refused):
        return events_pb2.ShipmentFailed(order_id=order_id, reason=outcome.message)
    return events_pb2.ShipmentScheduled(
        order_id=order_id,
        shipment_id=outcome.id,
        tracking_number=outcome.tracking_number,
        carrier=outcome.carrier,
    )


def call_off_of(
    envelope: events_pb2.EventEnvelope, shipment: Shipment | None
) -> CancelShipment | None:
    """What `OrderCancelled` asks of the order's shipment: to be called off, if there is
    one."""
    if shipment is None:
        return None
    order_id = envelope.order_id
    reason = f"order cancelled: {envelope.order_cancelled.reason}"
    return CancelShipment(shipment.id, reason, f"cancel-{order_id}")


def handlers(joined: Callable[[Connection], ShippingStore]) -> dict[str, Handler]:
    """The handler of each subject shipping consumes."""

    async def schedule(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        async with delivery.transaction() as connection:
            placed, cancelled = await placed_order(connection, order_id)
            command = shipment_of(order_id, placed, cancelled)
            if command is None:
                return
            outcome = await _create(joined(connection), command)
            event = shipment_reported(order_id, outcome)
            await enqueue_event(connection, new_event(PRODUCER, order_id, event))

    async def call_off(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        async with delivery.transaction() as connection:
            await remember_cancelled(connection, order_id)
            store = joined(connection)
            async with store.snapshot() as tx:
                shipment = await tx.get_by_order(order_id)
            command = call_off_of(delivery.envelope, shipment)
            if command is not None:
                await cancel_shipment(store, command)

    return {
        subject("orders", "order_placed"): remember_placements(without=["payment_token"]),
        subject("payments", "payment_captured"): schedule,
        subject("orders", "order_cancelled"): call_off,
    }


async def _create(store: ShippingStore, command: CreateShipment) -> Shipment | Refused:
    """Schedule the parcel; a parcel that cannot be sent is the answer to report, not a
    failure to retry."""
    try:
        return await create_shipment(store, command)
    except (InvalidArgument, FailedPrecondition) as refusal:
        log.info("shipment of order %s failed: %s", command.order_id, refusal.message)
        return refusal
