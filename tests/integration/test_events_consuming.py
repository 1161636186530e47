"""Consuming events against a real nats-server (JetStream, fsync always, TLS with the
mesh's certificates and per-identity permissions) and real SQLite files: each event is
applied once, in its order's order, side by side with the others of its batch; what
cannot be applied ends as a dead letter, which replays once its cause is fixed, and
only to the consumer that wrote it.

The publishing side, the outbox and its relay, is in test_events_publishing.py.
"""

from __future__ import annotations

import asyncio

import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext

from mesh.control import deadletters
from mesh.runtime import events
from mesh.runtime.consumer import (
    ConsumerMismatch,
    ConsumerPolicy,
    Delivery,
    EventConsumer,
    Handler,
    ensure_consumer,
)
from mesh.runtime.storage import Database
from shop.events.v1 import events_pb2
from tests.support.bus import Bus, order_placed, running, service_jetstream, stream_messages
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


async def ledger_consumer(
    js: JetStreamContext,
    database: Database,
    handler: Handler,
    *,
    name: str = "ledger",
    policy: ConsumerPolicy | None = None,
) -> EventConsumer:
    """A consumer of order placements, created as the mesh creates one, then bound."""
    subject = "shop.orders.order_placed"
    policy = policy or ConsumerPolicy()
    await ensure_consumer(js, name, [subject], policy)
    return EventConsumer(database, js, name=name, handlers={subject: handler}, policy=policy)


async def write_ledger(delivery: Delivery) -> None:
    async with delivery.transaction() as connection:
        await connection.execute(
            sa.text("INSERT INTO ledger VALUES (:id)"), {"id": delivery.envelope.event_id}
        )


async def _consume_all(js: JetStreamContext, consumer: EventConsumer) -> None:
    """Run `consumer` until it has been handed, and has settled, every message the stream
    holds now (at most 20 s). What it was handed is checked too: the broker counts a
    consumer's pending messages a moment after it stored them."""
    last = (await js.stream_info(events.EVENTS_STREAM)).state.last_seq

    async def settled() -> bool:
        info = await js.consumer_info(events.EVENTS_STREAM, consumer.name)
        handed_all = info.delivered is not None and (info.delivered.stream_seq or 0) >= last
        return handed_all and info.num_pending == 0 and info.num_ack_pending == 0

    async with running(consumer.run):
        await eventually(settled, f"{consumer.name} settled its messages", 20)


async def publish_placements(js: JetStreamContext, order_ids: list[str]) -> list[str]:
    """One OrderPlaced per order id, in this order; their event ids."""
    event_ids = []
    for order_id in order_ids:
        envelope = order_placed(order_id)
        await js.publish(
            "shop.orders.order_placed",
            envelope.SerializeToString(),
            headers={events.MSG_ID: envelope.event_id},
        )
        event_ids.append(envelope.event_id)
    return event_ids


async def ledger(database: Database) -> list[str]:
    async with database.snapshot() as connection:
        return list((await connection.execute(sa.text("SELECT event_id FROM ledger"))).scalars())


# Applying each event once -------------------------------------------------------------


async def test_a_redelivered_event_changes_nothing_twice(
    js: JetStreamContext, database: Database
) -> None:
    envelope = order_placed()
    applied: list[str] = []

    async def record(delivery: Delivery) -> None:
        await write_ledger(delivery)
        applied.append(delivery.envelope.event_id)

    consumer = await ledger_consumer(js, database, record)
    payload = envelope.SerializeToString()
    # The same event twice with different message ids: as after a crash between a
    # consumer's commit and its ack, the broker hands it out again.
    await js.publish("shop.orders.order_placed", payload, headers={events.MSG_ID: "a"})
    await js.publish("shop.orders.order_placed", payload, headers={events.MSG_ID: "b"})
    await _consume_all(js, consumer)
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.text("SELECT count(*) FROM ledger"))).scalar()
    assert rows == 1
    assert applied == [envelope.event_id]


async def test_an_event_its_handler_ignores_is_still_recorded_once(
    js: JetStreamContext, database: Database
) -> None:
    seen: list[str] = []

    async def ignore(delivery: Delivery) -> None:
        seen.append(delivery.envelope.event_id)

    consumer = await ledger_consumer(js, database, ignore)
    envelope = order_placed()
    for message_id in ("a", "b"):  # delivered twice, as after a crash before the ack
        await js.publish(
            "shop.orders.order_placed",
            envelope.SerializeToString(),
            headers={events.MSG_ID: message_id},
        )
    await _consume_all(js, consumer)
    assert seen == [envelope.event_id]


async def test_a_consumer_refuses_to_run_when_its_subjects_differ_from_its_handlers(
    js: JetStreamContext, database: Database
) -> None:
    await ensure_consumer(js, "ledger", ["shop.orders.order_placed"])
    consumer = EventConsumer(
        database,
        js,
        name="ledger",
        handlers={
            "shop.orders.order_placed": write_ledger,
            "shop.orders.order_cancelled": write_ledger,
        },
    )
    with pytest.raises(ConsumerMismatch, match=r"make its `consumes:` in mesh\.yaml match"):
        await consumer.bind()


