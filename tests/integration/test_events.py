"""The event bus against a real nats-server (JetStream, fsync always, TLS with the mesh's
certificates and per-identity permissions) and real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from mesh.control import deadletters, natsconf
from mesh.control.binaries import find_binary
from mesh.control.pki import MeshPKI, leaf, self_signed_ca
from mesh.control.plan import free_port
from mesh.control.topology import parse
from mesh.runtime import events
from mesh.runtime.consumer import (
    ConsumerMismatch,
    ConsumerPolicy,
    Delivery,
    EventConsumer,
    Handler,
    ensure_consumer,
)
from mesh.runtime.storage import Database, Migration, SqlTransaction, outbox
from shop.events.v1 import events_pb2
from tests.support.component import sqlite_database

pytestmark = pytest.mark.integration

LEDGER = (Migration(1, "ledger", ["CREATE TABLE ledger (event_id VARCHAR(36) NOT NULL)"]),)
TOPOLOGY = parse("services:\n  orders: {}\n  inventory: {consumes: [orders.order_placed]}\n")


@dataclass(frozen=True)
class Bus:
    port: int
    pki: MeshPKI

    def settings(self, identity: str) -> events.NatsSettings:
        self.pki.ensure(identity, identity)
        return natsconf.client_settings(self.pki, self.port, identity, identity)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    """A nats-server of the test's own, configured as the mesh configures it; stopped by pid."""
    port = free_port()
    pki = MeshPKI(tmp_path / "pki", TOPOLOGY.trust_domain, TOPOLOGY.namespace)
    config = natsconf.write_config(TOPOLOGY, pki, tmp_path / "nats", port)
    process = subprocess.Popen(
        [find_binary("nats-server"), "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        admin = natsconf.admin_settings(pki, port)
        while not asyncio.run(natsconf.jetstream_ready(admin)):
            assert process.poll() is None, "nats-server exited"
            assert time.monotonic() < deadline, "nats-server not ready"
            time.sleep(0.05)
        yield Bus(port, pki)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def js(bus: Bus) -> AsyncIterator[JetStreamContext]:
    """JetStream as the mesh's administrator (meshctl) sees it, streams created."""
    client = await natsconf.admin_settings(bus.pki, bus.port).connect(max_reconnect_attempts=2)
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


async def unpublished(database: Database) -> int:
    async with database.snapshot() as connection:
        found = await connection.execute(
            sa.select(sa.func.count()).where(outbox.c.published_time.is_(None))
        )
        return int(found.scalar_one())


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


async def test_a_commit_wakes_the_relay_before_its_next_poll(
    js: JetStreamContext, database: Database
) -> None:
    """With a poll once a minute, an event committed in this process still goes out at
    once: the commit wakes the relay. Stopped, the relay writes the marks of what it
    published."""
    async with running(events.OutboxRelay(database, js, idle_seconds=60).run):
        await asyncio.sleep(0.5)  # the relay found nothing and waits for its next poll
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed())
        deadline = time.monotonic() + 20
        while await stream_messages(js, events.EVENTS_STREAM) == 0:
            assert time.monotonic() < deadline, "the relay slept through the commit"
            await asyncio.sleep(0.05)
    assert (await unpublished(database), database.unmarked) == (0, 0)


async def test_the_relays_marks_ride_on_the_next_transaction_or_the_next_round(
    js: JetStreamContext, database: Database
) -> None:
    """What the relay published is marked by the service's next write transaction,
    whatever it is for, and the relay publishes nothing twice meanwhile."""
    relay = events.OutboxRelay(database, js)
    for order in ("o1", "o2"):
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed(order))
        assert await relay.publish_pending() == 1
    # o1's mark rode on the transaction that wrote o2; o2's waits for the next one.
    assert (await unpublished(database), database.unmarked) == (1, 1)
    async with database.transaction() as connection:
        await connection.execute(sa.text("INSERT INTO ledger (event_id) VALUES ('other')"))
    assert (await unpublished(database), database.unmarked) == (0, 0)

    async with database.transaction() as connection:
        await SqlTransaction(connection).enqueue_event(order_placed("o3"))
    assert await relay.publish_pending() == 1
    assert await relay.publish_pending() == 0  # its round writes the waiting mark first
    assert (await unpublished(database), database.unmarked) == (0, 0)
    assert await stream_messages(js, events.EVENTS_STREAM) == 3


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


