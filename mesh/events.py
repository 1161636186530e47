"""The event bus: NATS JetStream, a transactional outbox, idempotent consumers, dead letters.

Every event is a `shop.events.v1.EventEnvelope`, binary on the wire, published on
`shop.<producer>.<event>` (snake case, e.g. `shop.orders.order_placed`).

* **Outbox.** A service never publishes from a request: `SqlTransaction.enqueue_event`
  (`mesh.storage`) writes the event into
  the service's own `outbox` table in the transaction that makes the change, so an event
  exists exactly when its change was committed. `OutboxRelay` publishes pending events
  in order with `Nats-Msg-Id` = event id and marks them published only after JetStream
  acknowledged them; it retries with backoff and, after a crash, publishes again what
  it had not marked, which JetStream drops as duplicates within the dedup window.
* **Streams.** `SHOP_EVENTS` holds `shop.>`: file storage (the server fsyncs every write,
  `sync_interval: always`), kept for 7 days (limits retention: events are facts that
  several consumers read at their own pace, and a replay needs them), and a 10 minute
  duplicate window, longer than any relay retry loop. `SHOP_DEAD_LETTERS` holds
  `dead.>` for 30 days.
* **Consumers.** `EventConsumer` is a durable pull consumer with explicit acks, an ack
  wait and growing redelivery delays. Its handler runs in a transaction of the
  consumer's database that also records the event id in `processed_events`, so a
  redelivered event (after a crash between commit and ack) changes nothing twice.
* **Dead letters.** An undecodable message, or one that failed on its last allowed
  delivery, is republished to `dead.<consumer>` with the reason, the consumer and the
  original subject in headers and the original body, then terminated, so the good
  messages behind it keep flowing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import nats
import sqlalchemy as sa
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncConnection

from mesh.storage import Database, outbox, processed_events, utc_now
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)

EVENTS_STREAM = "SHOP_EVENTS"
EVENTS_SUBJECTS = "shop.>"
DEAD_LETTER_STREAM = "SHOP_DEAD_LETTERS"
DEAD_LETTER_PREFIX = "dead"
#: Longer than any window in which the relay may publish one event twice.
DUPLICATE_WINDOW_SECONDS = 600.0
EVENTS_MAX_AGE_SECONDS = 7 * 24 * 3600.0
DEAD_LETTERS_MAX_AGE_SECONDS = 30 * 24 * 3600.0

#: Headers of a dead letter.
DEAD_REASON = "Shop-Dead-Reason"
DEAD_CONSUMER = "Shop-Dead-Consumer"
DEAD_SUBJECT = "Shop-Dead-Subject"
MSG_ID = "Nats-Msg-Id"


async def ensure_streams(js: JetStreamContext) -> None:
    """Create (or bring up to date) the event and dead-letter streams."""
    for config in (
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[EVENTS_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=EVENTS_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=DEAD_LETTERS_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
    ):
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)


class OutboxRelay:
    """Publishes a service's committed events, in order, at least once (see module doc)."""

    def __init__(
        self,
        database: Database,
        js: JetStreamContext,
        *,
        batch: int = 100,
        idle_seconds: float = 0.1,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._database = database
        self._js = js
        self._batch = batch
        self._idle = idle_seconds
        self._max_backoff = max_backoff_seconds

    async def publish_pending(self) -> int:
        """Publish what is pending (one batch); return how many were published.

        Each event is marked published right after JetStream acknowledges it, so a
        failure part-way leaves the rest pending, in order, for the next round.
        """
        async with self._database.snapshot() as connection:
            rows = (
                await connection.execute(
                    sa.select(outbox.c.event_id, outbox.c.subject, outbox.c.payload)
                    .where(outbox.c.published_time.is_(None))
                    .order_by(outbox.c.create_time, outbox.c.event_id)
                    .limit(self._batch)
                )
            ).all()
        for row in rows:
            await self._js.publish(row.subject, row.payload, headers={MSG_ID: row.event_id})
            async with self._database.transaction() as connection:
                await connection.execute(
                    outbox.update()
                    .where(outbox.c.event_id == row.event_id)
                    .values(published_time=utc_now())
                )
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; back off (up to a few seconds) while NATS is away."""
        backoff = self._idle
        while not stop.is_set():
            try:
                published = await self.publish_pending()
                backoff = self._idle
                delay = 0.0 if published else self._idle
            except Exception as error:  # NATS away, timeouts: try again later
                log.warning("outbox relay: %s; retrying in %.1fs", error, backoff)
                delay, backoff = backoff, min(backoff * 2, self._max_backoff)
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)


Handler = Callable[[AsyncConnection, events_pb2.EventEnvelope], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerPolicy:
    """How patiently a consumer retries an event before it becomes a dead letter."""

    ack_wait_seconds: float = 30.0
    redelivery_delays: Sequence[float] = (1.0, 2.0, 5.0, 10.0)

    @property
    def max_deliver(self) -> int:
        return len(self.redelivery_delays) + 1


class EventConsumer:
    """A durable, idempotent consumer of some events (see module doc)."""

    def __init__(
        self,
        database: Database,
        js: JetStreamContext,
        *,
        name: str,
        subject: str,
        handler: Handler,
        policy: ConsumerPolicy = ConsumerPolicy(),
    ) -> None:
        self._database = database
        self._js = js
        self.name = name
        self._subject = subject
        self._handler = handler
        self._policy = policy
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def subscribe(self) -> None:
        self._subscription = await self._js.pull_subscribe(
            self._subject,
            durable=self.name,
            stream=EVENTS_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._policy.ack_wait_seconds,
                max_deliver=self._policy.max_deliver,
                backoff=list(self._policy.redelivery_delays),
            ),
        )

    async def _dead_letter(self, message: Msg, reason: str) -> None:
        subject = message.subject
        await self._js.publish(
            f"{DEAD_LETTER_PREFIX}.{self.name}",
            message.data,
            headers={DEAD_REASON: reason[:500], DEAD_CONSUMER: self.name, DEAD_SUBJECT: subject},
        )

    async def _apply(self, envelope: events_pb2.EventEnvelope) -> bool:
        """Run the handler once per event id; False when the event was already applied."""
        async with self._database.transaction() as connection:
            seen = (
                await connection.execute(
                    sa.select(processed_events.c.event_id).where(
                        processed_events.c.consumer == self.name,
                        processed_events.c.event_id == envelope.event_id,
                    )
                )
            ).first()
            if seen is not None:
                return False
            await self._handler(connection, envelope)
            await connection.execute(
                processed_events.insert().values(
                    consumer=self.name, event_id=envelope.event_id, processed_time=utc_now()
                )
            )
        return True

    async def handle(self, message: Msg) -> None:
        """Apply one message, then ack it; or retry it later; or dead-letter it."""
        try:
            envelope = events_pb2.EventEnvelope.FromString(message.data)
            if not envelope.event_id:
                raise DecodeError("no event id")
        except DecodeError as error:
            await self._dead_letter(message, f"malformed event: {error}")
            await message.term()
            return
        try:
            await self._apply(envelope)
        except Exception as error:
            delivered = message.metadata.num_delivered
            if delivered >= self._policy.max_deliver:
                await self._dead_letter(message, f"failed {delivered} times: {error}")
                await message.term()
            else:
                log.warning("%s: event %s failed: %s", self.name, envelope.event_id, error)
                await message.nak(delay=self._policy.redelivery_delays[delivered - 1])
            return
        await message.ack()

    async def run(self, stop: asyncio.Event, batch: int = 20) -> None:
        """Fetch and handle messages until `stop` is set."""
        if self._subscription is None:
            await self.subscribe()
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
            for message in messages:
                await self.handle(message)


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on, as the dead-letter stream keeps it."""

    sequence: int
    consumer: str
    subject: str
    reason: str
    time: str
    data: bytes

    def describe(self) -> dict[str, object]:
        """What an operator needs to see, the event decoded where it decodes."""
        try:
            event: object = MessageToDict(events_pb2.EventEnvelope.FromString(self.data))
        except DecodeError:
            event = {"undecodable": self.data[:200].hex()}
        return {
            "sequence": self.sequence,
            "consumer": self.consumer,
            "subject": self.subject,
            "reason": self.reason,
            "time": self.time,
            "event": event,
        }


async def dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    """Every dead letter still kept, oldest first."""
    state = (await js.stream_info(DEAD_LETTER_STREAM)).state
    found = []
    for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        try:
            found.append(await dead_letter(js, sequence))
        except NotFoundError:
            continue  # replayed (deleted) since
    return found


async def dead_letter(js: JetStreamContext, sequence: int) -> DeadLetter:
    message = await js.get_msg(DEAD_LETTER_STREAM, sequence)
    headers = message.headers or {}
    return DeadLetter(
        sequence=sequence,
        consumer=headers.get(DEAD_CONSUMER, ""),
        subject=headers.get(DEAD_SUBJECT, ""),
        reason=headers.get(DEAD_REASON, ""),
        time=str(message.time or ""),
        data=message.data or b"",
    )


async def replay(js: JetStreamContext, sequence: int) -> DeadLetter:
    """Publish a dead letter again on its original subject, then drop it from the stream.

    Consumers that had applied it already skip it (they remember event ids); the one that
    gave up applies it now, if its cause was fixed. The message id is new, so JetStream's
    duplicate window does not swallow the replay.
    """
    letter = await dead_letter(js, sequence)
    if not letter.subject.startswith("shop."):
        raise ValueError(f"dead letter {sequence} names no event subject ({letter.subject!r})")
    await js.publish(
        letter.subject, letter.data, headers={MSG_ID: f"replay-{sequence}-{uuid.uuid4()}"}
    )
    await js.delete_msg(DEAD_LETTER_STREAM, sequence)
    return letter


async def start_relay(database: Database, nats_url: str | None, stack: AsyncExitStack) -> None:
    """Run an `OutboxRelay` for `database` until `stack` unwinds.

    It connects in the background, so a service starts (and its outbox fills) even while
    NATS is away; without a URL, events wait in the outbox for a relay that has one.
    """
    if not nats_url:
        log.warning("no SHOP_NATS_URL: events stay in the outbox until a relay publishes them")
        return
    stop = asyncio.Event()

    async def relay() -> None:
        delay = 0.1
        while not stop.is_set():
            try:
                client = await nats.connect(
                    nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5
                )
                break
            except Exception as error:  # not up yet: try again
                log.warning("outbox relay: cannot reach NATS (%s); retrying", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
        else:
            return
        try:
            await OutboxRelay(database, client.jetstream()).run(stop)
        finally:
            await client.close()

    task = asyncio.create_task(relay(), name="outbox-relay")

    async def stop_relay() -> None:
        stop.set()
        await task

    stack.push_async_callback(stop_relay)
