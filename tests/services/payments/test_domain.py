"""The payments rules and use cases, with in-memory fakes of the store and the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from mesh.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from mesh.runtime.money import Money
from services.payments import handlers
from services.payments.domain import (
    Approved,
    Declined,
    Payment,
    PaymentStatus,
    ProviderDecision,
    Refund,
    captured,
    new_payment,
    refunded,
    voided,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def eur(minor_units: int) -> Money:
    return Money("EUR", minor_units)


@dataclass
class InMemoryPayments:
    """Implements both PaymentsStore and PaymentsTransaction, without isolation."""

    payments: dict[str, Payment] = field(default_factory=dict)
    captured: set[str] = field(default_factory=set)
    refunds: list[Refund] = field(default_factory=list)
    requests: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryPayments]:
        yield self

    snapshot = transaction

    async def get(self, payment_id: str) -> Payment | None:
        return self.payments.get(payment_id)

    async def add(self, payment: Payment) -> None:
        self.payments[payment.id] = payment

    async def save(self, payment: Payment) -> None:
        self.payments[payment.id] = payment

    async def record_capture(self, payment: Payment) -> None:
        assert payment.id not in self.captured, "captured twice"
        self.captured.add(payment.id)

    async def record_refund(self, refund: Refund) -> None:
        self.refunds.append(refund)

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id))

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        self.requests[(method, request_id)] = result


@dataclass
class ScriptedProvider:
    """Answers every authorization with `decision`, or fails with `error`; counts calls."""

    decision: ProviderDecision = field(default_factory=Approved)
    error: Exception | None = None
    calls: int = 0

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.decision


def authorized(amount: int = 2500) -> Payment:
    return new_payment(
        order_id="o-1", customer_id="alice", amount=eur(amount), decision=Approved(), now=NOW
    )


def authorize_command(request_id: str = "r-1", amount: int = 2500) -> handlers.AuthorizePayment:
    return handlers.AuthorizePayment("o-1", "alice", eur(amount), "tok_visa", request_id)


def test_a_declined_decision_makes_a_declined_payment_with_its_reason() -> None:
    payment = new_payment(
        order_id="o-1",
        customer_id="alice",
        amount=eur(100),
        decision=Declined("card_declined"),
        now=NOW,
    )
    assert payment.status is PaymentStatus.DECLINED
    assert payment.decline_reason == "card_declined"
    assert payment.captured_amount == eur(0)


def test_capturing_takes_the_whole_amount_and_a_second_capture_changes_nothing() -> None:
    payment = captured(authorized(2500), NOW)
    assert payment.status is PaymentStatus.CAPTURED
    assert payment.captured_amount == eur(2500)
    assert captured(payment, datetime(2027, 1, 1, tzinfo=UTC)) is payment


def test_a_voided_payment_cannot_be_captured_or_refunded() -> None:
    payment = voided(authorized(), NOW)
    with pytest.raises(FailedPrecondition) as capture_failure:
        captured(payment, NOW)
    assert capture_failure.value.reason == "PAYMENT_NOT_CAPTURABLE"
    with pytest.raises(FailedPrecondition) as refund_failure:
        refunded(payment, None, NOW)
    assert refund_failure.value.reason == "PAYMENT_NOT_REFUNDABLE"


def test_refunds_accumulate_and_never_exceed_the_captured_amount() -> None:
    payment = refunded(captured(authorized(2500), NOW), eur(1000), NOW)
    assert payment.refundable_amount == eur(1500)
    with pytest.raises(FailedPrecondition) as failure:
        refunded(payment, eur(1501), NOW)
    assert failure.value.reason == "REFUND_EXCEEDS_CAPTURED"
    assert refunded(payment, None, NOW).refunded_amount == eur(2500)


def test_a_refund_in_another_currency_is_refused() -> None:
    with pytest.raises(InvalidArgument) as failure:
        refunded(captured(authorized(), NOW), Money("USD", 100), NOW)
    assert [v.field for v in failure.value.violations] == ["amount"]


async def test_a_retried_authorization_does_not_ask_the_provider_again() -> None:
    store, provider = InMemoryPayments(), ScriptedProvider()
    first = await handlers.authorize_payment(store, provider, authorize_command())
    again = await handlers.authorize_payment(store, provider, authorize_command())
    assert again == first
    assert provider.calls == 1
    assert list(store.payments) == [first.id]


async def test_a_non_positive_amount_is_refused_before_the_provider_is_asked() -> None:
    store, provider = InMemoryPayments(), ScriptedProvider()
    with pytest.raises(InvalidArgument):
        await handlers.authorize_payment(store, provider, authorize_command(amount=0))
    assert provider.calls == 0


async def test_a_transient_provider_failure_records_nothing() -> None:
    store = InMemoryPayments()
    provider = ScriptedProvider(error=Unavailable("down", reason="PROVIDER_UNAVAILABLE"))
    with pytest.raises(Unavailable):
        await handlers.authorize_payment(store, provider, authorize_command())
    assert store.payments == {}
    assert store.requests == {}


async def test_a_declined_authorization_is_stored_and_reported_on_every_retry() -> None:
    store, provider = InMemoryPayments(), ScriptedProvider(decision=Declined("card_declined"))
    for _ in range(2):
        with pytest.raises(FailedPrecondition) as failure:
            await handlers.authorize_payment(store, provider, authorize_command())
        assert failure.value.reason == "PAYMENT_DECLINED"
    assert provider.calls == 1
    assert [p.status for p in store.payments.values()] == [PaymentStatus.DECLINED]


async def test_refunding_an_authorized_payment_voids_it_without_a_refund_record() -> None:
    store = InMemoryPayments()
    payment = authorized()
    await store.add(payment)
    result = await handlers.refund_payment(
        store, handlers.RefundPayment(payment.id, None, "cancelled", "r-1")
    )
    assert result.status is PaymentStatus.VOIDED
    assert store.refunds == []


async def test_a_refund_is_kept_with_its_reason() -> None:
    store = InMemoryPayments()
    payment = captured(authorized(2500), NOW)
    await store.add(payment)
    await handlers.refund_payment(
        store, handlers.RefundPayment(payment.id, eur(700), "damaged", "r-1")
    )
    assert [(r.amount, r.reason) for r in store.refunds] == [(eur(700), "damaged")]


async def test_an_unknown_payment_is_not_found() -> None:
    with pytest.raises(NotFound) as failure:
        await handlers.capture_payment(InMemoryPayments(), handlers.CapturePayment("nope", "r-1"))
    assert failure.value.reason == "PAYMENT_NOT_FOUND"


async def test_an_authorized_payment_belongs_to_the_customer_of_the_command() -> None:
    payment = await handlers.authorize_payment(
        InMemoryPayments(), ScriptedProvider(), authorize_command()
    )
    assert payment.customer_id == "alice"


async def test_a_customer_reads_their_own_payment() -> None:
    store = InMemoryPayments()
    payment = authorized()
    await store.add(payment)
    assert await handlers.get_payment(store, "alice", payment.id) == payment


async def test_another_customers_payment_is_not_found() -> None:
    store = InMemoryPayments()
    payment = authorized()
    await store.add(payment)
    with pytest.raises(NotFound) as failure:
        await handlers.get_payment(store, "bob", payment.id)
    assert failure.value.reason == "PAYMENT_NOT_FOUND"


async def test_reading_a_payment_without_a_caller_is_refused() -> None:
    store = InMemoryPayments()
    payment = authorized()
    await store.add(payment)
    with pytest.raises(Unauthenticated) as failure:
        await handlers.get_payment(store, None, payment.id)
    assert failure.value.reason == "NO_SUBJECT"
