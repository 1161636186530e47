"""Shipping's saga decisions (services.shipping.saga): what to ship, what to call off,
and the event that reports a shipment, on plain values, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.type import postal_address_pb2

from mesh.runtime.errors import InvalidArgument
from mesh.runtime.events import new_event
from services.shipping.domain import Destination, Shipment, cancelled, new_shipment, quote
from services.shipping.handlers import CancelShipment
from services.shipping.saga import call_off_of, shipment_of, shipment_reported
from shop.events.v1 import events_pb2

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BERLIN = Destination("DE", postal_code="10115", address_lines=("Hauptstr. 1",))


def placed() -> events_pb2.OrderPlaced:
    address = postal_address_pb2.PostalAddress(
        region_code="DE", postal_code="10115", address_lines=["Hauptstr. 1"]
    )
    return events_pb2.OrderPlaced(
        order_id="o1", customer_id="alice", shipping_address=address, weight_grams=1200
    )


def shipment() -> Shipment:
    return new_shipment(
        order_id="o1", customer_id="alice", destination=BERLIN, weight_grams=1200, now=NOW
    )


def order_cancelled() -> events_pb2.EventEnvelope:
    return new_event("orders", "o1", events_pb2.OrderCancelled(reason="changed my mind"))


def test_a_capture_asks_for_one_parcel_to_the_address_the_order_was_placed_with() -> None:
    command = shipment_of("o1", placed(), cancelled=False)
    assert command is not None
    assert (command.order_id, command.customer_id) == ("o1", "alice")
    assert (command.destination, command.weight_grams) == (BERLIN, 1200)
    assert command.request_id == "order-o1"


def test_a_cancelled_order_is_never_shipped() -> None:
    assert shipment_of("o1", placed(), cancelled=True) is None


def test_a_scheduled_parcel_is_reported_with_its_tracking_number_and_carrier() -> None:
    parcel = shipment()
    reported = shipment_reported("o1", parcel)
    assert isinstance(reported, events_pb2.ShipmentScheduled)
    assert (reported.order_id, reported.shipment_id) == ("o1", parcel.id)
    assert (reported.tracking_number, reported.carrier) == (parcel.tracking_number, "DHL")


def test_a_parcel_that_cannot_be_sent_is_reported_as_failed_with_why() -> None:
    with pytest.raises(InvalidArgument) as refused:
        quote(Destination("DE"), 1200)
    reported = shipment_reported("o1", refused.value)
    assert isinstance(reported, events_pb2.ShipmentFailed)
    assert reported.order_id == "o1"
    assert reported.reason == refused.value.message
    assert "postal code or at least one address line" in reported.reason


def test_a_cancellation_calls_the_orders_shipment_off_once() -> None:
    parcel = shipment()
    assert call_off_of(order_cancelled(), parcel) == CancelShipment(
        parcel.id, "order cancelled: changed my mind", "cancel-o1"
    )


def test_a_redelivered_cancellation_asks_again_with_the_same_request() -> None:
    parcel = shipment()
    again = cancelled(parcel, "order cancelled: changed my mind", NOW)
    assert call_off_of(order_cancelled(), again) == call_off_of(order_cancelled(), parcel)


def test_a_cancellation_before_any_shipment_calls_nothing_off() -> None:
    assert call_off_of(order_cancelled(), None) is None
