"""The event bus: NATS JetStream, a transactional outbox, idempotent consumers, dead letters.

Every event is a `shop.events.v1.EventEnvelope`, binary on the wire, published on
`shop.<producer>.<event>` (snake case, e.g. `shop.orders.order_placed`).

* **Outbox.** A service never publishes from a request: `SqlTransaction.enqueue_event`
  (`mesh.storage`) writes the event into
  the service's own `outbox` table in the transaction that makes the change, so an event
  exists exactly when its change was committed. `OutboxRelay` publishes pending events
  with `Nats-Msg-Id` = event id, side by side but each order's in the order written,
  and has them marked published only after JetStream acknowledged them, by the
  service's next write transaction (`Database.mark_published`); it retries with
  backoff and, after a crash, publishes again what was not marked, which JetStream
  drops as duplicates within the dedup window.
* **Streams.** `SHOP_EVENTS` holds `shop.>`: file storage (the server fsyncs every write,
  `sync_interval: always`), kept for 7 days (limits retention: events are facts that
  several consumers read at their own pace, and a replay needs them), and a 10 minute
  duplicate window, longer than any relay retry loop. `SHOP_DEAD_LETTERS` holds
  `dead.>` for 30 days. (`mesh.deadletters` reads and replays them.)
* **Consumers** (`mesh.consumer`): one durable pull consumer per consuming service,
  idempotent, applying a fetched batch in one database transaction; what it gives up
  on is a dead letter on `dead.<consumer>` (`mesh.deadletters`).
* **A service's bus** (`mesh.eventbus.start_event_bus`): its relay and its consumer.
* **Security.** Over TLS with the mesh's certificates, each service limited to its own
  subjects and consumer: see `mesh.natsconf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from opentelemetry.trace import Span, SpanKind

from mesh import metrics, telemetry
from mesh.storage import Database, outbox, utc_now
from mesh.timestamps import to_timestamp
from mesh.validation import fit
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)


class _SslEofNoise(logging.Filter):
    """Drop asyncio's warning that nats-py's protocol returns True from `eof_received`
    on a TLS connection: said once per closed connection, and harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_SslEofNoise())

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


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create (or bring up to date) the event and dead-letter streams.

    `replicas` copies of each are kept in a NATS cluster (3 on Kubernetes: a stream
    survives losing one server); a single server keeps 1.
    """
    for config in (
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[EVENTS_SUBJECTS],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=EVENTS_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=DEAD_LETTERS_MAX_AGE_SECONDS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
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
        idle_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._database = database
        self._js = js
        self._batch = batch
        self._idle = idle_seconds
        self._max_backoff = max_backoff_seconds
        self._pending = (
            sa.select(outbox.c.event_id, outbox.c.subject, outbox.c.payload)
            .where(outbox.c.published_time.is_(None))
            .order_by(outbox.c.create_time, outbox.c.event_id)
            .limit(batch)
        )

    async def publish_pending(self) -> int:
        """Publish what is pending (one batch); return how many were published.

        Events go out side by side, their acknowledgements awaited together, except that
        an order's events go one after the other, in the order they were written: the
        batch is cut into waves where each order appears once. The events JetStream
        acknowledged are handed to the database to be marked published together by its
        next write transaction (`Database.mark_published`; at the latest by the next
        round's), also when a failure stops the batch after a wave, which leaves the
        rest pending, in order, for the next round. A crash before the marking
        publishes them again later, and JetStream drops those copies (same message id,
        within the duplicate window).
        """
        await self._database.flush_published_marks()
        async with self._database.snapshot() as connection:
            rows = (await connection.execute(self._pending)).all()
        pending = [
            (
                row.event_id,
                row.subject,
                row.payload,
                events_pb2.EventEnvelope.FromString(row.payload),
            )
            for row in rows
        ]
        acknowledged: list[str] = []
        try:
            for wave in waves(pending, key=lambda event: event[3].order_id):
                results = await asyncio.gather(
                    *(self._publish(*event) for event in wave), return_exceptions=True
                )
                acknowledged += [e[0] for e, r in zip(wave, results, strict=True) if r is None]
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    raise failed[0]
        finally:
            self._database.mark_published(acknowledged)
        return len(rows)

    async def _publish(
        self, event_id: str, subject: str, payload: bytes, envelope: events_pb2.EventEnvelope
    ) -> None:
        """Publish one event in a producer span of the trace that raised it."""
        parent = telemetry.event_context(envelope.trace_context)
        with telemetry.tracer.start_as_current_span(
            f"{subject} publish", context=parent, kind=SpanKind.PRODUCER
        ) as span:
            messaging_attributes(span, subject, envelope)
            headers = {MSG_ID: event_id}
            telemetry.inject(headers)
            await self._js.publish(subject, payload, headers=headers)  # the bytes as written

    async def _count_pending(self) -> None:
        """Set `shop_outbox_pending`: counted while events wait (a full batch went out,
        or NATS is away); a round that published less than a batch left none behind."""
        async with self._database.snapshot() as connection:
            pending = await connection.execute(
                sa.select(sa.func.count()).where(outbox.c.published_time.is_(None))
            )
            metrics.OUTBOX_PENDING.set(pending.scalar_one() - self._database.unmarked)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; back off (up to a few seconds) while NATS is away.

        Between rounds it waits for the next poll (`idle_seconds`), or less: until a
        transaction of this process commits an event, which is then published at once.
        The poll finds what nothing woke it for: events another process (a replica that
        died, say) left behind; so it can be rare, and an idle service costs next to
        nothing. A round that published less than a batch left nothing behind, so the
        next waits; one that published a full batch goes on at once. On the way out,
        the marks of what it published are written.
        """
        backoff = self._idle
        written = self._database.outbox_written
        while not stop.is_set():
            written.clear()  # before reading: a commit from now on wakes the next wait
            wakers = [stop]
            try:
                published = await self.publish_pending()
                if published < self._batch:
                    metrics.OUTBOX_PENDING.set(0)
                else:
                    await self._count_pending()
                backoff = self._idle
                delay = 0.0 if published >= self._batch else self._idle
                wakers.append(written)
            except Exception as error:  # NATS away, timeouts: try again later
                log.warning("outbox relay: %s; retrying in %.1fs", error, backoff)
                delay, backoff = backoff, min(backoff * 2, self._max_backoff)
                with contextlib.suppress(Exception):
                    await self._count_pending()
            if delay:
                await _first_of(wakers, delay)
        with contextlib.suppress(Exception):  # left unmarked: published again, dropped
            await self._database.flush_published_marks()


Item = TypeVar("Item")


def waves(items: Sequence[Item], key: Callable[[Item], str]) -> Iterator[list[Item]]:
    """`items` in order, cut before an item whose `key` (an order id) the wave has already:
    what a wave holds may be handled side by side without reordering one key's items."""
    wave: list[Item] = []
    keys: set[str] = set()
    for item in items:
        if key(item) in keys:
            yield wave
            wave, keys = [], set()
        wave.append(item)
        keys.add(key(item))
    if wave:
        yield wave


async def _first_of(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Wait until one of `events` is set, for at most `seconds`."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def messaging_attributes(span: Span, subject: str, envelope: events_pb2.EventEnvelope) -> None:
    """The OpenTelemetry messaging attributes of an event's span, and its order."""
    span.set_attribute("messaging.system", "nats")
    span.set_attribute("messaging.destination.name", subject)
    span.set_attribute("messaging.message.id", envelope.event_id)
    span.set_attribute(telemetry.ORDER_ID, envelope.order_id)


def inbox_prefix(identity: str) -> str:
    """Where `identity`'s replies arrive; only it may subscribe there (`mesh.natsconf`)."""
    return f"_INBOX_{identity}"


@dataclass(frozen=True)
class NatsSettings:
    """How a process reaches NATS: the URL and, for TLS, the mesh CA and its own leaf.

    `identity` names the process to NATS: its certificate maps to that user (see
    `mesh.natsconf`), and its replies arrive under `_INBOX_<identity>.`, the only
    inbox that user may read.
    """

    url: str
    identity: str = ""
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    server_name: str | None = None

    async def connect(self, **options: Any) -> NatsClient:
        tls = None
        if self.ca_path is not None:
            tls = ssl.create_default_context(cafile=str(self.ca_path))
            if self.cert_path is not None and self.key_path is not None:
                tls.load_cert_chain(str(self.cert_path), str(self.key_path))
        inbox = inbox_prefix(self.identity) if self.identity else "_INBOX"
        return await nats.connect(
            self.url,
            tls=tls,
            tls_hostname=self.server_name,
            inbox_prefix=inbox,
            name=self.identity or None,
            **options,
        )


#: The payload field of `EventEnvelope` for each event message, by its full name.
_PAYLOAD_FIELDS = {
    field.message_type.full_name: field.name
    for field in events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if field.message_type is not None
}


def new_event(producer: str, order_id: str, payload: Message) -> events_pb2.EventEnvelope:
    """An event of `producer` about an order: a new id, the time now, `payload` in its
    slot, its texts shortened to their declared bounds."""
    name = payload.DESCRIPTOR.full_name
    envelope = events_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        type=name,
        order_id=order_id,
        producer=producer,
        occurred_at=to_timestamp(utc_now()),
    )
    getattr(envelope, _PAYLOAD_FIELDS[name]).CopyFrom(payload)
    # A reason may quote another event's: kept to the contract's bounds, so no event
    # outgrows what the bus carries.
    fit(envelope)
    return envelope


def subject(producer: str, event: str) -> str:
    """The subject of `producer`'s `event` (a payload field name): `shop.orders.order_placed`."""
    return f"shop.{producer}.{event}"
