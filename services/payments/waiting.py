"""Charges that wait for the card processor, and the loop that tries them again.

When the processor does not answer a charge (PROVIDER_UNAVAILABLE: payments' sidecar
retried it for the call's whole timeout), the saga's charge handler does not fail its
event, which redelivery would give up on within about 20 s (a dead letter, and an order
PENDING for good): it records that the order's charge waits (`wait_for_processor`), and
the event is done. Each replica of payments runs `ChargeRetries`, which tries every due
charge again (`services.payments.saga.charge_retry`) with growing delays, for as long as
the processor stays away. An answer settles the charge as the event would have, with
`PaymentCaptured` or `PaymentDeclined`, in the transaction that ends the wait, so two
replicas trying one charge settle it once. A cancellation meanwhile ends the wait with
no charge. So an order placed while the processor is away stays PENDING, neither
declined nor cancelled, and goes on once the processor is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime

import sqlalchemy as sa

from mesh.runtime.connection import Connection
from mesh.runtime.storage import Database, utc_now
from services.payments.adapters import charges_waiting

log = logging.getLogger(__name__)

#: How often the loop looks for charges due another try.
POLL_SECONDS = 1.0
#: The most charges one round tries, the longest due first.
BATCH = 32

#: One try of an order's waiting charge: (order id, unanswered tries so far).
Retry = Callable[[str, int], Awaitable[None]]

#: The statements of the charges that wait for the processor.
_WAITING = charges_waiting.select().where(charges_waiting.c.order_id == sa.bindparam("order_id"))
_START_WAITING = charges_waiting.insert()
_DUE = (
    sa.select(charges_waiting.c.order_id, charges_waiting.c.attempts)
    .where(charges_waiting.c.next_attempt_time <= sa.bindparam("now"))
    .order_by(charges_waiting.c.next_attempt_time, charges_waiting.c.order_id)
    .limit(sa.bindparam("limit"))
)
_POSTPONE = (
    charges_waiting.update()
    .where(charges_waiting.c.order_id == sa.bindparam("b_order_id"))
    .values(
        attempts=charges_waiting.c.attempts + 1,
        next_attempt_time=sa.bindparam("next_attempt_time"),
    )
)
_STOP_WAITING = charges_waiting.delete().where(
    charges_waiting.c.order_id == sa.bindparam("order_id")
)


async def wait_for_processor(connection: Connection, order_id: str, first_try: datetime) -> None:
    """Remember that the order's charge waits for the processor, to be tried again at
    `first_try`; an order that waits already keeps its place."""
    if (await connection.execute(_WAITING, {"order_id": order_id})).first() is not None:
        return
    await connection.execute(
        _START_WAITING,
        {"order_id": order_id, "attempts": 0, "next_attempt_time": first_try,
         "create_time": utc_now()},
    )  # fmt: skip


async def charges_due(connection: Connection, now: datetime, limit: int) -> list[tuple[str, int]]:
    """The orders whose charge is due another try by `now`, with the tries made since it
    began to wait, the longest due first."""
    rows = await connection.execute(_DUE, {"now": now, "limit": limit})
    return [(row.order_id, row.attempts) for row in rows]


async def postpone_charge(connection: Connection, order_id: str, next_try: datetime) -> None:
    """Count one more unanswered try of the order's charge; the next at `next_try`."""
    await connection.execute(_POSTPONE, {"b_order_id": order_id, "next_attempt_time": next_try})


async def stop_waiting(connection: Connection, order_id: str) -> bool:
    """End the order's wait; False if it was not waiting (another replica ended it)."""
    return (await connection.execute(_STOP_WAITING, {"order_id": order_id})).rowcount > 0


class ChargeRetries:
    """The loop that tries waiting charges again, from `start` until its stack unwinds."""

    def __init__(self, database: Database, retry: Retry) -> None:
        self._database = database
        self._retry = retry
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, database: Database, retry: Retry, stack: AsyncExitStack) -> ChargeRetries:
        """The loop, running until `stack` unwinds (a try under way is let finish)."""
        retries = cls(database, retry)
        retries._task = asyncio.create_task(retries._run(), name="charge-retries")
        stack.push_async_callback(retries.stop)
        return retries

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def round(self) -> int:
        """Try each charge that is due once, all at once (a processor that hangs keeps each
        waiting for the call's timeout); how many were due."""
        async with self._database.snapshot() as connection:
            due = await charges_due(connection, utc_now(), BATCH)
        tries = [self._retry(order_id, attempts) for order_id, attempts in due]
        for outcome in await asyncio.gather(*tries, return_exceptions=True):
            if isinstance(outcome, Exception):  # the database or the saga's state: next round
                log.warning("a charge waiting for the processor failed: %r", outcome)
        return len(due)

    async def _run(self) -> None:
        while not self._stop.is_set():
            due = 0
            try:
                due = await self.round()
            except Exception as error:  # the database or the saga's state: next round
                log.warning("charges waiting for the processor: %r", error)
            if due < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), POLL_SECONDS)
