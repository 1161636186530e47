"""Events into the outbox, in the transaction of the change they report (the transactional
outbox: `mesh.runtime.events.OutboxRelay` publishes them once it commits)."""

from __future__ import annotations

from mesh.runtime import telemetry
from mesh.runtime.connection import Connection
from mesh.runtime.storage.schema import outbox, utc_now
from shop.events.v1 import events_pb2

#: Marks a connection whose transaction wrote to the outbox (see `Database.transaction`).
OUTBOX_WRITTEN = "shop_outbox_written"

#: Built once (see the note on statements in `mesh.runtime.storage`).
_ENQUEUE = outbox.insert()


def event_subject(envelope: events_pb2.EventEnvelope) -> str:
    """`shop.<producer>.<event>` (the payload's field name: order_placed, stock_reserved...)."""
    kind = envelope.WhichOneof("payload")
    if kind is None or not envelope.producer or not envelope.event_id:
        raise ValueError("an event needs an id, a producer and a payload")
    return f"shop.{envelope.producer}.{kind}"


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