# Batches ------------------------------------------------------------------------------


async def test_a_failing_event_fails_alone_and_its_batch_neighbours_commit_once(
    js: JetStreamContext, database: Database
) -> None:
    attempts: list[str] = []

    async def picky(delivery: Delivery) -> None:
        order_id = delivery.envelope.order_id
        attempts.append(order_id)
        async with delivery.transaction() as connection:
            await connection.execute(
                sa.text("INSERT INTO ledger VALUES (:id)"), {"id": delivery.envelope.event_id}
            )
            if order_id == "o3" and attempts.count("o3") == 1:
                raise RuntimeError("o3 cannot be applied yet")

    consumer = await ledger_consumer(
        js, database, picky, policy=ConsumerPolicy(redelivery_delays=(0.1, 0.2))
    )
    event_ids = await publish_placements(js, [f"o{n}" for n in range(1, 7)])
    await _consume_all(js, consumer)
    assert sorted(await ledger(database)) == sorted(event_ids)  # o3's first insert rolled back
    assert attempts.count("o3") == 2
    assert sorted(set(attempts) - {"o3"}) == ["o1", "o2", "o4", "o5", "o6"]
    assert len(attempts) == 7  # the neighbours of the failure were not applied again


async def test_a_batch_runs_its_handlers_side_by_side_up_to_their_transactions(
    js: JetStreamContext, database: Database
) -> None:
    arrived = 0
    all_arrived = asyncio.Event()

    async def slow_before_its_transaction(delivery: Delivery) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 4:
            all_arrived.set()
        await asyncio.wait_for(all_arrived.wait(), timeout=5)  # only if all run at once
        await write_ledger(delivery)

    consumer = await ledger_consumer(js, database, slow_before_its_transaction)
    event_ids = await publish_placements(js, ["a", "b", "c", "d"])
    await _consume_all(js, consumer)
    assert sorted(await ledger(database)) == sorted(event_ids)


async def test_an_orders_events_in_one_fetch_are_applied_in_order_each_seeing_the_last(
    js: JetStreamContext, database: Database
) -> None:
    seen_before: list[int] = []

    async def count_then_write(delivery: Delivery) -> None:
        seen_before.append(len(await ledger(database)))  # before the transaction
        await write_ledger(delivery)

    consumer = await ledger_consumer(js, database, count_then_write)
    await publish_placements(js, ["same", "same", "same", "other"])
    await _consume_all(js, consumer)
    # The three of "same" one after the other, each after the last committed; "other"
    # shares a batch with the third.
    assert seen_before[:3] == [0, 1, 2]
    assert len(await ledger(database)) == 4


# Dead letters -------------------------------------------------------------------------


async def test_a_poison_message_is_dead_lettered_and_the_good_ones_flow(
    js: JetStreamContext, database: Database
) -> None:
    good = order_placed()
    done = asyncio.Event()

    async def record(delivery: Delivery) -> None:
        await write_ledger(delivery)
        done.set()

    consumer = await ledger_consumer(js, database, record)
    await js.publish(
        "shop.orders.order_placed", b"\xff\xfe not protobuf", headers={events.MSG_ID: "poison"}
    )
    await js.publish(
        "shop.orders.order_placed", good.SerializeToString(), headers={events.MSG_ID: good.event_id}
    )
    await _consume_all(js, consumer)
    assert done.is_set()
    dead = await js.get_last_msg(events.DEAD_LETTER_STREAM, "dead.ledger")
    assert dead.data == b"\xff\xfe not protobuf"
    assert dead.headers is not None
    assert dead.headers[events.DEAD_CONSUMER] == "ledger"
    assert dead.headers[events.DEAD_SUBJECT] == "shop.orders.order_placed"
    assert dead.headers[events.DEAD_REASON].startswith("malformed event")


async def test_an_event_that_keeps_failing_ends_as_a_dead_letter_with_its_reason(
    js: JetStreamContext, database: Database
) -> None:
    attempts: list[int] = []

    async def broken(delivery: Delivery) -> None:
        attempts.append(1)
        raise RuntimeError("the database of record is on fire")

    consumer = await ledger_consumer(
        js, database, broken, name="broken",
        policy=ConsumerPolicy(ack_wait_seconds=5, redelivery_delays=(0.1, 0.2)),
    )  # fmt: skip
    envelope = order_placed()
    await js.publish(
        "shop.orders.order_placed",
        envelope.SerializeToString(),
        headers={events.MSG_ID: envelope.event_id},
    )

    async def dead_lettered() -> bool:
        return await stream_messages(js, events.DEAD_LETTER_STREAM) == 1

    async with running(consumer.run):
        await eventually(dead_lettered, "the event dead-lettered", 20)
    assert len(attempts) == 3  # the first delivery and the two redeliveries
    dead = await js.get_last_msg(events.DEAD_LETTER_STREAM, "dead.broken")
    assert dead.headers is not None
    assert "failed 3 times: the database of record is on fire" in dead.headers[events.DEAD_REASON]


