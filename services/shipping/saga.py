"""Shipping's part in the order saga.

* `OrderPlaced` -> remember the customer, address and weight (`mesh.runtime.saga`; the card
  token is not kept).
* `PaymentCaptured` -> schedule the order's one shipment: `ShipmentScheduled`, or
  `ShipmentFailed` when the parcel cannot be sent (no postal code or address line, a
  malformed region, too heavy), which makes payments refund and inventory release.
* `OrderCancelled` -> call the shipment off if there is one; never ship a cancelled order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.errors import InvalidArgument
from mesh.runtime.events import new_event, subject
from mesh.runtime.saga import placed_order, remember_cancelled, remember_placements
from mesh.runtime.storage import enqueue_event
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

log = logging.getLogger(__name__)


def handlers(joined: Callable[[Connection], ShippingStore]) -> dict[str, Handler]:
    """The handler of each subject shipping consumes."""

    async def schedule(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        async with delivery.transaction() as connection:
            placed, cancelled = await placed_order(connection, order_id)
            if cancelled:
                return
            command = CreateShipment(
                order_id=order_id,
                customer_id=placed.customer_id,
                destination=destination_from_proto(placed.shipping_address),
                weight_grams=placed.weight_grams,
                request_id=f"order-{order_id}",
            )
            event: events_pb2.ShipmentScheduled | events_pb2.ShipmentFailed
            try:
                shipment = await create_shipment(joined(connection), command)
            except InvalidArgument as refusal:
                event = events_pb2.ShipmentFailed(order_id=order_id, reason=refusal.message)
                log.info("shipment of order %s failed: %s", order_id, refusal.message)
            else:
                event = events_pb2.ShipmentScheduled(
                    order_id=order_id,
                    shipment_id=shipment.id,
                    tracking_number=shipment.tracking_number,
                    carrier=shipment.carrier,
                )
            await enqueue_event(connection, new_event(PRODUCER, order_id, event))

    async def call_off(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        reason = f"order cancelled: {delivery.envelope.order_cancelled.reason}"
        async with delivery.transaction() as connection:
            await remember_cancelled(connection, order_id)
            store = joined(connection)
            async with store.snapshot() as tx:
                shipment = await tx.get_by_order(order_id)
            if shipment is not None:
                await cancel_shipment(
                    store, CancelShipment(shipment.id, reason, f"cancel-{order_id}")
                )

    return {
        subject("orders", "order_placed"): remember_placements(without=["payment_token"]),
        subject("payments", "payment_captured"): schedule,
        subject("orders", "order_cancelled"): call_off,
    }
