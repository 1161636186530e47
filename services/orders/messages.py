"""The orders' messages to the rest of the shop: its address mapping and its events."""

from __future__ import annotations

from google.type import postal_address_pb2

from mesh.runtime.events import new_event
from services.orders.domain import Order, OrderStatus, ShippingAddress
from shop.events.v1 import events_pb2

#: The producer name in the orders' event subjects: `shop.orders.<event>`.
PRODUCER = "orders"


def address_from_proto(message: postal_address_pb2.PostalAddress) -> ShippingAddress:
    return ShippingAddress(
        region_code=message.region_code.strip(),
        language_code=message.language_code,
        postal_code=message.postal_code,
        sorting_code=message.sorting_code,
        administrative_area=message.administrative_area,
        locality=message.locality,
        sublocality=message.sublocality,
        address_lines=tuple(message.address_lines),
        recipients=tuple(message.recipients),
        organization=message.organization,
    )


def address_to_proto(address: ShippingAddress) -> postal_address_pb2.PostalAddress:
    return postal_address_pb2.PostalAddress(
        region_code=address.region_code,
        language_code=address.language_code,
        postal_code=address.postal_code,
        sorting_code=address.sorting_code,
        administrative_area=address.administrative_area,
        locality=address.locality,
        sublocality=address.sublocality,
        address_lines=list(address.address_lines),
        recipients=list(address.recipients),
        organization=address.organization,
    )


def order_placed(order: Order, weight_grams: int) -> events_pb2.EventEnvelope:
    """The event that starts an order's saga: what reserving, charging and shipping need."""
    placed = events_pb2.OrderPlaced(
        order_id=order.id,
        customer_id=order.customer_id,
        lines=[
            events_pb2.OrderLine(
                product_id=line.product_id,
                quantity=line.quantity,
                unit_price=line.unit_price.to_proto(),
            )
            for line in order.lines
        ],
        total=order.total.to_proto(),
        shipping_address=address_to_proto(order.shipping_address),
        payment_token=order.payment_token,
        weight_grams=weight_grams,
    )
    return new_event(PRODUCER, order.id, placed)


def order_ended(order: Order) -> events_pb2.EventEnvelope:
    """The event of an order's final status: `OrderConfirmed` or `OrderCancelled`."""
    if order.status is OrderStatus.CONFIRMED:
        confirmed = events_pb2.OrderConfirmed(order_id=order.id, customer_id=order.customer_id)
        return new_event(PRODUCER, order.id, confirmed)
    if order.status is OrderStatus.CANCELLED:
        cancelled = events_pb2.OrderCancelled(
            order_id=order.id, customer_id=order.customer_id, reason=order.cancel_reason
        )
        return new_event(PRODUCER, order.id, cancelled)
    raise ValueError(f"order {order.id} is {order.status.value}, not final")
