"""Payments' part in the order saga.

* `OrderPlaced` -> remember the customer, amount and card token (`mesh.runtime.saga`).
* `StockReserved` -> authorize and capture the order's total: `PaymentCaptured`, or
  `PaymentDeclined` when the provider declines the card or does not know the token.
  The processor is asked outside the event's transaction with the key `order-<id>`, so
  a redelivered event is authorized once by the processor and captured once here; a
  transient failure is retried by payments' sidecar, and if that is not enough (the
  processor is away), the charge waits for it, retried by payments for as long as it
  takes (`services.payments.waiting`): the order stays PENDING meanwhile.
* `ShipmentFailed`, `OrderCancelled` -> give the money back (`PaymentRefunded`), once;
  and never charge a cancelled order.

The decisions (what to authorize, how to settle an authorization, what to refund, and
the events that report them) are pure functions of the event and the payment;
`handlers` reads the state, asks the processor and applies the decisions, with the
payments' use cases, in the event's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.errors import InvalidArgument, Unavailable
from mesh.runtime.events import new_event, subject
from mesh.runtime.money import Money
from mesh.runtime.saga import placed_order, remember_cancelled, remember_placements, saga_order
from mesh.runtime.storage import Database, enqueue_event, utc_now
from services.payments.domain import Declined, Payment, PaymentStatus, ProviderDecision
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
from services.payments.waiting import Retry, postpone_charge, stop_waiting, wait_for_processor
from shop.events.v1 import events_pb2

PRODUCER = "payments"

log = logging.getLogger(__name__)


#: How long a charge the processor did not answer waits before each try, by the number of
#: tries it has had since it began to wait; every 10 s from the fourth on.
RETRY_DELAYS = (timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=5),
                timedelta(seconds=10))  # fmt: skip


def _key(order_id: str) -> str:
    return f"order-{order_id}"


def retry_delay(attempts: int) -> timedelta:
    """How long a waiting charge waits for its next try after `attempts` unanswered ones."""
    return RETRY_DELAYS[min(attempts, len(RETRY_DELAYS) - 1)]


@dataclass(frozen=True)
class Capture:
    """Take the authorized money; `PaymentCaptured` reports it."""

    command: CapturePayment


@dataclass(frozen=True)
class Void:
    """Let the authorization go, with no event: the order was cancelled while the
    provider was asked, and the cancellation's refund found nothing captured to give
    back."""

    command: RefundPayment


@dataclass(frozen=True)
class Decline:
    """Report the provider's refusal."""

    event: events_pb2.PaymentDeclined


#: What becomes of a recorded authorization.
Settlement = Capture | Void | Decline


@dataclass(frozen=True)
class RefundDue:
    """A captured payment to give back, and the request that gives it back."""

    payment: Payment
    command: RefundPayment


def authorization_of(
    order_id: str, placed: events_pb2.OrderPlaced, cancelled: bool
) -> AuthorizePayment | None:
    """What `StockReserved` asks of the processor: the order's total on the customer's
    card, once per order; None for a cancelled order, which is never charged."""
    if cancelled:
        return None
    return AuthorizePayment(
        order_id=order_id,
        customer_id=placed.customer_id,
        amount=Money.from_proto(placed.total),
        payment_token=placed.payment_token,
        request_id=_key(order_id),
    )


def settlement(order_id: str, payment: Payment, cancelled: bool) -> Settlement:
    """What becomes of the payment the order's authorization recorded, now that the
    order is (or is not) `cancelled`."""
    if payment.status is PaymentStatus.DECLINED:
        return Decline(events_pb2.PaymentDeclined(order_id=order_id, reason=payment.decline_reason))
    if cancelled:
        return Void(RefundPayment(payment.id, None, "order cancelled", ""))
    return Capture(CapturePayment(payment.id, f"capture-{order_id}"))


def capture_reported(order_id: str, payment: Payment) -> events_pb2.PaymentCaptured:
    """`PaymentCaptured` for the money the capture took."""
    return events_pb2.PaymentCaptured(
        order_id=order_id,
        payment_id=payment.id,
        amount=payment.captured_amount.to_proto(),
    )


def refund_reason(envelope: events_pb2.EventEnvelope) -> str:
    """Why the money goes back: the shipment failed, or the order was cancelled."""
    if envelope.HasField("shipment_failed"):
        return f"shipment failed: {envelope.shipment_failed.reason}"
    return f"order cancelled: {envelope.order_cancelled.reason}"


def refund_due(order_id: str, payment: Payment | None, reason: str) -> RefundDue | None:
    """The refund the order's payment is due; None unless money was captured (nothing
    was taken, or it was given back before)."""
    if payment is None or payment.status is not PaymentStatus.CAPTURED:
        return None
    return RefundDue(payment, RefundPayment(payment.id, None, reason, f"refund-{order_id}"))


