"""A service's durable, idempotent consumer of the events it handles, in batches.

Each consuming service has one durable pull consumer, named after it and shared by its
replicas, created by the mesh with the subjects `mesh.yaml` lists under its `consumes:`
(`ensure_consumer`); the service only binds to it and checks that those are the
subjects it has handlers for. Explicit acks, growing redelivery delays, `max_deliver`
(see `ConsumerPolicy`). A handler makes its change in the `Delivery`'s transaction,
which also records the event id in `processed_events`, so a redelivered event (after a
crash between commit and ack) changes nothing twice. A fetched batch is applied in one
database transaction (`EventConsumer`). An undecodable message, an event on a subject
that is not its own, or one that failed on its last allowed delivery, is a dead letter
(`mesh.control.deadletters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import signal
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.runtime import metrics, telemetry
from mesh.runtime.connection import Connection
from mesh.runtime.events import (
    DEAD_CONSUMER,
    DEAD_REASON,
    DEAD_SEQUENCE,
    DEAD_SUBJECT,
    ENTITIES_STREAM,
    EVENTS_STREAM,
    MSG_ID,
    consumer_dead_subject,
    messaging_attributes,
    rebuild_consumer,
    waves,
)
from mesh.runtime.storage import (
    Database,
    event_subject,
    ordering_key,
    processed_events,
    subject_filter,
    utc_now,
)
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsumerPolicy:
    """How patiently a consumer retries an event before it becomes a dead letter.

    A failed event is nak'ed with a growing delay (1 s, 2 s, 5 s, 10 s), so one that
    fails because something is briefly away is not retried in a tight loop, and one
    that keeps failing is a dead letter after `max_deliver` tries (about 20 s in all).
    An event whose consumer died before acking it comes back after `ack_wait`; while
    a batch is being worked through, the consumer tells JetStream it is still at it
    (`in_progress`), so a slow batch is not redelivered under its feet. (JetStream's
    own `backoff` option is not used: it would also replace the ack wait of the first
    delivery by its first delay.)
    """

    ack_wait_seconds: float = 5.0
    redelivery_delays: Sequence[float] = (1.0, 2.0, 5.0, 10.0)
    #: Unacknowledged messages a consumer may have out at once (over all its replicas).
    max_ack_pending: int = 1000

    @property
    def max_deliver(self) -> int:
        return len(self.redelivery_delays) + 1


def consumer_config(name: str, subjects: Sequence[str], policy: ConsumerPolicy) -> ConsumerConfig:
    """The durable pull consumer `name` of the events on `subjects`, in stream order."""
    return ConsumerConfig(
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=policy.ack_wait_seconds,
        max_deliver=policy.max_deliver,
        max_ack_pending=policy.max_ack_pending,
        filter_subjects=sorted(subjects),
    )


async def ensure_consumer(
    js: JetStreamContext,
    name: str,
    subjects: Sequence[str],
    policy: ConsumerPolicy = ConsumerPolicy(),
) -> None:
    """Create the durable consumer `name`, or bring its subjects and policy up to date.

    The mesh creates every consumer (a service's identity may only use its own, see
    `mesh.control.natsconf`), so what a service reads is decided by `mesh.yaml`, not by the
    service.
    """
    await js.add_consumer(EVENTS_STREAM, consumer_config(name, subjects, policy))


#: JetStream's `max_deliver` for "no limit".
UNTIL_ACKNOWLEDGED = -1


async def request_rebuild(
    js: JetStreamContext, service: str, subjects: Sequence[str], *, again: bool = True
) -> ConsumerInfo:
    """Ask for `service`'s read model to be rebuilt from the first event `SHOP_ENTITIES`
    keeps of `subjects`: its rebuild consumer (`rebuild_consumer`), which the service
    works through into a new generation, serving the old one until it has caught up.
    `again` replaces a rebuild that is running (its generation is given up); without
    it, a running one is kept."""
    name = rebuild_consumer(service)
    if again:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(ENTITIES_STREAM, name)
    # Delivered until acknowledged, however often: an event given up on would be missing
    # from the generation that then serves (a live consumer dead-letters it instead).
    config = dataclasses.replace(
        consumer_config(name, subjects, ConsumerPolicy()), max_deliver=UNTIL_ACKNOWLEDGED
    )
    return await js.add_consumer(ENTITIES_STREAM, config)


class AlreadyApplied(Exception):
    """The event was applied before (raised inside `Delivery.transaction`)."""


Handler = Callable[["Delivery"], Awaitable[None]]


class Outcome(enum.Enum):
    """What became of one event of a batch."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    FAILED = "failed"


