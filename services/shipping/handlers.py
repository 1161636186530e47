"""Shipping's use cases: each takes a command and the store, and returns domain objects.

`caller` is the subject the call names (`mesh.runtime.caller`); a read of a customer's shipment
refuses a call that names none.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.runtime.caller import customer_of
from mesh.runtime.storage import utc_now
from services.shipping.domain import (
    Destination,
    Quote,
    Shipment,
    cancelled,
    new_shipment,
    quote,
    shipment_not_found,
    visible_to,
)
from services.shipping.ports import ShippingStore


@dataclass(frozen=True)
class QuoteShipment:
    destination: Destination
    weight_grams: int


@dataclass(frozen=True)
class CreateShipment:
    order_id: str
    customer_id: str
    destination: Destination
    weight_grams: int
    request_id: str


@dataclass(frozen=True)
class CancelShipment:
    shipment_id: str
    reason: str
    request_id: str


def quote_shipment(command: QuoteShipment) -> Quote:
    return quote(command.destination, command.weight_grams)


async def get_shipment(store: ShippingStore, caller: str | None, shipment_id: str) -> Shipment:
    """The shipment, if the caller may see it; another customer's shipment does not exist."""
    customer = customer_of(caller)
    async with store.snapshot() as tx:
        shipment = await tx.get(shipment_id)
    if shipment is None or not visible_to(shipment, customer):
        raise shipment_not_found(shipment_id)
    return shipment


async def create_shipment(store: ShippingStore, command: CreateShipment) -> Shipment:
    """Schedule the shipment of an order; an order that has one already gets it back.

    A retry of the request (the same `request_id`) returns the first result, and another
    request with that id is refused (`mesh.runtime.storage.find_request`); a second request for
    the same order returns the order's shipment, so the saga can redeliver its command
    without shipping twice.
    """
    async with store.transaction() as tx:
        prior = await tx.find_request("CreateShipment", command.request_id)
        shipment = await tx.get(prior["shipment_id"]) if prior else None
        if shipment is None:
            shipment = await tx.get_by_order(command.order_id)
        if shipment is None:
            shipment = new_shipment(
                order_id=command.order_id,
                customer_id=command.customer_id,
                destination=command.destination,
                weight_grams=command.weight_grams,
                now=utc_now(),
            )
            await tx.add(shipment)
        if prior is None:
            await tx.record_request(
                "CreateShipment", command.request_id, {"shipment_id": shipment.id}
            )
    return shipment


async def cancel_shipment(store: ShippingStore, command: CancelShipment) -> Shipment:
    """Call a shipment off; cancelling a cancelled shipment returns it unchanged."""
    async with store.transaction() as tx:
        prior = await tx.find_request("CancelShipment", command.request_id)
        shipment_id = prior["shipment_id"] if prior else command.shipment_id
        current = await tx.get(shipment_id)
        if current is None:
            raise shipment_not_found(shipment_id)
        shipment = cancelled(current, command.reason, utc_now())
        if shipment is not current:
            await tx.save(shipment)
        if prior is None:
            await tx.record_request(
                "CancelShipment", command.request_id, {"shipment_id": shipment.id}
            )
    return shipment
