"""Charges that wait for the card processor (services.payments.waiting), on a real
database, with a processor that is away until a test brings it back.

The processor's absence fails no event: the charge waits in payments' database, is tried
again with growing delays, and is settled once the processor answers (or dropped, if the
order was cancelled meanwhile). The same with the real processor stopped in a real mesh
is in tests/integration/test_degradation.py.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import timedelta

import pytest
import sqlalchemy as sa
from google.protobuf.message import Message

from mesh.runtime.errors import Unavailable
from mesh.runtime.events import new_event, subject
from mesh.runtime.money import Money
from mesh.runtime.storage import Database, outbox, utc_now
from services.payments import handlers as payment_handlers
from services.payments import saga
from services.payments.adapters import SqlPaymentsStore, charges_waiting
from services.payments.domain import Approved, PaymentStatus, ProviderDecision
from services.payments.waiting import ChargeRetries, Retry, charges_due
from shop.events.v1 import events_pb2
from tests.support.component import OneDelivery
from tests.support.wait import eventually

ORDER = "o-1"


class ProcessorAway:
    """A card processor that does not answer until `back`; then it approves."""

    def __init__(self) -> None:
        self.back = False
        self.calls = 0

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        self.calls += 1
        if not self.back:
            raise Unavailable("the card processor is unavailable", reason="PROVIDER_UNAVAILABLE")
        return Approved()


@pytest.fixture
def processor() -> ProcessorAway:
    return ProcessorAway()


@pytest.fixture
def store(database: Database) -> SqlPaymentsStore:
    return SqlPaymentsStore(database)


async def deliver(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway, event: Message
) -> None:
    """Hand `event` about order o-1 to payments' handler of it, as its consumer would."""
    producer, name = {
        "OrderPlaced": ("orders", "order_placed"),
        "StockReserved": ("inventory", "stock_reserved"),
        "OrderCancelled": ("orders", "order_cancelled"),
    }[event.DESCRIPTOR.name]
    handle = saga.handlers(store.within, processor)[subject(producer, name)]
    await handle(OneDelivery(database, new_event(producer, ORDER, event)))  # type: ignore[arg-type]


async def charge_while_away(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    """Order o-1 placed, its stock reserved, its charge unanswered."""
    placed = events_pb2.OrderPlaced(
        order_id=ORDER,
        customer_id="alice",
        total=Money("EUR", 2500).to_proto(),
        payment_token="tok_visa",
    )
    await deliver(database, store, processor, placed)
    await deliver(database, store, processor, events_pb2.StockReserved(order_id=ORDER))


async def waiting(database: Database) -> list[tuple[str, int]]:
    async with database.snapshot() as connection:
        rows = await connection.execute(
            sa.select(charges_waiting.c.order_id, charges_waiting.c.attempts)
        )
        return [(row.order_id, row.attempts) for row in rows]


async def due_later(database: Database, seconds: float) -> list[tuple[str, int]]:
    async with database.snapshot() as connection:
        return await charges_due(connection, utc_now() + timedelta(seconds=seconds), 10)


async def published_subjects(database: Database) -> list[str]:
    async with database.snapshot() as connection:
        rows = await connection.execute(sa.select(outbox.c.subject).order_by(outbox.c.create_time))
        return [row.subject for row in rows]


def retry(database: Database, store: SqlPaymentsStore, processor: ProcessorAway) -> Retry:
    return saga.charge_retry(database, store.within, processor)


async def test_an_unanswered_charge_waits_instead_of_failing_its_event(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)  # the handler did not raise

    assert await waiting(database) == [(ORDER, 0)]
    assert await due_later(database, 0) == []  # its first try again is a second away
    assert await due_later(database, 1.5) == [(ORDER, 0)]
    assert await payment_handlers.authorized_payment(store, "order-o-1") is None
    assert await published_subjects(database) == []  # neither captured nor declined


async def test_each_unanswered_try_puts_it_off_longer(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)
    for attempts, delay in enumerate(saga.RETRY_DELAYS[1:], start=1):
        await retry(database, store, processor)(ORDER, attempts - 1)
        assert await waiting(database) == [(ORDER, attempts)]
        assert await due_later(database, delay.total_seconds() - 0.5) == []
        assert await due_later(database, delay.total_seconds() + 0.5) == [(ORDER, attempts)]
    assert saga.retry_delay(10) == saga.RETRY_DELAYS[-1] == timedelta(seconds=10)
    assert await published_subjects(database) == []


async def test_once_the_processor_answers_the_charge_is_captured_once(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)
    processor.back = True
    # Two replicas try it at once: the one that ends the wait settles it.
    await retry(database, store, processor)(ORDER, 0)
    await retry(database, store, processor)(ORDER, 0)

    payment = await payment_handlers.authorized_payment(store, "order-o-1")
    assert payment is not None
    assert payment.status is PaymentStatus.CAPTURED
    assert await waiting(database) == []
    assert await published_subjects(database) == [subject("payments", "payment_captured")]


async def test_a_cancelled_order_stops_waiting_without_a_charge(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)
    await deliver(database, store, processor, events_pb2.OrderCancelled(order_id=ORDER))
    processor.back = True
    calls = processor.calls
    await retry(database, store, processor)(ORDER, 0)

    assert processor.calls == calls  # the processor was not asked
    assert await waiting(database) == []
    assert await payment_handlers.authorized_payment(store, "order-o-1") is None
    assert await published_subjects(database) == []


async def make_due(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.execute(
            charges_waiting.update().values(next_attempt_time=utc_now() - timedelta(seconds=1))
        )


async def test_a_round_tries_the_charges_that_are_due(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)
    retries = ChargeRetries(database, retry(database, store, processor))
    calls = processor.calls
    assert await retries.round() == 0  # its next try is not due yet
    assert processor.calls == calls
    await make_due(database)
    assert await retries.round() == 1  # still away: put off
    assert await waiting(database) == [(ORDER, 1)]
    processor.back = True
    await make_due(database)
    assert await retries.round() == 1
    assert await waiting(database) == []
    assert await published_subjects(database) == [subject("payments", "payment_captured")]


async def test_the_running_loop_settles_a_charge_once_the_processor_is_back(
    database: Database, store: SqlPaymentsStore, processor: ProcessorAway
) -> None:
    await charge_while_away(database, store, processor)
    processor.back = True
    async with AsyncExitStack() as stack:
        ChargeRetries.start(database, retry(database, store, processor), stack)
        await eventually(lambda: settled(database), "the waiting charge settled", within=5)
    assert await published_subjects(database) == [subject("payments", "payment_captured")]


async def settled(database: Database) -> bool:
    return await waiting(database) == []
