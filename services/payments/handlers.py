"""The payments use cases: each takes a command and the ports, and returns a payment.

`caller` is the subject the call names (`mesh.runtime.caller`); reading a customer's payment
refuses a call that names none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mesh.runtime.caller import customer_of
from mesh.runtime.money import Money
from mesh.runtime.storage import utc_now
from services.payments.domain import (
    Payment,
    PaymentStatus,
    ProviderDecision,
    Refund,
    captured,
    check_positive,
    new_payment,
    payment_declined,
    payment_not_found,
    refunded,
    visible_to,
    voided,
)
from services.payments.ports import PaymentProvider, PaymentsStore, PaymentsTransaction


@dataclass(frozen=True)
class AuthorizePayment:
    order_id: str
    customer_id: str
    amount: Money
    payment_token: str
    request_id: str


@dataclass(frozen=True)
class CapturePayment:
    payment_id: str
    request_id: str


@dataclass(frozen=True)
class RefundPayment:
    payment_id: str
    amount: Money | None
    reason: str
    request_id: str


async def _prior_payment(tx: PaymentsTransaction, method: str, request_id: str) -> Payment | None:
    """The payment an earlier request with this id acted on, if there was one."""
    prior = await tx.find_request(method, request_id)
    return await tx.get(prior["payment_id"]) if prior else None


def _settled(payment: Payment) -> Payment:
    """The payment an authorization returns; a declined one is reported as an error."""
    if payment.status is PaymentStatus.DECLINED:
        raise payment_declined(payment)
    return payment


async def authorize_payment(
    store: PaymentsStore, provider: PaymentProvider, command: AuthorizePayment
) -> Payment:
    """Ask the provider to authorize the amount, and record the payment it leaves.

    The provider is called outside any transaction (it may be slow, and it keeps its own
    memory) with the request id as its idempotency key, so concurrent retries of one
    request are authorized once by the provider and recorded once here.
    """
    check_positive(command.amount)
    async with store.snapshot() as tx:
        payment = await _prior_payment(tx, "AuthorizePayment", command.request_id)
    if payment is not None:
        return _settled(payment)
    decision = await provider.authorize(command.payment_token, command.amount, command.request_id)
    return _settled(await record_authorization(store, command, decision))


async def record_authorization(
    store: PaymentsStore, command: AuthorizePayment, decision: ProviderDecision
) -> Payment:
    """Record the payment the provider's `decision` leaves, once per request id."""
    async with store.transaction() as tx:
        payment = await _prior_payment(tx, "AuthorizePayment", command.request_id)
        if payment is None:
            payment = new_payment(
                order_id=command.order_id,
                customer_id=command.customer_id,
                amount=command.amount,
                decision=decision,
                now=utc_now(),
            )
            await tx.add(payment)
            await tx.record_request(
                "AuthorizePayment", command.request_id, {"payment_id": payment.id}
            )
    return payment


async def authorized_payment(store: PaymentsStore, request_id: str) -> Payment | None:
    """The payment an authorization with `request_id` recorded, if there was one."""
    async with store.snapshot() as tx:
        return await _prior_payment(tx, "AuthorizePayment", request_id)


async def capture_payment(store: PaymentsStore, command: CapturePayment) -> Payment:
    """Take the whole authorized amount; a captured payment is returned unchanged."""
    async with store.transaction() as tx:
        payment = await _prior_payment(tx, "CapturePayment", command.request_id)
        if payment is not None:
            return payment
        current = await tx.get(command.payment_id)
        if current is None:
            raise payment_not_found(command.payment_id)
        payment = captured(current, utc_now())
        if payment is not current:
            await tx.record_capture(payment)
            await tx.save(payment)
        await tx.record_request("CapturePayment", command.request_id, {"payment_id": payment.id})
    return payment


async def refund_payment(store: PaymentsStore, command: RefundPayment) -> Payment:
    """Give back captured money, or void a payment that is only authorized."""
    if command.amount is not None:
        check_positive(command.amount)
    async with store.transaction() as tx:
        payment = await _prior_payment(tx, "RefundPayment", command.request_id)
        if payment is not None:
            return payment
        current = await tx.get(command.payment_id)
        if current is None:
            raise payment_not_found(command.payment_id)
        now = utc_now()
        if current.status is PaymentStatus.AUTHORIZED:
            payment = voided(current, now)
        else:
            payment = refunded(current, command.amount, now)
            await tx.record_refund(
                Refund(
                    id=str(uuid.uuid4()),
                    payment_id=payment.id,
                    amount=payment.refunded_amount - current.refunded_amount,
                    reason=command.reason,
                    create_time=now,
                )
            )
        await tx.save(payment)
        await tx.record_request("RefundPayment", command.request_id, {"payment_id": payment.id})
    return payment


async def get_payment(store: PaymentsStore, caller: str | None, payment_id: str) -> Payment:
    """The payment, if it is the caller's; another customer's payment does not exist."""
    customer = customer_of(caller)
    async with store.snapshot() as tx:
        payment = await tx.get(payment_id)
    if payment is None or not visible_to(payment, customer):
        raise payment_not_found(payment_id)
    return payment
