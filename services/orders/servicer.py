"""The orders' gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

import logging
from typing import Any

from mesh.runtime import telemetry
from mesh.runtime.admission import Backlog
from mesh.runtime.caller import caller_subject
from mesh.runtime.timestamps import to_timestamp
from services.orders import handlers
from services.orders.domain import (
    Order,
    OrderLine,
    OrderStatus,
    RequestedLine,
    SagaStep,
    StepOutcome,
)
from services.orders.messages import address_from_proto, address_to_proto
from services.orders.ports import Catalog, OrdersStore
from shop.orders.v1 import orders_service_pb2 as pb
from shop.orders.v1 import orders_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_STATUSES = {
    OrderStatus.PENDING: pb.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
}
_OUTCOMES = {
    StepOutcome.SUCCEEDED: pb.SAGA_STEP_OUTCOME_SUCCEEDED,
    StepOutcome.FAILED: pb.SAGA_STEP_OUTCOME_FAILED,
    StepOutcome.COMPENSATED: pb.SAGA_STEP_OUTCOME_COMPENSATED,
}


def _line_to_proto(line: OrderLine) -> pb.OrderLine:
    return pb.OrderLine(
        product_id=line.product_id,
        product_name=line.product_name,
        quantity=line.quantity,
        unit_price=line.unit_price.to_proto(),
        line_total=line.line_total.to_proto(),
    )


def _step_to_proto(step: SagaStep) -> pb.SagaStep:
    return pb.SagaStep(
        name=step.name,
        outcome=_OUTCOMES[step.outcome],
        detail=step.detail,
        time=to_timestamp(step.time),
    )


def to_proto(order: Order) -> pb.Order:
    """The order as the contract shows it: everything but the payment token."""
    return pb.Order(
        id=order.id,
        customer_id=order.customer_id,
        lines=[_line_to_proto(line) for line in order.lines],
        total=order.total.to_proto(),
        shipping_address=address_to_proto(order.shipping_address),
        status=_STATUSES[order.status],
        cancel_reason=order.cancel_reason,
        history=[_step_to_proto(step) for step in order.history],
        payment_id=order.payment_id,
        shipment_id=order.shipment_id,
        tracking_number=order.tracking_number,
        create_time=to_timestamp(order.create_time),
        update_time=to_timestamp(order.update_time),
    )


class OrdersServicer(pb_grpc.OrdersServiceServicer):
    def __init__(
        self, store: OrdersStore, catalog: Catalog, backlog: Backlog | None = None
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._backlog = backlog

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Any
    ) -> pb.PlaceOrderResponse:
        order = await handlers.place_order(
            self._store,
            self._catalog,
            handlers.PlaceOrder(
                caller=caller_subject(context),
                customer_id=request.customer_id,
                # Only product ids and quantities are read: prices come from the catalog.
                lines=tuple(
                    RequestedLine(line.product_id, line.quantity) for line in request.lines
                ),
                shipping_address=address_from_proto(request.shipping_address),
                payment_token=request.payment_token,
                request_id=request.request_id,
            ),
            self._backlog,
        )
        telemetry.mark_order(order.id)
        log.info("order %s placed by %s: %s", order.id, order.customer_id, order.total)
        return pb.PlaceOrderResponse(order=to_proto(order))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        order = await handlers.get_order(self._store, caller_subject(context), request.id)
        return pb.GetOrderResponse(order=to_proto(order))

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Any
    ) -> pb.ListOrdersResponse:
        page = await handlers.list_orders(
            self._store,
            handlers.ListOrders(
                caller_subject(context), request.customer_id, request.page_size, request.page_token
            ),
        )
        return pb.ListOrdersResponse(
            orders=[to_proto(order) for order in page.orders],
            next_page_token=page.next_page_token,
        )

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: Any
    ) -> pb.CancelOrderResponse:
        order = await handlers.cancel_order(
            self._store,
            handlers.CancelOrder(
                caller_subject(context), request.id, request.reason, request.request_id
            ),
        )
        return pb.CancelOrderResponse(order=to_proto(order))