class Delivery:
    """One event handed to a handler, with the transaction its effect belongs in.

    A handler makes its change, and writes the events it emits (`mesh.runtime.storage.
    enqueue_event`), inside `transaction()`: its part (a savepoint) of the one database
    transaction of its batch, which also records the event id as processed by this
    consumer, so the effect, the follow-up events and the record commit together or not
    at all. Work that must not hold the write lock (a call to another system, with an
    idempotency key) is done before `transaction()`, while the other events of the batch
    do theirs. A handler that opens no transaction (the event means nothing to it) is
    recorded anyway.
    """

    def __init__(self, consumer: EventConsumer, envelope: events_pb2.EventEnvelope) -> None:
        self.envelope = envelope
        self._consumer = consumer
        loop = asyncio.get_running_loop()
        #: Done once the handler asks for its transaction.
        self.waiting: asyncio.Future[None] = loop.create_future()
        #: The batch's connection, inside the event's savepoint (or `AlreadyApplied`).
        self.granted: asyncio.Future[Connection] = loop.create_future()

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A read-only view of the consumer's database, for work before the transaction."""
        return self._consumer.database.snapshot()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """The event's part of its batch's transaction; raises `AlreadyApplied` for a repeat."""
        if self.waiting.done():
            raise RuntimeError("an event is applied in one transaction")
        self.waiting.set_result(None)
        yield await self.granted


@dataclass
class _Work:
    """An event of a batch on its way: its handler running in a task of its own."""

    delivery: Delivery
    task: asyncio.Task[None]
    outcome: Outcome = Outcome.FAILED
    error: BaseException | None = None

    @property
    def event_id(self) -> str:
        return self.delivery.envelope.event_id

    async def ready(self) -> None:
        """Until the handler waits for its transaction, or ended without one."""
        await asyncio.wait((self.task, self.delivery.waiting), return_when=FIRST_COMPLETED)

    def discard(self) -> None:
        """Stop the handler if it still runs (the batch gave up on it); its error was
        taken into the outcome already, or does not matter any more."""
        self.task.cancel()
        if self.task.done() and not self.task.cancelled():
            self.task.exception()

    def settle_early(self) -> None:
        """The handler ended before asking for a transaction: failed, or needs none."""
        self.error = None if self.task.cancelled() else self.task.exception()
        self.outcome = Outcome.FAILED if self.error else Outcome.APPLIED