async def test_an_event_on_another_events_subject_is_a_dead_letter(
    js: JetStreamContext, database: Database
) -> None:
    consumer = await ledger_consumer(js, database, write_ledger)
    cancelled = events.new_event("orders", "o1", events_pb2.OrderCancelled(order_id="o1"))
    await js.publish(
        "shop.orders.order_placed", cancelled.SerializeToString(), headers={events.MSG_ID: "m"}
    )
    await _consume_all(js, consumer)
    [letter] = await deadletters.dead_letters(js)
    assert "a shop.orders.order_cancelled event published on shop.orders.order_placed" in (
        letter.reason
    )
    async with database.snapshot() as connection:
        assert (await connection.execute(sa.text("SELECT count(*) FROM ledger"))).scalar() == 0


async def test_replay_re_drives_a_dead_letter_once_its_cause_is_fixed(
    js: JetStreamContext, database: Database
) -> None:
    fixed = False

    async def flaky(delivery: Delivery) -> None:
        if not fixed:
            raise RuntimeError("a bug, fixed later")
        await write_ledger(delivery)

    consumer = await ledger_consumer(
        js, database, flaky,
        policy=ConsumerPolicy(ack_wait_seconds=5, redelivery_delays=(0.1,)),
    )  # fmt: skip
    envelope = order_placed()
    await js.publish(
        "shop.orders.order_placed",
        envelope.SerializeToString(),
        headers={events.MSG_ID: envelope.event_id},
    )
    await _consume_all(js, consumer)
    [letter] = await deadletters.dead_letters(js)
    assert letter.describe()["event"]["eventId"] == envelope.event_id  # type: ignore[index]

    fixed = True
    await deadletters.replay(js, letter.sequence)
    await _consume_all(js, consumer)
    assert await deadletters.dead_letters(js) == []
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.text("SELECT event_id FROM ledger"))).scalars().all()
    assert rows == [envelope.event_id]


# Forged dead letters ------------------------------------------------------------------


async def published(js: JetStreamContext, subject: str, envelope: events_pb2.EventEnvelope) -> int:
    """Publish `envelope` on `subject` as the mesh's administrator; its stream sequence."""
    ack = await js.publish(
        subject, envelope.SerializeToString(), headers={events.MSG_ID: envelope.event_id}
    )
    return ack.seq


async def forge(bus: Bus, identity: str, subject: str, body: bytes, **claims: str) -> None:
    async with service_jetstream(bus, identity) as forger:
        await forger.publish(
            events.consumer_dead_subject(identity),
            body,
            headers={events.DEAD_REASON: "forged", **claims},
        )


async def test_a_dead_letter_is_its_writers_whatever_its_headers_claim(
    bus: Bus, js: JetStreamContext
) -> None:
    await ensure_consumer(js, "inventory", ["shop.orders.order_placed"])
    placed = order_placed()
    sequence = await published(js, "shop.orders.order_placed", placed)
    forged = order_placed()  # a body of its own, under a real event's sequence
    claims = {events.DEAD_CONSUMER: "payments", events.DEAD_SUBJECT: "shop.orders.order_placed",
              events.DEAD_SEQUENCE: str(sequence)}  # fmt: skip
    await forge(bus, "inventory", "shop.orders.order_placed", forged.SerializeToString(), **claims)
    async with service_jetstream(bus, "inventory") as inventory:
        with pytest.raises(nats.errors.TimeoutError):  # nor on another's dead letters
            await inventory.publish(events.consumer_dead_subject("payments"), b"forged")

    [letter] = await deadletters.dead_letters(js)
    assert letter.consumer == "inventory"
    with pytest.raises(deadletters.ReplayRefused, match=f"is not event {sequence}"):
        await deadletters.replay(js, letter.sequence)
    assert await stream_messages(js, events.EVENTS_STREAM) == 1
    assert [d.sequence for d in await deadletters.dead_letters(js)] == [letter.sequence]


@pytest.mark.parametrize(
    ("subject", "producer", "refusal"),
    [
        ("shop.orders.order_cancelled", "orders", "does not take shop.orders.order_cancelled"),
        ("shop.orders.order_placed", "payments", "producer does not own shop.orders.order_placed"),
    ],
    ids=["a-subject-the-consumer-does-not-take", "an-event-its-producer-does-not-own"],
)
async def test_a_replay_is_refused_unless_the_consumer_takes_what_its_producer_owns(
    bus: Bus, js: JetStreamContext, subject: str, producer: str, refusal: str
) -> None:
    await ensure_consumer(js, "inventory", ["shop.orders.order_placed"])
    event = order_placed()
    event.producer = producer
    sequence = await published(js, subject, event)
    claims = {events.DEAD_SUBJECT: subject, events.DEAD_SEQUENCE: str(sequence)}
    await forge(bus, "inventory", subject, event.SerializeToString(), **claims)
    [letter] = await deadletters.dead_letters(js)
    with pytest.raises(deadletters.ReplayRefused, match=refusal):
        await deadletters.replay(js, letter.sequence)
    assert await stream_messages(js, events.EVENTS_STREAM) == 1
