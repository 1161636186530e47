"""The event bus: NATS JetStream, a transactional outbox, idempotent consumers, dead letters.

Every event is a `shop.events.v1.EventEnvelope`, binary on the wire, published on
`shop.<producer>.<event>` (snake case, e.g. `shop.orders.order_placed`).

* **Outbox.** A service never publishes from a request: `SqlTransaction.enqueue_event`
  (`mesh.runtime.storage`) writes the event into
  the service's own `outbox` table in the transaction that makes the change, so an event
  exists exactly when its change was committed. `OutboxRelay` publishes pending events
  with `Nats-Msg-Id` = event id, side by side but each order's in the order written,
  and has them marked published only after JetStream acknowledged them, by the
  service's next write transaction (`Database.mark_published`); it retries with
  backoff and, after a crash, publishes again what was not marked, which JetStream
  drops as duplicates within the dedup window. An event the bus refuses for itself
  (too large, a bad request) or keeps failing while it takes the others is **parked**:
  kept in the outbox with the reason, skipped from then on, and reported on
  `dead.<producer>.outbox` (the reason and the event's id and subject, never its
  payload); one event cannot hold up the queue behind it.
* **Streams.** `SHOP_EVENTS` holds `shop.>`: file storage (the server fsyncs every write,
  `sync_interval: always`), kept for 7 days (limits retention: events are facts that
  several consumers read at their own pace, and a replay needs them), and a 10 minute
  duplicate window, longer than any relay retry loop. `SHOP_DEAD_LETTERS` holds
  `dead.>` for 30 days. (`mesh.control.deadletters` reads and replays them.)
  `SHOP_ENTITIES` copies (sources) the events kept per entity (`shop.*.*.*`, the
  catalog's: `shop.catalog.product_updated.<product_id>`) from `SHOP_EVENTS` and keeps
  the latest of each subject for good (`max_msgs_per_subject: 1`, no age limit): the
  last ProductCreated, ProductUpdated and ProductDeleted of every product, each of which
  carries the product's whole state, so a read model is rebuilt from it however old the
  catalog is, in space bounded by three events per product ever made.
* **Consumers** (`mesh.runtime.consumer`): one durable pull consumer per consuming service,
  idempotent, applying a fetched batch in one database transaction; what it gives up
  on is a dead letter on `dead.<consumer>` (`mesh.control.deadletters`).
* **A service's bus** (`mesh.runtime.eventbus.start_event_bus`): its relay and its consumer.
* **Security.** Over TLS with the mesh's certificates, each service limited to its own
  subjects and consumer: see `mesh.control.natsconf`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import nats
import sqlalchemy as sa
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import (
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.errors import BadRequestError, NotFoundError
from opentelemetry.trace import Span, SpanKind

from mesh.runtime import metrics, telemetry
from mesh.runtime.storage import PER_ENTITY_EVENTS, Database, ordering_key, outbox, utc_now
from mesh.runtime.timestamps import to_timestamp
from mesh.runtime.validation import fit
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
ENTITIES_STREAM = "SHOP_ENTITIES"
#: The subjects of the events kept per entity: `shop.<producer>.<event>.<entity_id>`.
ENTITY_SUBJECTS = "shop.*.*.*"
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
#: The event a parked-event notice is about (`dead.<producer>.outbox`).
DEAD_EVENT_ID = "Shop-Dead-Event-Id"
#: Where in `SHOP_EVENTS` the event a consumer gave up on is kept.
DEAD_SEQUENCE = "Shop-Dead-Sequence"
MSG_ID = "Nats-Msg-Id"
#: The last token of the subject of a producer's parked-event notices.
PARKED = "outbox"
#: Failed publications of one event, while the bus takes other events, before it is
#: parked: a few rounds of the relay's backoff, about 15 s.
MAX_PUBLISH_ATTEMPTS = 5
#: Errors that say the bus will never take this message as it is: parked at once.
_REFUSED_FOR_GOOD = (MaxPayloadError, BadRequestError, DecodeError)


def consumer_dead_subject(consumer: str) -> str:
    """Where the consumer `consumer` puts the events it gives up on."""
    return f"{DEAD_LETTER_PREFIX}.{consumer}"


def rebuild_consumer(service: str) -> str:
    """The durable consumer that rebuilds `service`'s read model from `SHOP_ENTITIES`:
    it exists while a rebuild runs (`mesh.runtime.consumer.request_rebuild`)."""
    return f"{service}_rebuild"


def parked_subject(producer: str) -> str:
    """Where the relay of `producer` reports the events it parks."""
    return f"{DEAD_LETTER_PREFIX}.{producer}.{PARKED}"


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
            name=ENTITIES_STREAM,
            sources=[StreamSource(name=EVENTS_STREAM, filter_subject=ENTITY_SUBJECTS)],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_msgs_per_subject=1,
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


@dataclass(frozen=True)
class _Outgoing:
    """An outbox row on its way to the bus."""

    event_id: str
    subject: str
    payload: bytes
    attempts: int
    envelope: events_pb2.EventEnvelope | None  # None: the row does not decode

    @property
    def order_id(self) -> str:
        """What orders the row among the others: its order's (or its entity's) events go
        one at a time."""
        return ordering_key(self.envelope) if self.envelope is not None else self.event_id

    @classmethod
    def of(cls, row: sa.Row[Any]) -> _Outgoing:
        try:
            envelope: events_pb2.EventEnvelope | None = events_pb2.EventEnvelope.FromString(
                row.payload
            )
        except DecodeError:
            envelope = None
        return cls(row.event_id, row.subject, row.payload, row.attempts, envelope)


_PENDING = outbox.c.published_time.is_(None) & outbox.c.parked_time.is_(None)
_PENDING_COUNT = sa.select(
    sa.func.count().label("waiting"), sa.func.min(outbox.c.create_time).label("oldest")
).where(_PENDING)
_COUNT_ATTEMPT = (
    outbox.update()
    .where(outbox.c.event_id == sa.bindparam("id"))
    .values(attempts=sa.bindparam("attempts"))
)
_PARK = (
    outbox.update()
    .where(outbox.c.event_id == sa.bindparam("id"))
    .values(
        attempts=sa.bindparam("attempts"),
        parked_time=sa.bindparam("now"),
        park_reason=sa.bindparam("reason"),
    )
)


def _next_in_line(events: Sequence[_Outgoing], done: set[str], held: set[str]) -> list[_Outgoing]:
    """The first event not `done` of each order, in written order, but for `held` ones."""
    orders: set[str] = set()
    heads = []
    for event in events:
        if event.event_id in done or event.order_id in orders or event.order_id in held:
            continue
        orders.add(event.order_id)
        heads.append(event)
    return heads


def _park_reason(event: _Outgoing, error: BaseException, attempts: int) -> str | None:
    """Why `event` is parked after failing with `error`, or None to try it again."""
    if isinstance(error, MaxPayloadError):
        return f"the event is {len(event.payload)} bytes, more than the bus takes"
    if isinstance(error, DecodeError):
        return "the outbox row does not decode as an event"
    if isinstance(error, BadRequestError):
        return f"the bus refused the event: {error}"[:500]
    if attempts >= MAX_PUBLISH_ATTEMPTS:
        return (
            f"failed {attempts} times while the bus took other events; "
            f"last: {type(error).__name__}: {error}"
        )[:500]
    return None


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
            sa.select(outbox.c.event_id, outbox.c.subject, outbox.c.payload, outbox.c.attempts)
            .where(_PENDING)
            .order_by(outbox.c.create_time, outbox.c.event_id)
            .limit(batch)
        )

    async def publish_pending(self) -> int:
        """Publish what is pending (one batch); return how many rows it took on.

        Events go out side by side, their acknowledgements awaited together, except that
        an order's events go one after the other, in the order they were written: each
        step sends the next event of every order (`_next_in_line`). The events JetStream
        acknowledged are handed to the database to be marked published together by its
        next write transaction (`Database.mark_published`; at the latest by the next
        round's). A crash before the marking publishes them again later, and JetStream
        drops those copies (same message id, within the duplicate window).

        An event that fails holds back its order's later events, not the others'; a
        step in which every event failed ends the round (the bus is away). Failures are
        then counted or parked (`_park_reason`), and if any event is left to try again
        the first failure is raised, for `run` to back off.
        """
        await self._database.flush_published_marks()
        async with self._database.snapshot() as connection:
            rows = (await connection.execute(self._pending)).all()
        outgoing = [_Outgoing.of(row) for row in rows]
        acknowledged: list[str] = []
        failed: dict[str, tuple[_Outgoing, BaseException]] = {
            event.event_id: (event, DecodeError()) for event in outgoing if event.envelope is None
        }
        held = {event.order_id for event, _ in failed.values()}
        try:
            while sent := _next_in_line(outgoing, set(acknowledged) | set(failed), held):
                results = await asyncio.gather(
                    *(self._publish(event) for event in sent), return_exceptions=True
                )
                for event, result in zip(sent, results, strict=True):
                    if result is None:
                        acknowledged.append(event.event_id)
                    else:
                        failed[event.event_id] = (event, result)
                        held.add(event.order_id)
                if all(result is not None for result in results):
                    break
        finally:
            self._database.mark_published(acknowledged)
        retried = await self._settle(list(failed.values()), bus_works=bool(acknowledged))
        if retried:
            raise retried[0]
        return len(rows)

    async def _publish(self, event: _Outgoing) -> None:
        """Publish one event in a producer span of the trace that raised it."""
        assert event.envelope is not None
        parent = telemetry.event_context(event.envelope.trace_context)
        with telemetry.tracer.start_as_current_span(
            f"{event.subject} publish", context=parent, kind=SpanKind.PRODUCER
        ) as span:
            messaging_attributes(span, event.subject, event.envelope)
            headers = {MSG_ID: event.event_id}
            telemetry.inject(headers)
            await self._js.publish(event.subject, event.payload, headers=headers)  # as written

    async def _settle(
        self, failed: Sequence[tuple[_Outgoing, BaseException]], *, bus_works: bool
    ) -> list[BaseException]:
        """Count the failures of events the bus refused while it took others, park those
        past their chances (`_park_reason`); return the failures left to try again.

        Failures while the bus takes nothing are the bus's, not the events': they count
        for nothing, so an outage parks no event.
        """
        parked: list[tuple[_Outgoing, str]] = []
        retried: list[BaseException] = []
        if not failed:
            return retried
        async with self._database.transaction() as connection:
            for event, error in failed:
                counted = isinstance(error, _REFUSED_FOR_GOOD) or bus_works
                attempts = event.attempts + counted
                reason = _park_reason(event, error, attempts) if counted else None
                if reason is not None:
                    await connection.execute(
                        _PARK, {"id": event.event_id, "attempts": attempts,
                                "now": utc_now(), "reason": reason},
                    )  # fmt: skip
                    parked.append((event, reason))
                    continue
                retried.append(error)
                if counted:
                    await connection.execute(
                        _COUNT_ATTEMPT, {"id": event.event_id, "attempts": attempts}
                    )
        for event, reason in parked:
            await self._report_parked(event, reason)
        return retried

    async def _report_parked(self, event: _Outgoing, reason: str) -> None:
        """Say on the dead-letter stream that `event` was parked, without its payload."""
        log.error("outbox: parked event %s (%s): %s", event.event_id, event.subject, reason)
        metrics.OUTBOX_PARKED.inc()
        producer = event.subject.split(".")[1]
        headers = {
            DEAD_REASON: reason,
            DEAD_SUBJECT: event.subject,
            DEAD_EVENT_ID: event.event_id,
            MSG_ID: f"parked-{event.event_id}",
        }
        try:
            await self._js.publish(parked_subject(producer), b"", headers=headers)
        except Exception as error:  # the row keeps the reason; the log has said it
            log.warning("outbox: could not report parked event %s: %r", event.event_id, error)

    async def _count_pending(self) -> None:
        """Set `shop_outbox_pending` and `shop_outbox_oldest_pending_seconds`: counted
        while events wait (a full batch went out, or the bus is away or refused one);
        a round that published all it found left none behind."""
        async with self._database.snapshot() as connection:
            row = (await connection.execute(_PENDING_COUNT)).one()
        count: int = row.waiting
        oldest: datetime | None = row.oldest
        metrics.OUTBOX_PENDING.set(max(count - self._database.unmarked, 0))
        age = 0.0 if oldest is None else (utc_now() - oldest).total_seconds()
        metrics.OUTBOX_OLDEST_PENDING.set(max(age, 0.0))

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
                    metrics.OUTBOX_OLDEST_PENDING.set(0)
                else:
                    await self._count_pending()
                backoff = self._idle
                delay = 0.0 if published >= self._batch else self._idle
                wakers.append(written)
            except Exception as error:  # NATS away, timeouts, a refused event: try again
                log.warning("outbox relay: %r; retrying in %.1fs", error, backoff)
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
    """Where `identity`'s replies arrive; only it may subscribe there (`mesh.control.natsconf`)."""
    return f"_INBOX_{identity}"


@dataclass(frozen=True)
class NatsSettings:
    """How a process reaches NATS: the URL and, for TLS, the mesh CA and its own leaf.

    `identity` names the process to NATS: its certificate maps to that user (see
    `mesh.control.natsconf`), and its replies arrive under `_INBOX_<identity>.`, the only
    inbox that user may read.
    """

    url: str
    identity: str = ""
    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None
    server_name: str | None = None

    def environment(self) -> dict[str, str]:
        """The `SHOP_NATS_*` variables that give a service these settings."""
        files = {
            "SHOP_NATS_CA_FILE": self.ca_path,
            "SHOP_NATS_CERT_FILE": self.cert_path,
            "SHOP_NATS_KEY_FILE": self.key_path,
        }
        return {
            "SHOP_NATS_URL": self.url,
            **{key: str(path) for key, path in files.items() if path is not None},
            "SHOP_NATS_SERVER_NAME": self.server_name or "",
        }

    @classmethod
    def from_environment(cls, identity: str, environment: Mapping[str, str]) -> NatsSettings:
        """The settings `environment` wrote, read back (a service's, or meshctl's from
        state.json)."""

        def path(key: str) -> Path | None:
            return Path(environment[key]) if environment.get(key) else None

        return cls(
            url=environment["SHOP_NATS_URL"],
            identity=identity,
            ca_path=path("SHOP_NATS_CA_FILE"),
            cert_path=path("SHOP_NATS_CERT_FILE"),
            key_path=path("SHOP_NATS_KEY_FILE"),
            server_name=environment.get("SHOP_NATS_SERVER_NAME") or None,
        )

    async def connect(self, **options: Any) -> NatsClient:
        tls = None
        if self.ca_path is not None:
            tls = ssl.create_default_context(cafile=str(self.ca_path))
            if self.cert_path is not None and self.key_path is not None:
                tls.load_cert_chain(str(self.cert_path), str(self.key_path))
        inbox = inbox_prefix(self.identity) if self.identity else "_INBOX"
        options.setdefault("error_cb", _told)
        return await nats.connect(
            self.url,
            tls=tls,
            tls_hostname=self.server_name,
            inbox_prefix=inbox,
            name=self.identity or None,
            **options,
        )


async def _told(error: Exception) -> None:
    """What the client meets while (re)connecting, as one line: nats-py's own default
    logs each failed attempt with its whole traceback."""
    log.warning("nats: %s: %s", type(error).__name__, error)


#: The payload field of `EventEnvelope` for each event message, by its full name.
_PAYLOAD_FIELDS = {
    field.message_type.full_name: field.name
    for field in events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if field.message_type is not None
}


def new_event(
    producer: str, order_id: str, payload: Message, *, entity_id: str = ""
) -> events_pb2.EventEnvelope:
    """An event of `producer` about an order (or, for an event kept per entity, about the
    entity `entity_id`): a new id, the time now, `payload` in its slot, its texts
    shortened to their declared bounds."""
    name = payload.DESCRIPTOR.full_name
    envelope = events_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        type=name,
        order_id=order_id,
        producer=producer,
        occurred_at=to_timestamp(utc_now()),
        entity_id=entity_id,
    )
    getattr(envelope, _PAYLOAD_FIELDS[name]).CopyFrom(payload)
    # A reason may quote another event's: kept to the contract's bounds, so no event
    # outgrows what the bus carries.
    fit(envelope)
    return envelope


def subject(producer: str, event: str) -> str:
    """What a consumer of `producer`'s `event` (a payload field name) filters on: its
    subject, `shop.orders.order_placed`, or for an event kept per entity, every entity's,
    `shop.catalog.product_updated.*`."""
    name = f"shop.{producer}.{event}"
    return f"{name}.*" if event in PER_ENTITY_EVENTS else name