class EventConsumer:
    """A service's durable, idempotent consumer of the events it handles (see module doc).

    `handlers` maps each subject to its handler; the consumer (created by the mesh,
    see `ensure_consumer`) must deliver exactly those subjects, which `bind` checks, so
    `mesh.yaml` and the code cannot drift apart unnoticed.

    Events are handled in batches: what one fetch returns, cut where an order's (or an
    entity's) second event would join the batch, so its events are applied one after the other,
    each seeing the one before committed. The handlers of a batch run side by side up to
    their transactions, which then run one after the other as savepoints of one database
    transaction (one commit, one fsync, for the batch); each event is acked after it.
    An event whose handler fails has its savepoint rolled back and is retried on its
    own, the others commit; if the commit itself fails, each event is tried again alone.
    """

    def __init__(
        self,
        database: Database,
        js: JetStreamContext,
        *,
        name: str,
        handlers: Mapping[str, Handler],
        policy: ConsumerPolicy = ConsumerPolicy(),
    ) -> None:
        self.database = database
        self._js = js
        self.name = name
        self._handlers = dict(handlers)
        self._policy = policy
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._chaos = ChaosPoints.of(name)

    async def bind(self) -> None:
        """Attach to the durable consumer; refuse one that delivers other subjects."""
        info = await self._js.consumer_info(EVENTS_STREAM, self.name)
        config = info.config
        delivered = set(
            config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
        )
        if delivered != set(self._handlers):
            raise ConsumerMismatch(
                f"consumer {self.name!r} delivers {sorted(delivered)} but the service "
                f"handles {sorted(self._handlers)}: make its `consumes:` in mesh.yaml match"
            )
        self._subscription = await self._js.pull_subscribe_bind(
            consumer=self.name, stream=EVENTS_STREAM
        )

    async def _dead_letter(self, message: Msg, reason: str) -> None:
        metrics.EVENTS.labels(self.name, "dead").inc()
        sequence = message.metadata.sequence.stream
        await self._js.publish(
            consumer_dead_subject(self.name),
            message.data,
            headers={
                DEAD_REASON: reason[:500],
                DEAD_CONSUMER: self.name,
                DEAD_SUBJECT: message.subject,
                DEAD_SEQUENCE: str(sequence),
                MSG_ID: f"dead-{self.name}-{sequence}",
            },
        )
        await message.term()

    def _decode(self, message: Msg) -> events_pb2.EventEnvelope:
        """The event in `message`; `DecodeError` when it is not one this consumer takes."""
        envelope = events_pb2.EventEnvelope.FromString(message.data)
        try:
            subject = event_subject(envelope)
        except ValueError as error:
            raise DecodeError(str(error)) from None
        if subject != message.subject:
            raise DecodeError(f"a {subject} event published on {message.subject}")
        if subject_filter(subject) not in self._handlers:
            raise DecodeError(f"{self.name} has no handler for {subject}")
        return envelope

    async def apply(
        self,
        envelopes: Sequence[events_pb2.EventEnvelope],
        parents: Sequence[Context] | None = None,
    ) -> list[tuple[Outcome, BaseException | None]]:
        """Apply a batch of events (see the class doc); the outcome of each, in order.

        `parents` are the trace contexts the events' spans continue (default: the ones
        the envelopes carry). The events must be of distinct orders, or be applied
        one after the other.
        """
        if parents is None:
            parents = [telemetry.event_context(e.trace_context) for e in envelopes]
        async with self.database.snapshot() as connection:  # not even started again
            seen = await _processed(connection, self.name, [e.event_id for e in envelopes])
        fresh = [(e, p) for e, p in zip(envelopes, parents, strict=True) if e.event_id not in seen]
        outcomes = dict(await self._apply_fresh(fresh))
        return [outcomes.get(e.event_id, (Outcome.DUPLICATE, None)) for e in envelopes]

    async def _apply_fresh(
        self, batch: Sequence[tuple[events_pb2.EventEnvelope, Context]]
    ) -> list[tuple[str, tuple[Outcome, BaseException | None]]]:
        """Apply events not seen applied before; each event id with its outcome."""
        if not batch:
            return []
        works = [self._start(envelope, parent) for envelope, parent in batch]
        try:
            await asyncio.gather(*(work.ready() for work in works))
            await self._commit(works)
        except Exception as error:  # the transaction, or its one event: each alone
            if len(works) > 1:
                return [found for one in batch for found in await self._apply_fresh([one])]
            works[0].outcome, works[0].error = Outcome.FAILED, error
        finally:
            for work in works:
                work.discard()
        return [(work.event_id, (work.outcome, work.error)) for work in works]

    def _start(self, envelope: events_pb2.EventEnvelope, parent: Context) -> _Work:
        delivery = Delivery(self, envelope)
        handler = self._handlers[subject_filter(event_subject(envelope))]
        return _Work(delivery, asyncio.create_task(self._handle(delivery, handler, parent)))

    async def _handle(self, delivery: Delivery, handler: Handler, parent: Context) -> None:
        """Run `handler` in the event's consumer span."""
        envelope = delivery.envelope
        subject = event_subject(envelope)
        with telemetry.tracer.start_as_current_span(
            f"{subject} process", context=parent, kind=SpanKind.CONSUMER
        ) as span:
            messaging_attributes(span, subject, envelope)
            span.set_attribute("messaging.consumer.group.name", self.name)
            try:
                await handler(delivery)
            except AlreadyApplied:
                raise
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, str(error)))
                raise

    async def _commit(self, works: Sequence[_Work]) -> None:
        """The batch's transaction: each event's savepoint in turn, then the records."""
        async with self.database.transaction() as connection:
            applied = await _processed(connection, self.name, [w.event_id for w in works])
            for position, work in enumerate(works):
                await self._apply_one(connection, work, work.event_id in applied, len(works) > 1)
                if work.outcome is Outcome.APPLIED:
                    self._chaos.staged(position, len(works))
            recorded = [w.event_id for w in works if w.outcome is Outcome.APPLIED]
            if recorded:
                now = utc_now()
                await connection.execute(
                    _RECORD_PROCESSED,
                    [
                        {"consumer": self.name, "event_id": e, "processed_time": now}
                        for e in recorded
                    ],
                )

    async def _apply_one(
        self, connection: Connection, work: _Work, applied: bool, neighbours: bool
    ) -> None:
        """Let one event's handler into the transaction, in a savepoint if it has
        neighbours (alone, its error rolls the whole transaction back)."""
        if work.task.done():
            work.settle_early()
            if applied and work.outcome is Outcome.APPLIED:
                work.outcome = Outcome.DUPLICATE
            return
        if applied:
            work.delivery.granted.set_exception(AlreadyApplied(work.event_id))
            with contextlib.suppress(AlreadyApplied):
                await work.task
            work.outcome = Outcome.DUPLICATE
            return
        if not neighbours:
            work.delivery.granted.set_result(connection)
            await work.task
            work.outcome = Outcome.APPLIED
            return
        try:
            async with connection.begin_nested():
                work.delivery.granted.set_result(connection)
                await work.task
        except Exception as error:
            work.outcome, work.error = Outcome.FAILED, error
        else:
            work.outcome = Outcome.APPLIED

    async def _settle(self, message: Msg, outcome: Outcome, error: BaseException | None) -> None:
        """Ack an applied or repeated event; retry a failed one later, or dead-letter it."""
        metrics.EVENTS.labels(self.name, outcome.value).inc()
        if outcome is Outcome.APPLIED:
            self._chaos.committed()
        if outcome is not Outcome.FAILED:
            await message.ack()
            return
        delivered = message.metadata.num_delivered
        if delivered >= self._policy.max_deliver:
            await self._dead_letter(message, f"failed {delivered} times: {error}")
            return
        metrics.EVENTS.labels(self.name, "retried").inc()
        log.warning("%s: event %s failed: %s", self.name, message.subject, error)
        await message.nak(delay=self._policy.redelivery_delays[delivered - 1])

    async def handle(self, messages: Sequence[Msg]) -> None:
        """Apply fetched messages in batches (see the class doc), settling each."""
        decoded: list[tuple[Msg, events_pb2.EventEnvelope]] = []
        for message in messages:
            try:
                decoded.append((message, self._decode(message)))
            except DecodeError as error:
                await self._settled(self._dead_letter(message, f"malformed event: {error}"))
        for batch in waves(decoded, key=lambda pair: ordering_key(pair[1])):
            await self._handle_batch(batch)

    async def _handle_batch(self, batch: Sequence[tuple[Msg, events_pb2.EventEnvelope]]) -> None:
        parents = [telemetry.event_context(m.headers, e.trace_context) for m, e in batch]
        outcomes = await self.apply([e for _, e in batch], parents)
        for (message, _), (outcome, error) in zip(batch, outcomes, strict=True):
            await self._settled(self._settle(message, outcome, error))
        last = batch[-1][0]
        metrics.CONSUMER_PENDING.labels(self.name).set(last.metadata.num_pending or 0)

    async def _settled(self, settling: Awaitable[None]) -> None:
        try:
            await settling
        except Exception as error:  # NATS away while settling it: JetStream redelivers
            log.warning("%s: could not settle a message: %s", self.name, error)

    async def run(self, stop: asyncio.Event, batch: int = 64) -> None:
        """Fetch and handle messages, in stream order, until `stop` is set."""
        if self._subscription is None:
            await self.bind()
        assert self._subscription is not None
        while not stop.is_set():
            try:
                messages = await self._subscription.fetch(batch, timeout=0.5)
            except TimeoutError:
                continue
            except Exception as error:  # NATS away: wait, then fetch again
                log.warning("%s: fetch failed: %s", self.name, error)
                await asyncio.sleep(0.5)
                continue
            keeper = asyncio.create_task(self._keep_in_progress(messages))
            try:
                await self.handle(messages)
            finally:
                keeper.cancel()

    async def _keep_in_progress(self, messages: Sequence[Msg]) -> None:
        """Reset the ack wait of the fetched messages not settled yet, until all are."""
        while True:
            await asyncio.sleep(self._policy.ack_wait_seconds / 3)
            for message in messages:  # JetStream ignores it for one settled already
                with contextlib.suppress(Exception):
                    await message.in_progress()


