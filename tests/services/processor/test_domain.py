"""The processor's rules and use case, with an in-memory fake of its store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from mesh.runtime.errors import FailedPrecondition, InvalidArgument, Unavailable
from mesh.runtime.money import Money
from services.processor import handlers
from services.processor.domain import Authorization, Decision, fingerprint


def eur(minor_units: int) -> Money:
    return Money("EUR", minor_units)


@dataclass
class InMemoryProcessor:
    """Implements both ProcessorStore and ProcessorTransaction, without isolation."""

    authorizations: dict[str, Authorization] = field(default_factory=dict)
    transient_failures: set[str] = field(default_factory=set)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryProcessor]:
        yield self

    async def find(self, idempotency_key: str) -> Authorization | None:
        return self.authorizations.get(idempotency_key)

    async def add(self, authorization: Authorization) -> None:
        assert authorization.idempotency_key not in self.authorizations, "decided twice"
        self.authorizations[authorization.idempotency_key] = authorization

    async def failed_before(self, idempotency_key: str) -> bool:
        return idempotency_key in self.transient_failures

    async def record_transient_failure(self, idempotency_key: str, now: datetime) -> None:
        self.transient_failures.add(idempotency_key)


def command(token: str = "tok_visa", amount: int = 2500, key: str = "k-1") -> handlers.Authorize:
    return handlers.Authorize(payment_token=token, amount=eur(amount), idempotency_key=key)


async def test_visa_is_approved_and_declined_is_declined_with_its_reason() -> None:
    store = InMemoryProcessor()
    approved = await handlers.authorize(store, command("tok_visa", key="a"))
    declined = await handlers.authorize(store, command("tok_declined", key="d"))
    assert (approved.decision, approved.decline_reason) == (Decision.APPROVED, "")
    assert (declined.decision, declined.decline_reason) == (Decision.DECLINED, "card_declined")
    assert approved.id != declined.id


@pytest.mark.parametrize("token", ["tok_visa", "tok_declined"])
async def test_a_repeated_key_gets_the_first_answer_without_a_second_decision(
    token: str,
) -> None:
    store = InMemoryProcessor()
    first = await handlers.authorize(store, command(token))
    again = await handlers.authorize(store, command(token))
    assert again == first
    assert list(store.authorizations.values()) == [first]


async def test_tok_transient_fails_once_per_key_and_decides_nothing_then() -> None:
    store = InMemoryProcessor()
    with pytest.raises(Unavailable) as failure:
        await handlers.authorize(store, command("tok_transient"))
    assert failure.value.reason == "PROVIDER_UNAVAILABLE"
    assert store.authorizations == {}

    retried = await handlers.authorize(store, command("tok_transient"))
    assert retried.decision is Decision.APPROVED
    assert await handlers.authorize(store, command("tok_transient")) == retried
    with pytest.raises(Unavailable):
        await handlers.authorize(store, command("tok_transient", key="k-2"))


@pytest.mark.parametrize(
    "reused",
    [
        command("tok_declined"),
        command(amount=2501),
        handlers.Authorize("tok_visa", Money("USD", 2500), "k-1"),
    ],
    ids=["other-token", "other-amount", "other-currency"],
)
async def test_a_key_reused_for_another_request_is_refused(reused: handlers.Authorize) -> None:
    store = InMemoryProcessor()
    first = await handlers.authorize(store, command("tok_visa"))
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.authorize(store, reused)
    assert failure.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert failure.value.metadata == {"idempotency_key": "k-1"}
    assert list(store.authorizations.values()) == [first]
    assert await handlers.authorize(store, command("tok_visa")) == first


async def test_an_unknown_token_is_refused_before_anything_is_remembered() -> None:
    store = InMemoryProcessor()
    with pytest.raises(InvalidArgument) as failure:
        await handlers.authorize(store, command("tok_mastercard"))
    assert [v.field for v in failure.value.violations] == ["payment_token"]
    assert "tok_visa" in failure.value.violations[0].description
    assert (store.authorizations, store.transient_failures) == ({}, set())


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (command(amount=0), ["amount"]),
        (command(amount=-5), ["amount"]),
        (command(key=""), ["idempotency_key"]),
        (command(key="k" * 129), ["idempotency_key"]),
        (command(key="k\x00"), ["idempotency_key"]),
        (command("tok_nope", amount=0, key=""), ["payment_token", "amount", "idempotency_key"]),
    ],
    ids=["zero", "negative", "empty-key", "long-key", "unprintable-key", "everything"],
)
async def test_bad_requests_name_every_offending_field(
    request_: handlers.Authorize, fields: list[str]
) -> None:
    store = InMemoryProcessor()
    with pytest.raises(InvalidArgument) as failure:
        await handlers.authorize(store, request_)
    assert [v.field for v in failure.value.violations] == fields
    assert store.authorizations == {}


async def test_a_key_of_the_longest_allowed_length_is_decided() -> None:
    authorization = await handlers.authorize(InMemoryProcessor(), command(key="k" * 128))
    assert authorization.decision is Decision.APPROVED


async def test_only_a_fingerprint_of_the_token_is_kept() -> None:
    authorization = await handlers.authorize(InMemoryProcessor(), command("tok_visa"))
    assert "tok_visa" not in repr(authorization)
    assert authorization.token_fingerprint == fingerprint("tok_visa")
    assert authorization.answers("tok_visa", eur(2500))
    assert not authorization.answers("tok_declined", eur(2500))
