"""The event bus against a real nats-server (JetStream, fsync always) and real SQLite files."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncConnection

from mesh import events
from mesh.binaries import find_binary
from mesh.plan import free_port
from mesh.storage import Database, Migration, SqlTransaction
from mesh.supervisor import http_ok, write_nats_config
from shop.events.v1 import events_pb2
from tests.support.component import sqlite_database

pytestmark = pytest.mark.integration

LEDGER = (Migration(1, "ledger", ["CREATE TABLE ledger (event_id VARCHAR(36) NOT NULL)"]),)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server of the test's own, started and stopped by pid."""
    port, monitor = free_port(), free_port()
    config = write_nats_config(tmp_path / "nats", port, monitor)
    process = subprocess.Popen(
        [find_binary("nats-server"), "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not http_ok(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"):
            assert process.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server not ready"
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def js(nats_server: str) -> AsyncIterator[JetStreamContext]:
    client: Client = await nats.connect(nats_server, max_reconnect_attempts=2)
    context = client.jetstream()
    await events.ensure_streams(context)
    try:
        yield context
    finally:
        await client.close()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    async with sqlite_database(tmp_path, "svc", LEDGER) as database:
        yield database


def order_placed(order_id: str = "o1") -> events_pb2.EventEnvelope:
    return events_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        type="shop.events.v1.OrderPlaced",
        order_id=order_id,
        producer="orders",
        order_placed=events_pb2.OrderPlaced(order_id=order_id, customer_id="c1"),
    )


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_only_committed_events_are_published_once_each(
    js: JetStreamContext, database: Database
) -> None:
    committed = order_placed("kept")
    async with database.transaction() as connection:
        await SqlTransaction(connection).enqueue_event(committed)

    async def rolled_back() -> None:
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed("dropped"))
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        await rolled_back()

    relay = events.OutboxRelay(database, js)
    assert await relay.publish_pending() == 1
    assert await relay.publish_pending() == 0
    assert await stream_messages(js, events.EVENTS_STREAM) == 1
    message = await js.get_last_msg(events.EVENTS_STREAM, "shop.orders.order_placed")
    assert message.headers is not None
    assert message.headers[events.MSG_ID] == committed.event_id
    assert events_pb2.EventEnvelope.FromString(message.data or b"") == committed


async def test_a_relay_that_crashed_before_marking_publishes_no_duplicate(
    js: JetStreamContext, database: Database
) -> None:
    envelope = order_placed()
    async with database.transaction() as connection:
        await SqlTransaction(connection).enqueue_event(envelope)
    # What a relay did before it crashed: published, but never marked the row.
    await js.publish(
        "shop.orders.order_placed",
        envelope.SerializeToString(),
        headers={events.MSG_ID: envelope.event_id},
    )
    assert await events.OutboxRelay(database, js).publish_pending() == 1
    assert await stream_messages(js, events.EVENTS_STREAM) == 1


async def _consume_all(js: JetStreamContext, consumer: events.EventConsumer) -> None:
    """Run `consumer` until it has settled every message of the stream (at most 20 s)."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            info = await js.consumer_info(events.EVENTS_STREAM, consumer.name)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        raise AssertionError(f"{consumer.name} did not settle its messages in time")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_a_redelivered_event_changes_nothing_twice(
    js: JetStreamContext, database: Database
) -> None:
    envelope = order_placed()
    applied: list[str] = []

    async def record(connection: AsyncConnection, event: events_pb2.EventEnvelope) -> None:
        await connection.execute(sa.text("INSERT INTO ledger VALUES (:id)"), {"id": event.event_id})
        applied.append(event.event_id)

    consumer = events.EventConsumer(
        database, js, name="ledger", subject="shop.orders.>", handler=record
    )
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


async def test_a_poison_message_is_dead_lettered_and_the_good_ones_flow(
    js: JetStreamContext, database: Database
) -> None:
    good = order_placed()
    done = asyncio.Event()

    async def record(connection: AsyncConnection, event: events_pb2.EventEnvelope) -> None:
        await connection.execute(sa.text("INSERT INTO ledger VALUES (:id)"), {"id": event.event_id})
        done.set()

    consumer = events.EventConsumer(
        database, js, name="ledger", subject="shop.orders.>", handler=record
    )
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

    async def broken(connection: AsyncConnection, event: events_pb2.EventEnvelope) -> None:
        attempts.append(1)
        raise RuntimeError("the database of record is on fire")

    consumer = events.EventConsumer(
        database, js, name="broken", subject="shop.orders.>", handler=broken,
        policy=events.ConsumerPolicy(ack_wait_seconds=5, redelivery_delays=(0.1, 0.2)),
    )  # fmt: skip
    envelope = order_placed()
    await js.publish(
        "shop.orders.order_placed",
        envelope.SerializeToString(),
        headers={events.MSG_ID: envelope.event_id},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await stream_messages(js, events.DEAD_LETTER_STREAM) == 1:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert len(attempts) == 3  # the first delivery and the two redeliveries
    dead = await js.get_last_msg(events.DEAD_LETTER_STREAM, "dead.broken")
    assert dead.headers is not None
    assert "failed 3 times: the database of record is on fire" in dead.headers[events.DEAD_REASON]


async def test_replay_re_drives_a_dead_letter_once_its_cause_is_fixed(
    js: JetStreamContext, database: Database
) -> None:
    fixed = False

    async def flaky(connection: AsyncConnection, event: events_pb2.EventEnvelope) -> None:
        if not fixed:
            raise RuntimeError("a bug, fixed later")
        await connection.execute(sa.text("INSERT INTO ledger VALUES (:id)"), {"id": event.event_id})

    consumer = events.EventConsumer(
        database, js, name="ledger", subject="shop.orders.>", handler=flaky,
        policy=events.ConsumerPolicy(ack_wait_seconds=5, redelivery_delays=(0.1,)),
    )  # fmt: skip
    envelope = order_placed()
    await js.publish(
        "shop.orders.order_placed",
        envelope.SerializeToString(),
        headers={events.MSG_ID: envelope.event_id},
    )
    await _consume_all(js, consumer)
    [letter] = await events.dead_letters(js)
    assert letter.describe()["event"]["eventId"] == envelope.event_id  # type: ignore[index]

    fixed = True
    await events.replay(js, letter.sequence)
    await _consume_all(js, consumer)
    assert await events.dead_letters(js) == []
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.text("SELECT event_id FROM ledger"))).scalars().all()
    assert rows == [envelope.event_id]
