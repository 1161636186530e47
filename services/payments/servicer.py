"""The payments gRPC face: protobuf in, command to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from google.type import money_pb2

from mesh.runtime.caller import caller_subject
from mesh.runtime.money import Money
from mesh.runtime.timestamps import to_timestamp
from services.payments import handlers
from services.payments.domain import Payment, PaymentStatus
from services.payments.ports import PaymentProvider, PaymentsStore
from shop.payments.v1 import payments_service_pb2 as pb
from shop.payments.v1 import payments_service_pb2_grpc as pb_grpc

_STATUSES = {
    PaymentStatus.AUTHORIZED: pb.PAYMENT_STATUS_AUTHORIZED,
    PaymentStatus.CAPTURED: pb.PAYMENT_STATUS_CAPTURED,
    PaymentStatus.DECLINED: pb.PAYMENT_STATUS_DECLINED,
    PaymentStatus.REFUNDED: pb.PAYMENT_STATUS_REFUNDED,
    PaymentStatus.VOIDED: pb.PAYMENT_STATUS_VOIDED,
}


def to_proto(payment: Payment) -> pb.Payment:
    return pb.Payment(
        id=payment.id,
        order_id=payment.order_id,
        customer_id=payment.customer_id,
        amount=payment.amount.to_proto(),
        status=_STATUSES[payment.status],
        decline_reason=payment.decline_reason,
        captured_amount=payment.captured_amount.to_proto(),
        refunded_amount=payment.refunded_amount.to_proto(),
        create_time=to_timestamp(payment.create_time),
        update_time=to_timestamp(payment.update_time),
    )


def _amount(message: money_pb2.Money) -> Money:
    return Money.from_request(message, "amount")


class PaymentsServicer(pb_grpc.PaymentsServiceServicer):
    def __init__(self, store: PaymentsStore, provider: PaymentProvider) -> None:
        self._store = store
        self._provider = provider

    async def AuthorizePayment(
        self, request: pb.AuthorizePaymentRequest, context: Any
    ) -> pb.AuthorizePaymentResponse:
        payment = await handlers.authorize_payment(
            self._store,
            self._provider,
            handlers.AuthorizePayment(
                order_id=request.order_id,
                customer_id=request.customer_id,
                amount=_amount(request.amount),
                payment_token=request.payment_token,
                request_id=request.request_id,
            ),
        )
        return pb.AuthorizePaymentResponse(payment=to_proto(payment))

    async def CapturePayment(
        self, request: pb.CapturePaymentRequest, context: Any
    ) -> pb.CapturePaymentResponse:
        payment = await handlers.capture_payment(
            self._store, handlers.CapturePayment(request.payment_id, request.request_id)
        )
        return pb.CapturePaymentResponse(payment=to_proto(payment))

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: Any
    ) -> pb.RefundPaymentResponse:
        payment = await handlers.refund_payment(
            self._store,
            handlers.RefundPayment(
                payment_id=request.payment_id,
                amount=_amount(request.amount) if request.HasField("amount") else None,
                reason=request.reason,
                request_id=request.request_id,
            ),
        )
        return pb.RefundPaymentResponse(payment=to_proto(payment))

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Any
    ) -> pb.GetPaymentResponse:
        payment = await handlers.get_payment(self._store, caller_subject(context), request.id)
        return pb.GetPaymentResponse(payment=to_proto(payment))