@contextlib.asynccontextmanager
async def running(
    loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> AsyncIterator[None]:
    """`loop(stop)` (a relay's or a consumer's `run`) as a task for the length of the
    block; then stopped, and awaited, so an error it raised fails the test."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def _consume_all(js: JetStreamContext, consumer: EventConsumer) -> None:
    """Run `consumer` until it has settled every message of the stream (at most 20 s)."""
    async with running(consumer.run):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            info = await js.consumer_info(events.EVENTS_STREAM, consumer.name)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        raise AssertionError(f"{consumer.name} did not settle its messages in time")


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
    async with running(consumer.run):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if await stream_messages(js, events.DEAD_LETTER_STREAM) == 1:
                break
            await asyncio.sleep(0.1)
    assert len(attempts) == 3  # the first delivery and the two redeliveries
    dead = await js.get_last_msg(events.DEAD_LETTER_STREAM, "dead.broken")
    assert dead.headers is not None
    assert "failed 3 times: the database of record is on fire" in dead.headers[events.DEAD_REASON]


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


async def _refused(settings: events.NatsSettings, **options: object) -> str:
    """The error connecting with `settings` ends in (the test fails if it connects)."""
    try:
        client = await settings.connect(allow_reconnect=False, connect_timeout=3, **options)
    except Exception as error:
        refusal = f"{type(error).__name__}: {error}"
    else:
        await client.close()
        raise AssertionError(f"{settings.identity or 'an anonymous client'} was let in")
    # nats-py drops a refused connection's TLS transport without closing it: collect it
    # here, where that is expected, not in whichever test the collector next runs in.
    await asyncio.sleep(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return refusal


async def test_nats_refuses_clients_without_a_mesh_identity(bus: Bus, tmp_path: Path) -> None:
    mesh = bus.settings("inventory")
    # No certificate at all, and no TLS at all.
    no_cert = events.NatsSettings(mesh.url, ca_path=mesh.ca_path, server_name=mesh.server_name)
    assert await _refused(no_cert)
    assert await _refused(events.NatsSettings(f"nats://127.0.0.1:{bus.port}"))
    # The right names, signed by another CA.
    ca_cert, ca_key = self_signed_ca(tmp_path / "foreign", "foreign-ca")
    cert, key = leaf(
        ca_cert,
        ca_key,
        tmp_path / "foreign",
        uri_sans=[bus.pki.spiffe_id("inventory")],
        dns_sans=["inventory.shop.svc"],
        name="inventory",
    )
    forged = events.NatsSettings(
        mesh.url, "inventory", mesh.ca_path, cert, key, server_name=mesh.server_name
    )
    assert await _refused(forged)
    # A mesh certificate of an identity NATS has no user for.
    assert "Authorization Violation" in await _refused(bus.settings("stranger"))


async def test_a_service_publishes_only_its_own_events_and_reads_only_its_consumer(
    bus: Bus, js: JetStreamContext
) -> None:
    await ensure_consumer(js, "inventory", ["shop.orders.order_placed"])
    await ensure_consumer(js, "orders", ["shop.inventory.stock_reserved"])
    violations: list[str] = []

    async def on_error(error: Exception) -> None:
        violations.append(str(error))

    client = await bus.settings("inventory").connect(error_cb=on_error)
    try:
        inventory = client.jetstream(timeout=2)
        ack = await inventory.publish(
            "shop.inventory.stock_reserved", b"mine", headers={events.MSG_ID: "own"}
        )
        assert ack.stream == events.EVENTS_STREAM
        before = await stream_messages(js, events.EVENTS_STREAM)
        with pytest.raises(nats.errors.TimeoutError):
            await inventory.publish("shop.orders.order_placed", b"forged")
        with pytest.raises(nats.errors.TimeoutError):  # no consumer of its own choosing
            await ensure_consumer(inventory, "spy", ["shop.>"])
        with pytest.raises(nats.errors.TimeoutError):  # no reading the stream directly
            await inventory.get_msg(events.EVENTS_STREAM, 1)
        theirs = await inventory.pull_subscribe_bind(consumer="orders", stream=events.EVENTS_STREAM)
        with pytest.raises(nats.errors.TimeoutError):  # nor another service's consumer
            await theirs.fetch(1, timeout=1)
        assert await stream_messages(js, events.EVENTS_STREAM) == before

        placed = order_placed()
        await js.publish(
            "shop.orders.order_placed", placed.SerializeToString(), headers={events.MSG_ID: "p"}
        )
        own = await inventory.pull_subscribe_bind(consumer="inventory", stream=events.EVENTS_STREAM)
        [message] = await own.fetch(1, timeout=5)
        assert events_pb2.EventEnvelope.FromString(message.data) == placed
        await message.ack()
        await inventory.publish(f"{events.DEAD_LETTER_PREFIX}.inventory", b"its dead letter")
    finally:
        await client.close()
    assert any("permissions violation for publish to" in v for v in violations), violations


async def test_the_outbox_gauge_counts_what_waits_while_nats_is_away(
    bus: Bus, js: JetStreamContext, database: Database
) -> None:
    for _ in range(2):
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed())
    closed = await natsconf.admin_settings(bus.pki, bus.port).connect()
    await closed.close()  # a relay whose connection is gone: every publish fails

    async with running(events.OutboxRelay(database, closed.jetstream(), idle_seconds=0.05).run):
        await asyncio.sleep(0.5)
    assert REGISTRY.get_sample_value("shop_outbox_pending") == 2
    async with running(events.OutboxRelay(database, js, idle_seconds=0.05).run):
        await asyncio.sleep(0.5)
    assert REGISTRY.get_sample_value("shop_outbox_pending") == 0
    assert await stream_messages(js, events.EVENTS_STREAM) == 2


# Batches -------------------------------------------------------------------------------


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


async def test_the_relay_publishes_side_by_side_keeping_each_orders_events_in_order(
    js: JetStreamContext, database: Database
) -> None:
    written = [order_placed(order_id) for order_id in ["x", "y", "x", "z", "y", "x"]]
    async with database.transaction() as connection:
        for envelope in written:
            await SqlTransaction(connection).enqueue_event(envelope)
    assert await events.OutboxRelay(database, js).publish_pending() == 6
    stream = await js.pull_subscribe("shop.orders.order_placed", durable="reader")
    messages = await stream.fetch(6, timeout=5)
    published = [events_pb2.EventEnvelope.FromString(m.data) for m in messages]
    for order_id in "xyz":
        assert [e.event_id for e in published if e.order_id == order_id] == [
            e.event_id for e in written if e.order_id == order_id
        ]
    assert await stream_messages(js, events.EVENTS_STREAM) == 6


# Parking ---------------------------------------------------------------------------------


async def enqueue(database: Database, *envelopes: events_pb2.EventEnvelope) -> None:
    async with database.transaction() as connection:
        for envelope in envelopes:
            await SqlTransaction(connection).enqueue_event(envelope)


async def outbox_rows(database: Database) -> dict[str, sa.Row[Any]]:
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.select(outbox))).all()
    return {row.event_id: row for row in rows}


@contextlib.asynccontextmanager
async def service_jetstream(bus: Bus, identity: str) -> AsyncIterator[JetStreamContext]:
    """JetStream as the service `identity` sees it, replies awaited half a second."""
    client = await bus.settings(identity).connect(max_reconnect_attempts=2)
    try:
        yield client.jetstream(timeout=0.5)
    finally:
        await client.close()


async def test_an_event_larger_than_the_bus_takes_is_parked_and_the_queue_moves_on(
    bus: Bus, js: JetStreamContext, database: Database
) -> None:
    huge = order_placed("big")
    huge.order_placed.customer_id = "c" * (natsconf.MAX_PAYLOAD + 1)
    later = [order_placed("big"), order_placed("o2"), order_placed("o3")]
    await enqueue(database, huge, *later)
    async with service_jetstream(bus, "orders") as orders:
        relay = events.OutboxRelay(database, orders)
        assert await relay.publish_pending() == 4  # the others of "big" wait a round
        assert await relay.publish_pending() == 1
    rows = await outbox_rows(database)
    parked = rows[huge.event_id]
    assert parked.parked_time is not None
    assert parked.published_time is None
    assert parked.park_reason.startswith(f"the event is {len(huge.SerializeToString())} bytes")
    await database.flush_published_marks()
    assert all(rows[e.event_id].parked_time is None for e in later)
    assert await stream_messages(js, events.EVENTS_STREAM) == 3
    assert await unpublished(database) == 1  # the parked one, kept

    [notice] = await deadletters.dead_letters(js)
    assert (notice.producer, notice.consumer) == ("orders", "")
    assert (notice.event_id, notice.subject) == (huge.event_id, "shop.orders.order_placed")
    assert notice.data == b""  # the payload stays in the outbox
    with pytest.raises(deadletters.ReplayRefused, match="parked in the outbox of orders"):
        await deadletters.replay(js, notice.sequence)


async def test_an_event_that_fails_while_the_others_go_is_parked_after_its_attempts(
    bus: Bus, js: JetStreamContext, database: Database
) -> None:
    theirs = order_placed("forged")
    theirs.producer = "payments"  # a subject orders may not publish on: NATS drops it
    await enqueue(database, theirs)
    async with service_jetstream(bus, "orders") as orders:
        relay = events.OutboxRelay(database, orders)
        for attempt in range(1, events.MAX_PUBLISH_ATTEMPTS):
            await enqueue(database, order_placed(f"good-{attempt}"))
            with pytest.raises(nats.errors.TimeoutError):
                await relay.publish_pending()
            assert (await outbox_rows(database))[theirs.event_id].attempts == attempt
        await enqueue(database, order_placed("good-last"))
        assert await relay.publish_pending() == 2  # parked now: nothing left to retry
    row = (await outbox_rows(database))[theirs.event_id]
    assert row.parked_time is not None
    assert row.park_reason.startswith(f"failed {events.MAX_PUBLISH_ATTEMPTS} times")
    assert await stream_messages(js, events.EVENTS_STREAM) == events.MAX_PUBLISH_ATTEMPTS


async def test_an_outbox_row_that_is_no_event_is_parked_and_the_others_go(
    bus: Bus, js: JetStreamContext, database: Database
) -> None:
    good = order_placed()
    async with database.transaction() as connection:
        await connection.execute(
            outbox.insert().values(
                event_id="garbage", subject="shop.orders.order_placed",
                payload=b"\xff\xff\xff", create_time=datetime.now(UTC),
            )
        )  # fmt: skip
    await enqueue(database, good)
    async with service_jetstream(bus, "orders") as orders:
        assert await events.OutboxRelay(database, orders).publish_pending() == 2
    row = (await outbox_rows(database))["garbage"]
    assert row.park_reason == "the outbox row does not decode as an event"
    assert await stream_messages(js, events.EVENTS_STREAM) == 1


async def test_an_outage_parks_nothing_and_the_oldest_events_age_is_measured(
    bus: Bus, database: Database
) -> None:
    waiting = order_placed()
    enqueued = time.monotonic()
    await enqueue(database, waiting)
    closed = await natsconf.admin_settings(bus.pki, bus.port).connect()
    await closed.close()  # the bus is away: every publish fails
    relay = events.OutboxRelay(database, closed.jetstream(), idle_seconds=0.05)
    for _ in range(events.MAX_PUBLISH_ATTEMPTS + 1):
        with pytest.raises(nats.errors.ConnectionClosedError):
            await relay.publish_pending()
    row = (await outbox_rows(database))[waiting.event_id]
    assert (row.attempts, row.parked_time) == (0, None)
    async with running(relay.run):
        await asyncio.sleep(0.3)
    oldest = REGISTRY.get_sample_value("shop_outbox_oldest_pending_seconds")
    assert oldest is not None
    assert 0 < oldest <= time.monotonic() - enqueued


# Forged dead letters ----------------------------------------------------------------------


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
