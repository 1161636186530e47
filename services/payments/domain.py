"""The payments domain: payments, their life cycle, and the rules about money moving."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from mesh.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from mesh.runtime.money import Money


class PaymentStatus(enum.Enum):
    """Where a payment stands; the values are what the database stores."""

    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"


@dataclass(frozen=True)
class Payment:
    """The money a customer pays, or was asked to pay, for one order."""

    id: str
    order_id: str
    customer_id: str
    amount: Money
    status: PaymentStatus
    decline_reason: str
    captured_amount: Money
    refunded_amount: Money
    create_time: datetime
    update_time: datetime

    @property
    def refundable_amount(self) -> Money:
        """What was taken and not yet given back."""
        return self.captured_amount - self.refunded_amount


@dataclass(frozen=True)
class Refund:
    """One amount given back for a payment, kept for the record with its reason."""

    id: str
    payment_id: str
    amount: Money
    reason: str
    create_time: datetime


@dataclass(frozen=True)
class Approved:
    """The provider reserved the amount on the card."""


@dataclass(frozen=True)
class Declined:
    """The provider refused the payment, for `reason` (e.g. "card_declined")."""

    reason: str


#: What the provider answers to an authorization that did not fail transiently.
ProviderDecision = Approved | Declined


def payment_not_found(payment_id: str) -> NotFound:
    return NotFound(
        f"payment {payment_id!r} does not exist",
        reason="PAYMENT_NOT_FOUND",
        metadata={"payment_id": payment_id},
    )


def visible_to(payment: Payment, customer: str) -> bool:
    """Whether `payment` is `customer`'s: only they may see it."""
    return payment.customer_id == customer


def payment_declined(payment: Payment) -> FailedPrecondition:
    return FailedPrecondition(
        f"payment {payment.id!r} was declined: {payment.decline_reason}",
        reason="PAYMENT_DECLINED",
        metadata={"payment_id": payment.id, "decline_reason": payment.decline_reason},
    )


def check_positive(amount: Money, field: str = "amount") -> None:
    if amount.minor_units <= 0:
        raise InvalidArgument.of([FieldViolation(field, "The amount must be positive.")])


def new_payment(
    *,
    order_id: str,
    customer_id: str,
    amount: Money,
    decision: ProviderDecision,
    now: datetime,
) -> Payment:
    """The payment the provider's `decision` on `amount` leaves: authorized or declined."""
    check_positive(amount)
    declined = isinstance(decision, Declined)
    return Payment(
        id=str(uuid.uuid4()),
        order_id=order_id,
        customer_id=customer_id,
        amount=amount,
        status=PaymentStatus.DECLINED if declined else PaymentStatus.AUTHORIZED,
        decline_reason=decision.reason if isinstance(decision, Declined) else "",
        captured_amount=Money.zero(amount.currency),
        refunded_amount=Money.zero(amount.currency),
        create_time=now,
        update_time=now,
    )


def captured(payment: Payment, now: datetime) -> Payment:
    """`payment` with its whole authorized amount taken; a captured payment is unchanged."""
    if payment.status is PaymentStatus.CAPTURED:
        return payment
    if payment.status is not PaymentStatus.AUTHORIZED:
        raise FailedPrecondition(
            f"payment {payment.id!r} is {payment.status.value.lower()} and cannot be captured",
            reason="PAYMENT_NOT_CAPTURABLE",
            metadata={"payment_id": payment.id, "status": payment.status.value},
        )
    return replace(
        payment, status=PaymentStatus.CAPTURED, captured_amount=payment.amount, update_time=now
    )


def voided(payment: Payment, now: datetime) -> Payment:
    """`payment` with its authorization released before any money was taken."""
    return replace(payment, status=PaymentStatus.VOIDED, update_time=now)


def refunded(payment: Payment, amount: Money | None, now: datetime) -> Payment:
    """`payment` after giving back `amount` (all that is left when None) of what was taken."""
    if payment.status not in (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED):
        raise FailedPrecondition(
            f"payment {payment.id!r} is {payment.status.value.lower()} and cannot be refunded",
            reason="PAYMENT_NOT_REFUNDABLE",
            metadata={"payment_id": payment.id, "status": payment.status.value},
        )
    remaining = payment.refundable_amount
    if amount is None:
        amount = remaining
    else:
        check_positive(amount)
        if amount.currency != payment.amount.currency:
            raise InvalidArgument.of(
                [
                    FieldViolation(
                        "amount",
                        f"The refund must be in the payment's currency, {remaining.currency}.",
                    )
                ]
            )
    if remaining.minor_units == 0:
        raise FailedPrecondition(
            f"payment {payment.id!r} is already fully refunded",
            reason="PAYMENT_FULLY_REFUNDED",
            metadata={"payment_id": payment.id},
        )
    if amount > remaining:
        raise FailedPrecondition(
            f"cannot refund {amount}: only {remaining} of payment {payment.id!r} is left to refund",
            reason="REFUND_EXCEEDS_CAPTURED",
            metadata={"payment_id": payment.id, "refundable": str(remaining)},
        )
    return replace(
        payment,
        status=PaymentStatus.REFUNDED,
        refunded_amount=payment.refunded_amount + amount,
        update_time=now,
    )
