"""Every service's storage on a real PostgreSQL server (tests/support/postgres.py).

The component tests (tests/services) run each service's flows on Postgres as well as on
SQLite. These tests add what only Postgres can show: each service's migrations on a
fresh database, replicas starting together, timestamps on a server whose time zone is
not UTC, and the read-check-write steps of the services under concurrent writers, which
SQLite serializes by itself and Postgres only by `Database.transaction`'s lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext

from mesh.runtime.connection import AwaitedConnection
from mesh.runtime.consumer import EventConsumer, Handler, Outcome
from mesh.runtime.errors import Unavailable
from mesh.runtime.events import OutboxRelay, new_event
from mesh.runtime.money import Money
from mesh.runtime.storage import (
    Database,
    Migration,
    outbox,
    processed_events,
    request_log,
    saga_orders,
    schema_migrations,
    service_keys,
    utc_now,
)
from services.catalog import adapters as catalog
from services.catalog.domain import Product
from services.catalog.handlers import UpdateProduct, update_product
from services.identity import adapters as identity
from services.identity.tokens import SigningKey
from services.inventory import adapters as inventory
from services.inventory.domain import Stock
from services.notifications import adapters as notifications
from services.notifications.domain import NotificationKind
from services.notifications.handlers import RecordNotification, record_notification
from services.orders import adapters as orders
from services.orders import saga as orders_saga
from services.orders.domain import PricedProduct, RequestedLine, ShippingAddress
from services.orders.handlers import PlaceOrder, place_order
from services.payments import adapters as payments
from services.payments.domain import Approved, ProviderDecision
from services.payments.handlers import (
    AuthorizePayment,
    CapturePayment,
    RefundPayment,
    authorize_payment,
    capture_payment,
    refund_payment,
)
from services.processor import adapters as processor
from services.processor.domain import Decision
from services.processor.handlers import Authorize, authorize
from services.search import adapters as search
from services.shipping import adapters as shipping
from services.shipping.domain import Destination
from services.shipping.handlers import CreateShipment, create_shipment
from shop.events.v1 import events_pb2
from tests.support.postgres import SERVER_TIME_ZONE, PostgresDatabases, PostgresServer

pytestmark = pytest.mark.integration

#: Each service's migrations and the tables its code queries.
SERVICES: dict[str, tuple[Sequence[Migration], sa.MetaData]] = {
    "catalog": (catalog.MIGRATIONS, catalog.metadata),
    "inventory": (inventory.MIGRATIONS, inventory.metadata),
    "orders": (orders.MIGRATIONS, orders.metadata),
    "payments": (payments.MIGRATIONS, payments.metadata),
    "shipping": (shipping.MIGRATIONS, shipping.metadata),
    "identity": (identity.MIGRATIONS, identity.metadata),
    "notifications": (notifications.MIGRATIONS, notifications.metadata),
    "processor": (processor.MIGRATIONS, processor.metadata),
    "search": (search.MIGRATIONS, search.metadata),
}
MESH_TABLES = (request_log, outbox, processed_events, saga_orders, service_keys)
NOON = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TEA = Product(
    id="p1", name="Tea", description="", price=Money("EUR", 450), category="food",
    weight_grams=100, create_time=NOON, update_time=NOON,
)  # fmt: skip


@pytest.fixture
async def databases(postgres: PostgresServer) -> AsyncIterator[PostgresDatabases]:
    async with postgres.databases() as databases:
        yield databases


async def opened(url: str, component: str, migrations: Sequence[Migration]) -> Database:
    database = Database(url, component, migrations)
    await database.open()
    return database


async def count(database: Database, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    async with database.snapshot() as connection:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int((await connection.execute(query)).scalar_one())


async def warmed(database: Database, connections: int = 6) -> Database:
    """`database` with `connections` open in its pool, so that concurrent calls overlap
    instead of starting one after another behind each new connection's set-up."""

    async def hold() -> None:
        async with database.snapshot():
            await asyncio.sleep(0.01)  # held while the others open theirs

    await asyncio.gather(*(hold() for _ in range(connections)))
    return database