_PROCESSED = sa.select(processed_events.c.event_id).where(
    processed_events.c.consumer == sa.bindparam("consumer"),
    processed_events.c.event_id.in_(sa.bindparam("event_ids", expanding=True)),
)
_RECORD_PROCESSED = processed_events.insert()


async def _processed(connection: Connection, consumer: str, event_ids: Sequence[str]) -> set[str]:
    """Which of `event_ids` `consumer` applied already."""
    found = await connection.execute(_PROCESSED, {"consumer": consumer, "event_ids": event_ids})
    return set(found.scalars())


#: Fault injection for crash tests, each `<consumer>:<N>[,...]`: the consumer's process
#: kills itself (SIGKILL) after committing every Nth event and before acknowledging it,
#: the window where a crash makes JetStream deliver an applied event again
#: (`SHOP_CHAOS_KILL_AFTER_COMMIT`); or, inside a batch's transaction, once its Nth
#: event was applied and before the next of the batch (`SHOP_CHAOS_KILL_IN_BATCH`).
CHAOS_KILL_AFTER_COMMIT = "SHOP_CHAOS_KILL_AFTER_COMMIT"
CHAOS_KILL_IN_BATCH = "SHOP_CHAOS_KILL_IN_BATCH"


def chaos_kill_every(consumer: str, variable: str = CHAOS_KILL_AFTER_COMMIT) -> int | None:
    """N for `consumer` in the fault-injection `variable`, if it names it."""
    for entry in os.environ.get(variable, "").split(","):
        name, _, every = entry.strip().partition(":")
        if name == consumer and every.isdigit() and int(every) > 0:
            return int(every)
    return None