def refund_reported(order_id: str, due: RefundDue, refunded: Payment) -> events_pb2.PaymentRefunded:
    """`PaymentRefunded` for the money this refund gave back."""
    return events_pb2.PaymentRefunded(
        order_id=order_id,
        payment_id=due.payment.id,
        amount=(refunded.refunded_amount - due.payment.refunded_amount).to_proto(),
        reason=due.command.reason,
    )


def handlers(
    joined: Callable[[Connection], PaymentsStore], provider: PaymentProvider
) -> dict[str, Handler]:
    """The handler of each subject payments consumes."""

    async def charge(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        async with delivery.snapshot() as connection:
            placed, cancelled = await placed_order(connection, order_id)
        command = authorization_of(order_id, placed, cancelled)
        if command is None:
            return
        try:
            decision = await authorize(provider, command)
        except Unavailable as away:
            async with delivery.transaction() as connection:
                await wait_for_processor(connection, order_id, utc_now() + retry_delay(0))
            log.warning("charge of order %s waits for the card processor: %s", order_id, away)
            return
        async with delivery.transaction() as connection:
            await apply_authorization(connection, joined(connection), command, decision)

    async def refund(delivery: Delivery) -> None:
        envelope = delivery.envelope
        order_id = envelope.order_id
        async with delivery.transaction() as connection:
            await remember_cancelled(connection, order_id)
            store = joined(connection)
            payment = await authorized_payment(store, _key(order_id))
            due = refund_due(order_id, payment, refund_reason(envelope))
            if due is None:
                return
            refunded = await refund_payment(store, due.command)
            event = refund_reported(order_id, due, refunded)
            log.info("payment %s of order %s refunded: %s", due.payment.id, order_id, event.reason)
            await enqueue_event(connection, new_event(PRODUCER, order_id, event))

    return {
        subject("orders", "order_placed"): remember_placements(),
        subject("inventory", "stock_reserved"): charge,
        subject("shipping", "shipment_failed"): refund,
        subject("orders", "order_cancelled"): refund,
    }


def charge_retry(
    database: Database, joined: Callable[[Connection], PaymentsStore], provider: PaymentProvider
) -> Retry:
    """One more try of a charge that waits for the processor (`services.payments.waiting`):
    settled once the processor answers, put off again while it does not; a cancelled
    order's wait ends with no charge."""

    async def retry(order_id: str, attempts: int) -> None:
        async with database.snapshot() as connection:
            placed, cancelled = await placed_order(connection, order_id)
        command = authorization_of(order_id, placed, cancelled)
        if command is None:
            async with database.transaction() as connection:
                await stop_waiting(connection, order_id)
            return
        try:
            decision = await authorize(provider, command)
        except Unavailable:
            async with database.transaction() as connection:
                await postpone_charge(connection, order_id, utc_now() + retry_delay(attempts + 1))
            return
        async with database.transaction() as connection:
            if not await stop_waiting(connection, order_id):
                return  # another replica settled it
            await apply_authorization(connection, joined(connection), command, decision)
        log.info("charge of order %s settled after waiting %d tries", order_id, attempts + 1)

    return retry


async def authorize(provider: PaymentProvider, command: AuthorizePayment) -> ProviderDecision:
    """The provider's answer; a token it does not know is a declined card. `Unavailable`
    when the provider did not answer."""
    try:
        return await provider.authorize(command.payment_token, command.amount, command.request_id)
    except InvalidArgument:
        return Declined("unknown_payment_token")


async def apply_authorization(
    connection: Connection,
    store: PaymentsStore,
    command: AuthorizePayment,
    decision: ProviderDecision,
) -> None:
    """Record the provider's `decision` and settle it (capture, void or decline, with the
    event that says so), in `connection`'s transaction."""
    payment = await record_authorization(store, command, decision)
    # Read again: the order may have been cancelled while the provider was asked.
    cancelled = (await saga_order(connection, command.order_id)).cancelled
    step = settlement(command.order_id, payment, cancelled)
    await _settle(connection, store, command.order_id, step)


async def _settle(
    connection: Connection, store: PaymentsStore, order_id: str, step: Settlement
) -> None:
    """Apply `step` in the event's transaction, with the event that reports it."""
    event: events_pb2.PaymentCaptured | events_pb2.PaymentDeclined
    if isinstance(step, Void):
        await refund_payment(store, step.command)
        return
    if isinstance(step, Decline):
        event = step.event
        log.info("payment for order %s declined: %s", order_id, event.reason)
    else:
        event = capture_reported(order_id, await capture_payment(store, step.command))
    await enqueue_event(connection, new_event(PRODUCER, order_id, event))