async def outcomes(*calls: Any) -> list[Any]:
    """The results of `calls` run concurrently, exceptions included."""
    return list(await asyncio.gather(*calls, return_exceptions=True))


# Migrations ---------------------------------------------------------------------------

#: The versions of the mesh's own migrations, in every service's database.
MESH_VERSIONS = [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_migrations_apply_to_a_fresh_database_once(
    postgres: PostgresServer, service: str
) -> None:
    migrations, metadata = SERVICES[service]
    url = await postgres.create_database(f"fresh_{service}")
    for _ in range(2):  # the second start finds everything applied
        database = await opened(url, service, migrations)
        try:
            assert await database.applied_versions() == [m.version for m in migrations]
            assert await database.applied_versions("mesh") == MESH_VERSIONS
            assert await count(database, schema_migrations) == len(migrations) + len(MESH_VERSIONS)
            async with database.snapshot() as connection:
                for table in [*MESH_TABLES, *metadata.tables.values()]:
                    columns = await connection.run_sync(
                        lambda sync, name=table.name: sa.inspect(sync).get_columns(name)  # type: ignore[misc]
                    )
                    assert [c["name"] for c in columns] == [c.name for c in table.columns]
        finally:
            await database.close()


async def test_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    url = await postgres.create_database("replicas")
    replicas = [Database(url, "orders", orders.MIGRATIONS) for _ in range(5)]
    try:
        await asyncio.gather(*(replica.open() for replica in replicas))
        applied = await count(replicas[0], schema_migrations)
        assert applied == len(orders.MIGRATIONS) + len(MESH_VERSIONS)
        # One of them made the page tokens' key, and every one signs with it.
        token = replicas[0].page_tokens.encode({"id": "x"}, {})
        assert all(r.page_tokens.decode(token, {}) == {"id": "x"} for r in replicas)
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_migration_that_fails_leaves_nothing_behind(postgres: PostgresServer) -> None:
    """Postgres runs DDL in the transaction, so a failed step is undone entirely."""
    url = await postgres.create_database("broken")
    broken = (
        Migration(1, "two tables, the second invalid", [
            "CREATE TABLE first (id INTEGER PRIMARY KEY)",
            "CREATE TABLE second (id NO_SUCH_TYPE)",
        ]),
    )  # fmt: skip
    with pytest.raises(sa.exc.ProgrammingError):
        await opened(url, "broken", broken)
    database = await opened(url, "broken", ())
    try:
        async with database.snapshot() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "first" not in tables
        assert await database.applied_versions("broken") == []
    finally:
        await database.close()


# Types ---------------------------------------------------------------------------------


async def test_timestamps_are_stored_in_utc_whatever_the_server_time_zone(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    product = TEA
    async with databases.open(tmp_path, "catalog", catalog.MIGRATIONS) as database:
        store = catalog.SqlCatalogStore(database)
        async with store.transaction() as tx:
            await tx.add(product)
        async with database.snapshot() as connection:
            zone = (await connection.exec_driver_sql("SHOW timezone")).scalar_one()
            stored = await connection.exec_driver_sql("SELECT create_time::text FROM products")
            assert (zone, stored.scalar_one()) == (SERVER_TIME_ZONE, "2026-01-01 12:00:00")
        async with store.snapshot() as tx:
            assert await tx.get("p1") == product
            assert await tx.page("food", (NOON, "p0"), 10) == [product]  # keyset cursor


async def test_event_payloads_keep_every_byte(databases: PostgresDatabases, tmp_path: Path) -> None:
    """The outbox's BLOB column is BYTEA on Postgres; the relay publishes in commit order."""
    events = [
        new_event("orders", f"o{n}", events_pb2.OrderPlaced(order_id=f"o{n}", customer_id="\x00é"))
        for n in range(3)
    ]
    published: list[tuple[str, bytes, dict[str, str]]] = []

    class JetStream:
        async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
            published.append((subject, payload, headers))

    async with databases.open(tmp_path, "orders", orders.MIGRATIONS) as database:
        store = orders.SqlOrdersStore(database)
        for event in events:
            async with store.transaction() as tx:
                await tx.enqueue_event(event)
        relay = OutboxRelay(database, cast(JetStreamContext, JetStream()))
        assert await relay.publish_pending() == 3
        assert await relay.publish_pending() == 0
        assert await count(database, outbox, outbox.c.published_time.is_(None)) == 0
    assert [events_pb2.EventEnvelope.FromString(p) for _, p, _ in published] == events
    assert {subject for subject, _, _ in published} == {"shop.orders.order_placed"}


# Concurrent writers ---------------------------------------------------------------------


async def test_replicas_starting_together_sign_with_one_key(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = await databases.url(tmp_path, "identity")
    replicas = [await opened(url, "identity", identity.MIGRATIONS) for _ in range(4)]
    try:
        loaded = await asyncio.gather(
            *(
                identity.SqlSigningKeyStore(replica).load_or_create(
                    lambda: SigningKey.generate(utc_now())
                )
                for replica in replicas
            )
        )
        assert len({tuple(key.kid for key in keys) for keys in loaded}) == 1
        assert await count(replicas[0], identity.signing_keys) == 1
    finally:
        for replica in replicas:
            await replica.close()


async def test_conditional_holds_never_oversell_even_without_the_write_lock(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    """Inventory's guard is in its UPDATEs: writers that bypass `Database.transaction`
    and overlap (each holds its row lock a while) still hold exactly the units there are."""
    async with databases.open(tmp_path, "inventory", inventory.MIGRATIONS) as database:
        async with inventory.SqlInventoryStore(database).transaction() as tx:
            await tx.add_stock(Stock("tea", on_hand=5, reserved=0, update_time=utc_now()))

        async def hold_one() -> bool:
            async with database.engine.connect() as connection, connection.begin():
                tx = inventory.SqlInventoryTransaction(AwaitedConnection(connection))
                held = await tx.hold("tea", 1, utc_now())
                await asyncio.sleep(0.02)  # the row lock held while the others try theirs
                return held

        held = await asyncio.gather(*(hold_one() for _ in range(8)))
        async with inventory.SqlInventoryStore(database).snapshot() as tx:
            level = await tx.get_stock("tea")
    assert held.count(True) == 5
    assert level is not None
    assert (level.on_hand, level.reserved) == (5, 5)


async def test_concurrent_attempts_of_a_transient_authorization_fail_once(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    """The processor remembers a `tok_transient` key in its database: of concurrent
    attempts of one key exactly one fails, and one decision is recorded."""
    command = Authorize("tok_transient", Money("EUR", 2500), "order-1")
    async with databases.open(tmp_path, "processor", processor.MIGRATIONS) as database:
        store = processor.SqlProcessorStore(await warmed(database))
        results = await outcomes(*(authorize(store, command) for _ in range(6)))
        assert await count(database, processor.authorizations) == 1
        assert await count(database, processor.transient_failures) == 1
    failures = [r for r in results if isinstance(r, BaseException)]
    assert [type(f) for f in failures] == [Unavailable]
    answers = [r for r in results if not isinstance(r, BaseException)]
    assert {(a.id, a.decision) for a in answers} == {(answers[0].id, Decision.APPROVED)}


class ApprovingProvider:
    """A processor that approves every card: these tests are about payments' storage."""

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        return Approved()


async def test_concurrent_partial_refunds_all_count(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    async with databases.open(tmp_path, "payments", payments.MIGRATIONS) as database:
        store = payments.SqlPaymentsStore(await warmed(database))
        authorized = await authorize_payment(
            store,
            ApprovingProvider(),
            AuthorizePayment("order-1", "alice", Money("EUR", 1000), "tok_visa", "a"),
        )
        await capture_payment(store, CapturePayment(authorized.id, "c"))
        results = await outcomes(
            *(
                refund_payment(store, RefundPayment(authorized.id, Money("EUR", 300), "", f"r{n}"))
                for n in range(3)
            )
        )
        assert not [r for r in results if isinstance(r, BaseException)]
        async with store.snapshot() as tx:
            payment = await tx.get(authorized.id)
        async with database.snapshot() as connection:
            refunded = await connection.execute(
                sa.select(sa.func.sum(payments.refunds.c.minor_units))
            )
            assert refunded.scalar_one() == 900
    assert payment is not None
    assert payment.refunded_amount == Money("EUR", 900)


async def test_concurrent_updates_of_different_fields_both_land(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    product = TEA
    async with databases.open(tmp_path, "catalog", catalog.MIGRATIONS) as database:
        store = catalog.SqlCatalogStore(await warmed(database))
        async with store.transaction() as tx:
            await tx.add(product)
        await asyncio.gather(
            update_product(store, UpdateProduct("p1", {"name": "Green tea"}, "u1")),
            update_product(store, UpdateProduct("p1", {"category": "drinks"}, "u2")),
        )
        async with store.snapshot() as tx:
            updated = await tx.get("p1")
    assert updated is not None
    assert (updated.name, updated.category) == ("Green tea", "drinks")


async def test_concurrent_shipments_of_one_order_create_one(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    destination = Destination("DE", postal_code="10115", address_lines=("Hauptstr. 1",))
    async with databases.open(tmp_path, "shipping", shipping.MIGRATIONS) as database:
        store = shipping.SqlShippingStore(await warmed(database))
        results = await outcomes(
            *(
                create_shipment(
                    store, CreateShipment("order-1", "alice", destination, 500, f"r{n}")
                )
                for n in range(5)
            )
        )
        assert await count(database, shipping.shipments) == 1
    assert not [r for r in results if isinstance(r, BaseException)]
    assert len({r.id for r in results}) == 1


async def test_concurrent_outcomes_of_one_order_notify_once(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    command = RecordNotification("alice", "order-1", NotificationKind.ORDER_CONFIRMED)
    async with databases.open(tmp_path, "notifications", notifications.MIGRATIONS) as database:
        store = notifications.SqlNotificationsStore(await warmed(database))
        results = await outcomes(*(record_notification(store, command) for _ in range(5)))
        assert await count(database, notifications.notifications) == 1
    assert not [r for r in results if isinstance(r, BaseException)]
    assert len({r.id for r in results}) == 1


# The orders' outbox and processed events ---------------------------------------------


class OneProductCatalog:
    async def products(self, ids: Sequence[str]) -> dict[str, PricedProduct]:
        return {i: PricedProduct(i, "Tea", Money("EUR", 450), 100) for i in ids}


def placing(request_id: str) -> PlaceOrder:
    return PlaceOrder(
        caller="alice", customer_id="", lines=(RequestedLine("tea", 2),),
        shipping_address=ShippingAddress("DE", postal_code="10115"),
        payment_token="tok_visa", request_id=request_id,
    )  # fmt: skip


async def applied(
    database: Database, handlers: dict[str, Handler], envelope: events_pb2.EventEnvelope
) -> Outcome:
    """`envelope` applied by an orders consumer of its own (which needs no NATS for it),
    as one replica would; its outcome, or the handler's error raised."""
    consumer = EventConsumer(
        database, cast(JetStreamContext, None), name="orders", handlers=handlers
    )
    [(outcome, error)] = await consumer.apply([envelope])
    if error is not None:
        raise error
    return outcome


async def test_concurrent_retries_place_one_order_with_one_event(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    async with databases.open(tmp_path, "orders", orders.MIGRATIONS) as database:
        store = orders.SqlOrdersStore(await warmed(database))
        results = await outcomes(
            *(place_order(store, OneProductCatalog(), placing("retried")) for _ in range(6))
        )
        assert not [r for r in results if isinstance(r, BaseException)]
        assert len({r.id for r in results}) == 1
        assert await count(database, orders.orders) == 1
        async with database.snapshot() as connection:
            pending = (await connection.execute(sa.select(outbox.c.subject))).scalars().all()
    assert pending == ["shop.orders.order_placed"]


async def test_a_batch_commits_its_good_events_and_rolls_back_the_bad_one_alone(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    """Savepoints on Postgres: steps of two orders and one of an order nobody placed,
    applied as one batch; the unknown order's step fails, the other two commit."""
    async with databases.open(tmp_path, "orders", orders.MIGRATIONS) as database:
        store = orders.SqlOrdersStore(await warmed(database))
        placed = [await place_order(store, OneProductCatalog(), placing(r)) for r in "ab"]
        steps = [
            new_event("inventory", order_id, events_pb2.StockReserved(order_id=order_id))
            for order_id in (placed[0].id, "nobody-placed-this", placed[1].id)
        ]
        consumer = EventConsumer(
            database, cast(JetStreamContext, None), name="orders",
            handlers=orders_saga.handlers(store.within),
        )  # fmt: skip
        outcomes = [outcome for outcome, _ in await consumer.apply(steps)]
        async with store.snapshot() as tx:
            after = [await tx.get(order.id) for order in placed]
        assert await count(database, processed_events) == 2
    assert outcomes == [Outcome.APPLIED, Outcome.FAILED, Outcome.APPLIED]
    assert [[s.name for s in o.history] for o in after if o is not None] == [
        ["OrderPlaced", "StockReserved"], ["OrderPlaced", "StockReserved"],
    ]  # fmt: skip


async def test_concurrent_saga_steps_of_one_order_both_land(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    async with databases.open(tmp_path, "orders", orders.MIGRATIONS) as database:
        store = orders.SqlOrdersStore(await warmed(database))
        order = await place_order(store, OneProductCatalog(), placing("p"))
        handlers = orders_saga.handlers(store.within)
        reserved = new_event("inventory", order.id, events_pb2.StockReserved(order_id=order.id))
        captured = new_event(
            "payments",
            order.id,
            events_pb2.PaymentCaptured(
                order_id=order.id, payment_id="pay-1", amount=Money("EUR", 900).to_proto()
            ),
        )
        outcomes = await asyncio.gather(
            applied(database, handlers, reserved), applied(database, handlers, captured)
        )
        async with store.snapshot() as tx:
            after = await tx.get(order.id)
        assert await count(database, processed_events) == 2
    assert list(outcomes) == [Outcome.APPLIED, Outcome.APPLIED]
    assert after is not None
    assert sorted(step.name for step in after.history) == [
        "OrderPlaced", "PaymentCaptured", "StockReserved",
    ]  # fmt: skip
    assert after.payment_id == "pay-1"


async def test_a_redelivered_event_is_applied_once(
    databases: PostgresDatabases, tmp_path: Path
) -> None:
    async with databases.open(tmp_path, "orders", orders.MIGRATIONS) as database:
        store = orders.SqlOrdersStore(await warmed(database))
        order = await place_order(store, OneProductCatalog(), placing("p"))
        handlers = orders_saga.handlers(store.within)
        reserved = new_event("inventory", order.id, events_pb2.StockReserved(order_id=order.id))
        results = await outcomes(*(applied(database, handlers, reserved) for _ in range(4)))
        async with store.snapshot() as tx:
            after = await tx.get(order.id)
        assert await count(database, processed_events) == 1
    assert sorted(r.value for r in results if isinstance(r, Outcome)) == [
        "applied", "duplicate", "duplicate", "duplicate",
    ]  # fmt: skip
    assert after is not None
    assert [step.name for step in after.history] == ["OrderPlaced", "StockReserved"]


def test_every_service_is_covered() -> None:
    """A new service gets these tests too, once its migrations are listed above."""
    root = Path(__file__).resolve().parents[2] / "services"
    assert sorted(p.parent.name for p in root.glob("*/adapters.py")) == sorted(SERVICES)
