"""Payments' part in the order saga.

* `OrderPlaced` -> remember the customer, amount and card token (`mesh.runtime.saga`).
* `StockReserved` -> authorize and capture the order's total: `PaymentCaptured`, or
  `PaymentDeclined` when the provider declines the card or does not know the token.
  The processor is asked outside the event's transaction with the key `order-<id>`, so
  a redelivered event is authorized once by the processor and captured once here; a
  transient failure is retried by payments' sidecar, and if that is not enough, by
  redelivery, with growing delays.
* `ShipmentFailed`, `OrderCancelled` -> give the money back (`PaymentRefunded`), once;
  and never charge a cancelled order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.errors import InvalidArgument
from mesh.runtime.events import new_event, subject
from mesh.runtime.money import Money
from mesh.runtime.saga import placed_order, remember_cancelled, remember_placements, saga_order
from mesh.runtime.storage import enqueue_event
from services.payments.domain import Declined, PaymentStatus, ProviderDecision
from services.payments.handlers import (
    AuthorizePayment,
    CapturePayment,
    RefundPayment,
    authorized_payment,
    capture_payment,
    record_authorization,
    refund_payment,
)
from services.payments.ports import PaymentProvider, PaymentsStore
from shop.events.v1 import events_pb2

PRODUCER = "payments"

log = logging.getLogger(__name__)


def _key(order_id: str) -> str:
    return f"order-{order_id}"


def handlers(
    joined: Callable[[Connection], PaymentsStore], provider: PaymentProvider
) -> dict[str, Handler]:
    """The handler of each subject payments consumes."""

    async def charge(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        async with delivery.snapshot() as connection:
            placed, cancelled = await placed_order(connection, order_id)
        if cancelled:
            return
        command = AuthorizePayment(
            order_id=order_id,
            customer_id=placed.customer_id,
            amount=Money.from_proto(placed.total),
            payment_token=placed.payment_token,
            request_id=_key(order_id),
        )
        decision: ProviderDecision
        try:
            decision = await provider.authorize(
                command.payment_token, command.amount, command.request_id
            )
        except InvalidArgument:
            decision = Declined("unknown_payment_token")
        async with delivery.transaction() as connection:
            joined_store = joined(connection)
            payment = await record_authorization(joined_store, command, decision)
            event: events_pb2.PaymentCaptured | events_pb2.PaymentDeclined
            if payment.status is PaymentStatus.DECLINED:
                event = events_pb2.PaymentDeclined(order_id=order_id, reason=payment.decline_reason)
                log.info("payment for order %s declined: %s", order_id, payment.decline_reason)
            elif (await saga_order(connection, order_id)).cancelled:
                # Cancelled while the provider was asked: let the authorization go.
                await refund_payment(
                    joined_store, RefundPayment(payment.id, None, "order cancelled", "")
                )
                return
            else:
                payment = await capture_payment(
                    joined_store, CapturePayment(payment.id, f"capture-{order_id}")
                )
                event = events_pb2.PaymentCaptured(
                    order_id=order_id,
                    payment_id=payment.id,
                    amount=payment.captured_amount.to_proto(),
                )
            await enqueue_event(connection, new_event(PRODUCER, order_id, event))

    async def refund(delivery: Delivery) -> None:
        envelope = delivery.envelope
        order_id = envelope.order_id
        reason = (
            f"shipment failed: {envelope.shipment_failed.reason}"
            if envelope.HasField("shipment_failed")
            else f"order cancelled: {envelope.order_cancelled.reason}"
        )
        async with delivery.transaction() as connection:
            await remember_cancelled(connection, order_id)
            joined_store = joined(connection)
            payment = await authorized_payment(joined_store, _key(order_id))
            if payment is None or payment.status is not PaymentStatus.CAPTURED:
                return
            refunded = await refund_payment(
                joined_store, RefundPayment(payment.id, None, reason, f"refund-{order_id}")
            )
            log.info("payment %s of order %s refunded: %s", payment.id, order_id, reason)
            event = events_pb2.PaymentRefunded(
                order_id=order_id,
                payment_id=payment.id,
                amount=(refunded.refunded_amount - payment.refunded_amount).to_proto(),
                reason=reason,
            )
            await enqueue_event(connection, new_event(PRODUCER, order_id, event))

    return {
        subject("orders", "order_placed"): remember_placements(),
        subject("inventory", "stock_reserved"): charge,
        subject("shipping", "shipment_failed"): refund,
        subject("orders", "order_cancelled"): refund,
    }
