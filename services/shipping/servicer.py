"""Shipping's gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from google.type import postal_address_pb2

from mesh.runtime.caller import caller_subject
from mesh.runtime.timestamps import to_timestamp
from services.shipping import handlers
from services.shipping.domain import Destination, Shipment, ShipmentStatus
from services.shipping.ports import ShippingStore
from shop.shipping.v1 import shipping_service_pb2 as pb
from shop.shipping.v1 import shipping_service_pb2_grpc as pb_grpc

_STATUSES = {
    ShipmentStatus.SCHEDULED: pb.SHIPMENT_STATUS_SCHEDULED,
    ShipmentStatus.CANCELLED: pb.SHIPMENT_STATUS_CANCELLED,
}


def destination_from_proto(address: postal_address_pb2.PostalAddress) -> Destination:
    return Destination(
        region_code=address.region_code,
        postal_code=address.postal_code,
        administrative_area=address.administrative_area,
        locality=address.locality,
        address_lines=tuple(address.address_lines),
        recipients=tuple(address.recipients),
        organization=address.organization,
    )


def _address(destination: Destination) -> postal_address_pb2.PostalAddress:
    return postal_address_pb2.PostalAddress(
        region_code=destination.region_code,
        postal_code=destination.postal_code,
        administrative_area=destination.administrative_area,
        locality=destination.locality,
        address_lines=list(destination.address_lines),
        recipients=list(destination.recipients),
        organization=destination.organization,
    )


def to_proto(shipment: Shipment) -> pb.Shipment:
    return pb.Shipment(
        id=shipment.id,
        order_id=shipment.order_id,
        destination=_address(shipment.destination),
        weight_grams=shipment.weight_grams,
        cost=shipment.cost.to_proto(),
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
        status=_STATUSES[shipment.status],
        create_time=to_timestamp(shipment.create_time),
        customer_id=shipment.customer_id,
    )


class ShippingServicer(pb_grpc.ShippingServiceServicer):
    def __init__(self, store: ShippingStore) -> None:
        self._store = store

    async def QuoteShipment(
        self, request: pb.QuoteShipmentRequest, context: Any
    ) -> pb.QuoteShipmentResponse:
        quote = handlers.quote_shipment(
            handlers.QuoteShipment(
                destination_from_proto(request.destination), request.weight_grams
            )
        )
        return pb.QuoteShipmentResponse(
            cost=quote.cost.to_proto(), carrier=quote.carrier, estimated_days=quote.estimated_days
        )

    async def GetShipment(
        self, request: pb.GetShipmentRequest, context: Any
    ) -> pb.GetShipmentResponse:
        shipment = await handlers.get_shipment(self._store, caller_subject(context), request.id)
        return pb.GetShipmentResponse(shipment=to_proto(shipment))

    async def CreateShipment(
        self, request: pb.CreateShipmentRequest, context: Any
    ) -> pb.CreateShipmentResponse:
        shipment = await handlers.create_shipment(
            self._store,
            handlers.CreateShipment(
                order_id=request.order_id,
                customer_id=request.customer_id,
                destination=destination_from_proto(request.destination),
                weight_grams=request.weight_grams,
                request_id=request.request_id,
            ),
        )
        return pb.CreateShipmentResponse(shipment=to_proto(shipment))

    async def CancelShipment(
        self, request: pb.CancelShipmentRequest, context: Any
    ) -> pb.CancelShipmentResponse:
        shipment = await handlers.cancel_shipment(
            self._store,
            handlers.CancelShipment(request.shipment_id, request.reason, request.request_id),
        )
        return pb.CancelShipmentResponse(shipment=to_proto(shipment))
