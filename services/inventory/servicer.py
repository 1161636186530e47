"""The inventory's gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from mesh.runtime.timestamps import to_timestamp
from services.inventory import handlers
from services.inventory.domain import Reservation, ReservationLine, ReservationStatus, Stock
from services.inventory.ports import InventoryStore
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

_STATUSES = {
    ReservationStatus.RESERVED: pb.RESERVATION_STATUS_RESERVED,
    ReservationStatus.RELEASED: pb.RESERVATION_STATUS_RELEASED,
    ReservationStatus.COMMITTED: pb.RESERVATION_STATUS_COMMITTED,
}


def stock_to_proto(level: Stock) -> pb.Stock:
    return pb.Stock(
        product_id=level.product_id,
        on_hand=level.on_hand,
        reserved=level.reserved,
        available=level.available,
        update_time=to_timestamp(level.update_time),
    )


def reservation_to_proto(reservation: Reservation) -> pb.Reservation:
    return pb.Reservation(
        order_id=reservation.order_id,
        lines=[
            pb.ReservationLine(product_id=line.product_id, quantity=line.quantity)
            for line in reservation.lines
        ],
        status=_STATUSES[reservation.status],
        create_time=to_timestamp(reservation.create_time),
        update_time=to_timestamp(reservation.update_time),
    )


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    def __init__(self, store: InventoryStore) -> None:
        self._store = store

    async def GetStock(self, request: pb.GetStockRequest, context: Any) -> pb.GetStockResponse:
        level = await handlers.get_stock(self._store, request.product_id)
        return pb.GetStockResponse(stock=stock_to_proto(level))

    async def BatchGetStock(
        self, request: pb.BatchGetStockRequest, context: Any
    ) -> pb.BatchGetStockResponse:
        levels = await handlers.batch_get_stock(self._store, list(request.product_ids))
        return pb.BatchGetStockResponse(stocks=[stock_to_proto(level) for level in levels])

    async def SetStock(self, request: pb.SetStockRequest, context: Any) -> pb.SetStockResponse:
        level = await handlers.set_stock(
            self._store,
            handlers.SetStock(request.product_id, request.on_hand, request.request_id),
        )
        return pb.SetStockResponse(stock=stock_to_proto(level))

    async def AdjustStock(
        self, request: pb.AdjustStockRequest, context: Any
    ) -> pb.AdjustStockResponse:
        level = await handlers.adjust_stock(
            self._store,
            handlers.AdjustStock(request.product_id, request.delta, request.request_id),
        )
        return pb.AdjustStockResponse(stock=stock_to_proto(level))

    async def ReserveStock(
        self, request: pb.ReserveStockRequest, context: Any
    ) -> pb.ReserveStockResponse:
        lines = tuple(ReservationLine(line.product_id, line.quantity) for line in request.lines)
        reservation = await handlers.reserve_stock(
            self._store, handlers.ReserveStock(request.order_id, lines)
        )
        return pb.ReserveStockResponse(reservation=reservation_to_proto(reservation))

    async def ReleaseStock(
        self, request: pb.ReleaseStockRequest, context: Any
    ) -> pb.ReleaseStockResponse:
        reservation = await handlers.release_stock(self._store, request.order_id)
        return pb.ReleaseStockResponse(reservation=reservation_to_proto(reservation))

    async def CommitReservation(
        self, request: pb.CommitReservationRequest, context: Any
    ) -> pb.CommitReservationResponse:
        reservation = await handlers.commit_reservation(self._store, request.order_id)
        return pb.CommitReservationResponse(reservation=reservation_to_proto(reservation))
