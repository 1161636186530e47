"""Publishing through the outbox against a real nats-server (JetStream, fsync always, TLS
with the mesh's certificates and per-identity permissions) and real SQLite files: the
relay publishes what committed, once, in each order's order; it parks what the bus will
never take; and the bus lets a service in, and publish, as itself only.

The consumers' side, dead letters and their replay, is in test_events_consuming.py.
"""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from mesh.control import deadletters, natsconf
from mesh.control.pki import leaf, self_signed_ca
from mesh.runtime import events
from mesh.runtime.consumer import ensure_consumer
from mesh.runtime.storage import Database, SqlTransaction, outbox
from shop.events.v1 import events_pb2
from tests.support.bus import Bus, order_placed, running, service_jetstream, stream_messages
from tests.support.wait import eventually

pytestmark = pytest.mark.integration


async def unpublished(database: Database) -> int:
    async with database.snapshot() as connection:
        found = await connection.execute(
            sa.select(sa.func.count()).where(outbox.c.published_time.is_(None))
        )
        return int(found.scalar_one())


async def enqueue(database: Database, *envelopes: events_pb2.EventEnvelope) -> None:
    async with database.transaction() as connection:
        for envelope in envelopes:
            await SqlTransaction(connection).enqueue_event(envelope)


async def outbox_rows(database: Database) -> dict[str, sa.Row[Any]]:
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.select(outbox))).all()
    return {row.event_id: row for row in rows}


async def a_failed_round(caplog: pytest.LogCaptureFixture) -> None:
    """Wait until a running relay has logged a round that failed; it then counts what
    waits before it sleeps, and so before it stops."""

    async def logged() -> bool:
        return any(r.getMessage().startswith("outbox relay: ") for r in caplog.records)

    await eventually(logged, "a failed round of the relay logged")


# The relay ----------------------------------------------------------------------------


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

    async def published() -> bool:
        return await stream_messages(js, events.EVENTS_STREAM) > 0

    async with running(events.OutboxRelay(database, js, idle_seconds=60).run):
        # Time for the relay's first round, which finds nothing; it then waits for its
        # next poll, in a minute, and shows no sign of it to await.
        await asyncio.sleep(0.5)
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed())
        await eventually(published, "the event published (not slept through)", 20, 0.05)
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


async def test_the_outbox_gauge_counts_what_waits_while_nats_is_away(
    bus: Bus, js: JetStreamContext, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):
        async with database.transaction() as connection:
            await SqlTransaction(connection).enqueue_event(order_placed())
    closed = await natsconf.admin_settings(bus.pki, bus.port).connect()
    await closed.close()  # a relay whose connection is gone: every publish fails

    async def both_published() -> bool:
        return await stream_messages(js, events.EVENTS_STREAM) == 2

    async with running(events.OutboxRelay(database, closed.jetstream(), idle_seconds=0.05).run):
        await a_failed_round(caplog)
    assert REGISTRY.get_sample_value("shop_outbox_pending") == 2
    # Stopped, a relay ends its round first: the one that published sets the gauge.
    async with running(events.OutboxRelay(database, js, idle_seconds=0.05).run):
        await eventually(both_published, "both events published")
    assert REGISTRY.get_sample_value("shop_outbox_pending") == 0
    assert await stream_messages(js, events.EVENTS_STREAM) == 2


# Parking ------------------------------------------------------------------------------


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
    bus: Bus, database: Database, caplog: pytest.LogCaptureFixture
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
        await a_failed_round(caplog)
    oldest = REGISTRY.get_sample_value("shop_outbox_oldest_pending_seconds")
    assert oldest is not None
    assert 0 < oldest <= time.monotonic() - enqueued


# Who may connect, publish and read ----------------------------------------------------


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
