"""The recent sagas, as the event bus tells them.

An order's saga is its events: `orders.order_placed` starts it, each participant's
events (stock reserved or rejected, payment captured or declined, shipment scheduled or
failed, stock released, payment refunded) are its steps, and `orders.order_confirmed` or
`orders.order_cancelled` ends it. They are the saga's own records, kept in the events
stream (`SHOP_EVENTS`) in the order they were published, so the latest sagas are read
from the stream's last events, through an ephemeral consumer of the mesh's NATS
administrator; no service's database is read.

A saga that has not ended and started longer ago than `stuck_after` is stuck: its
orders are PENDING with no step in sight, which `meshctl dlq` or the services' logs
then explain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from mesh.runtime.events import EVENTS_STREAM
from shop.events.v1 import events_pb2

#: How many of the stream's last events are read for the recent sagas.
DEFAULT_EVENTS = 2000
#: A saga not ended this long after it started is stuck.
DEFAULT_STUCK_AFTER_SECONDS = 30.0
#: How many events one fetch takes.
BATCH = 500

PLACED = "order_placed"
ENDINGS = {"order_confirmed": "CONFIRMED", "order_cancelled": "CANCELLED"}


@dataclass(frozen=True)
class Step:
    event: str
    """The payload's name: `order_placed`, `stock_reserved`, ..."""
    producer: str
    time: float
    """When it happened (Unix seconds)."""
    detail: dict[str, Any]


@dataclass
class Saga:
    order_id: str
    steps: list[Step] = field(default_factory=list)

    @property
    def status(self) -> str:
        ended = [ENDINGS[s.event] for s in self.steps if s.event in ENDINGS]
        return ended[-1] if ended else "PENDING"

    @property
    def started(self) -> float:
        placed = [s.time for s in self.steps if s.event == PLACED]
        return placed[0] if placed else self.steps[0].time

    @property
    def last(self) -> float:
        return self.steps[-1].time

    def stuck(self, now: float, after: float) -> bool:
        return self.status == "PENDING" and now - self.started > after

    def describe(self, now: float, stuck_after: float) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "stuck": self.stuck(now, stuck_after),
            "started": self.started,
            "seconds": round((self.last if self.status != "PENDING" else now) - self.started, 3),
            "steps": [vars(step) for step in self.steps],
        }


def step_of(envelope: events_pb2.EventEnvelope) -> Step | None:
    """The saga step an event is, or None for an event of no order."""
    kind = envelope.WhichOneof("payload")
    if kind is None or not envelope.order_id:
        return None
    payload = getattr(envelope, kind)
    detail = MessageToDict(payload, preserving_proto_field_name=False)
    detail.pop("orderId", None)
    return Step(kind, envelope.producer, envelope.occurred_at.ToNanoseconds() / 1e9, detail)


def sagas_of(envelopes: Sequence[events_pb2.EventEnvelope]) -> list[Saga]:
    """The sagas of `envelopes` (in publishing order), the latest active first."""
    sagas: dict[str, Saga] = {}
    for envelope in envelopes:
        step = step_of(envelope)
        if step is not None:
            sagas.setdefault(envelope.order_id, Saga(envelope.order_id)).steps.append(step)
    for saga in sagas.values():
        saga.steps.sort(key=lambda s: s.time)
    return sorted(sagas.values(), key=lambda saga: saga.last, reverse=True)


async def last_events(js: JetStreamContext, count: int) -> list[events_pb2.EventEnvelope]:
    """The stream's last `count` events, oldest first (what does not decode is skipped:
    a poison message is no step of any saga)."""
    state = (await js.stream_info(EVENTS_STREAM)).state
    if not state.messages:
        return []
    start = max(state.first_seq, state.last_seq - count + 1)
    subscription = await js.pull_subscribe(
        "shop.>",
        stream=EVENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
    )
    found = []
    try:
        pending = (await subscription.consumer_info()).num_pending
        while pending:
            batch = await subscription.fetch(min(pending, BATCH), timeout=5)
            pending -= len(batch)
            for message in batch:
                try:
                    found.append(events_pb2.EventEnvelope.FromString(message.data))
                except DecodeError:
                    continue
    finally:
        await subscription.unsubscribe()
    return found


async def recent_sagas(
    js: JetStreamContext,
    *,
    events: int = DEFAULT_EVENTS,
    stuck_after: float = DEFAULT_STUCK_AFTER_SECONDS,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The `limit` latest sagas of the stream's last `events` events, described."""
    now = time.time()
    return [
        saga.describe(now, stuck_after) for saga in sagas_of(await last_events(js, events))[:limit]
    ]
