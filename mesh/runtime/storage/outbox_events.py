"""Events into the outbox, in the transaction of the change they report (the transactional
outbox: `mesh.runtime.events.OutboxRelay` publishes them once it commits)."""

from __future__ import annotations

import re

from mesh.runtime import telemetry
from mesh.runtime.connection import Connection
from mesh.runtime.storage.schema import outbox, utc_now
from shop.events.v1 import events_pb2
from shop.options.v1 import events_pb2 as event_options

#: The payload fields of events marked `latest_per_entity` (protos/shop/options/v1/
#: events.proto): published with the entity's id as a fourth subject token.
PER_ENTITY_EVENTS = frozenset(
    field.name
    for field in events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields
    if field.GetOptions().Extensions[event_options.latest_per_entity]  # type: ignore[index]
)

#: What a NATS subject token may be: no dots, wildcards or spaces.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")

#: Marks a connection whose transaction wrote to the outbox (see `Database.transaction`).
OUTBOX_WRITTEN = "shop_outbox_written"

#: Built once (see the note on statements in `mesh.runtime.storage`).
_ENQUEUE = outbox.insert()


def event_subject(envelope: events_pb2.EventEnvelope) -> str:
    """`shop.<producer>.<event>` (the payload's field name: order_placed, stock_reserved...),
    and `.<entity_id>` after it for an event kept per entity (`PER_ENTITY_EVENTS`)."""
    kind = envelope.WhichOneof("payload")
    if kind is None or not envelope.producer or not envelope.event_id:
        raise ValueError("an event needs an id, a producer and a payload")
    if (kind in PER_ENTITY_EVENTS) != bool(envelope.entity_id):
        raise ValueError(f"a {kind} event needs an entity id exactly when it is kept per entity")
    if not envelope.entity_id:
        return f"shop.{envelope.producer}.{kind}"
    if not _TOKEN.fullmatch(envelope.entity_id):
        raise ValueError(f"entity id {envelope.entity_id!r} cannot be a subject token")
    return f"shop.{envelope.producer}.{kind}.{envelope.entity_id}"


def subject_filter(subject: str) -> str:
    """What a consumer filters on to take `subject`: the subject itself, or for an event
    kept per entity (`shop.catalog.product_updated.<id>`), every entity's
    (`shop.catalog.product_updated.*`)."""
    tokens = subject.split(".")
    return ".".join([*tokens[:3], "*"]) if len(tokens) == 4 else subject


def ordering_key(envelope: events_pb2.EventEnvelope) -> str:
    """What orders an event among others: one order's events, or one entity's, are
    published and applied one after the other, in the order they were written."""
    return envelope.order_id or envelope.entity_id


async def enqueue_event(connection: Connection, envelope: events_pb2.EventEnvelope) -> None:
    """Put an event in the outbox, in `connection`'s transaction: published if it commits.

    Its subject is `shop.<producer>.<event>`, e.g. `shop.orders.order_placed`. The
    trace context of the work that raised it goes with it (`trace_context`), so the
    steps it starts join the same trace.
    """
    subject = event_subject(envelope)
    with telemetry.tracer.start_as_current_span(f"outbox write {subject}") as span:
        span.set_attribute(telemetry.ORDER_ID, envelope.order_id)
        telemetry.inject(envelope.trace_context)
        await connection.execute(
            _ENQUEUE,
            {
                "event_id": envelope.event_id,
                "subject": subject,
                "payload": envelope.SerializeToString(),
                "create_time": utc_now(),
            },
        )
    connection.info[OUTBOX_WRITTEN] = True