@dataclass
class ChaosPoints:
    """The consumer's fault-injection points (see `CHAOS_KILL_AFTER_COMMIT`)."""

    name: str
    after_commit: int | None
    in_batch: int | None
    committed_count: int = 0

    @classmethod
    def of(cls, consumer: str) -> ChaosPoints:
        return cls(
            consumer,
            chaos_kill_every(consumer, CHAOS_KILL_AFTER_COMMIT),
            chaos_kill_every(consumer, CHAOS_KILL_IN_BATCH),
        )

    def committed(self) -> None:
        """An event was committed and is about to be acked."""
        self.committed_count += 1
        if self.after_commit and self.committed_count % self.after_commit == 0:
            self._kill("after commit, before ack")

    def staged(self, position: int, size: int) -> None:
        """The event at `position` of a batch of `size` was applied, uncommitted: once N
        events were committed, the first with another event behind it in its batch ends
        the process (after a restart, N more must commit first: the batch goes through)."""
        if self.in_batch and self.committed_count >= self.in_batch and position < size - 1:
            self._kill(f"in a batch, {position + 1} of {size} events applied, none committed")

    def _kill(self, where: str) -> None:
        log.critical("%s: chaos: killed %s", self.name, where)
        os.kill(os.getpid(), signal.SIGKILL)


class ConsumerMismatch(RuntimeError):
    """A service's handlers and its consumer's subjects differ."""
