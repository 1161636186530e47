"""The storage seam on a real SQLite file: pragmas, migrations, serialized writers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from mesh.runtime.caller import serving
from mesh.runtime.connection import Connection
from mesh.runtime.errors import AlreadyExists, InvalidArgument
from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    find_request,
    outbox,
    processed_events,
    record_request,
    request_log,
    saga_orders,
)
from services.catalog.adapters import MIGRATIONS as CATALOG_MIGRATIONS
from services.catalog.adapters import metadata as catalog_metadata
from shop.events.v1 import events_pb2

pytestmark = pytest.mark.integration

COUNTER = (
    Migration(1, "counter", ["CREATE TABLE counter (n INTEGER NOT NULL CHECK (n >= 0))"]),
    Migration(2, "one row", ["INSERT INTO counter (n) VALUES (0)"]),
)


async def opened(path: Path, migrations: tuple[Migration, ...] = COUNTER) -> Database:
    database = Database.sqlite(path, "test", migrations)
    await database.open()
    return database


async def test_connections_use_wal_and_enforce_foreign_keys(tmp_path: Path) -> None:
    database = await opened(tmp_path / "t.db")
    try:
        async with database.snapshot() as connection:
            mode = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert (mode, foreign_keys) == ("wal", 1)
    finally:
        await database.close()


async def test_the_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    database = await opened(tmp_path / "service" / "t.db")
    try:
        async with database.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = 1")
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "service").iterdir()}
        assert (tmp_path / "service").stat().st_mode & 0o777 == 0o700
        assert modes["t.db"] == 0o600
        assert modes.get("t.db-wal", 0o600) == 0o600
    finally:
        await database.close()


async def test_replicas_and_restarts_sign_page_tokens_with_one_key(tmp_path: Path) -> None:
    """The key is made once, in the database: a page token issued by one replica, or
    before a restart, is read by every other; another service's database has its own."""
    first, second = await opened(tmp_path / "t.db"), await opened(tmp_path / "t.db")
    other = await opened(tmp_path / "other" / "t.db")
    try:
        token = first.page_tokens.encode({"id": "x"}, {})
        assert second.page_tokens.decode(token, {}) == {"id": "x"}
        await first.close()
        first = await opened(tmp_path / "t.db")
        assert first.page_tokens.decode(token, {}) == {"id": "x"}
        with pytest.raises(InvalidArgument):
            other.page_tokens.decode(token, {})
    finally:
        for database in (first, second, other):
            await database.close()


async def test_migrations_apply_once_and_in_order(tmp_path: Path) -> None:
    for _ in range(2):
        database = await opened(tmp_path / "t.db")
        await database.close()
    database = await opened(tmp_path / "t.db")
    try:
        assert await database.applied_versions() == [1, 2]
        assert await database.applied_versions("mesh") == [1, 2, 3, 4, 5, 6]
        async with database.snapshot() as connection:
            rows = (await connection.exec_driver_sql("SELECT n FROM counter")).all()
        assert rows == [(0,)]  # migration 2 ran exactly once
    finally:
        await database.close()


async def test_a_new_migration_is_applied_to_an_existing_database(tmp_path: Path) -> None:
    await (await opened(tmp_path / "t.db")).close()
    grown = (*COUNTER, Migration(3, "label", ["ALTER TABLE counter ADD COLUMN label TEXT"]))
    database = await opened(tmp_path / "t.db", grown)
    try:
        assert await database.applied_versions() == [1, 2, 3]
    finally:
        await database.close()


def test_migration_versions_must_ascend() -> None:
    with pytest.raises(ValueError, match="ascending"):
        Database("sqlite://", "test", (COUNTER[1], COUNTER[0]))


async def test_concurrent_read_modify_write_transactions_lose_no_update(tmp_path: Path) -> None:
    database = await opened(tmp_path / "t.db")

    async def increment() -> None:
        async with database.transaction() as connection:
            n = (await connection.exec_driver_sql("SELECT n FROM counter")).scalar_one()
            await asyncio.sleep(0)  # let the other writers run between read and write
            await connection.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})

    try:
        await asyncio.gather(*(increment() for _ in range(25)))
        async with database.snapshot() as connection:
            assert (await connection.exec_driver_sql("SELECT n FROM counter")).scalar() == 25
    finally:
        await database.close()


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    database = await opened(tmp_path / "t.db")

    async def half_valid() -> None:
        async with database.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = 5")
            await connection.exec_driver_sql("UPDATE counter SET n = -1")  # CHECK fails

    try:
        with pytest.raises(sa.exc.IntegrityError):
            await half_valid()
        async with database.snapshot() as connection:
            assert (await connection.exec_driver_sql("SELECT n FROM counter")).scalar() == 0
    finally:
        await database.close()


async def test_migrated_schemas_match_the_tables_the_code_queries(tmp_path: Path) -> None:
    database = Database.sqlite(tmp_path / "catalog.db", "catalog", CATALOG_MIGRATIONS)
    await database.open()
    try:
        async with database.snapshot() as connection:
            mesh_tables = [request_log, outbox, processed_events, saga_orders]
            for table in [*mesh_tables, *catalog_metadata.tables.values()]:
                columns = await connection.run_sync(
                    lambda sync, name=table.name: sa.inspect(sync).get_columns(name)  # type: ignore[misc]
                )
                assert [c["name"] for c in columns] == [c.name for c in table.columns], table.name
    finally:
        await database.close()


async def test_a_joined_store_fails_its_savepoint_only(tmp_path: Path) -> None:
    """A use case run inside an open transaction (an event's) rolls back its own writes on
    an error and leaves the transaction's other writes to commit."""
    database = await opened(tmp_path / "t.db")
    store = SqlStore(database, SqlTransaction)

    async def failing_use_case(connection: Connection) -> None:
        async with store.within(connection).transaction():
            await connection.exec_driver_sql("UPDATE counter SET n = n + 100")
            raise ValueError("the use case refuses")

    try:
        async with database.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
            with pytest.raises(ValueError, match="refuses"):
                await failing_use_case(connection)
            async with store.within(connection).transaction():
                await connection.exec_driver_sql("UPDATE counter SET n = n + 10")
        async with database.snapshot() as connection:
            assert (await connection.exec_driver_sql("SELECT n FROM counter")).scalar() == 11
    finally:
        await database.close()


async def test_a_snapshot_keeps_its_view_while_a_writer_commits(tmp_path: Path) -> None:
    database = await opened(tmp_path / "t.db")
    query = "SELECT n FROM counter"
    try:
        async with database.snapshot() as reader:
            before = (await reader.exec_driver_sql(query)).scalar()
            async with database.transaction() as writer:
                await writer.exec_driver_sql("UPDATE counter SET n = n + 5")
            during = (await reader.exec_driver_sql(query)).scalar()
        async with database.snapshot() as reader:
            after = (await reader.exec_driver_sql(query)).scalar()
    finally:
        await database.close()
    assert (before, during, after) == (0, 0, 5)


async def test_savepoints_nest_and_an_inner_failure_undoes_the_inner_writes_only(
    tmp_path: Path,
) -> None:
    database = await opened(tmp_path / "t.db")

    async def failing_inner(connection: Connection) -> None:
        async with connection.begin_nested():
            await connection.exec_driver_sql("UPDATE counter SET n = n + 1000")
            raise ValueError("inner")

    try:
        async with database.transaction() as connection:
            async with connection.begin_nested():
                await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
                with pytest.raises(ValueError, match="inner"):
                    await failing_inner(connection)
                async with connection.begin_nested():
                    await connection.exec_driver_sql("UPDATE counter SET n = n + 10")
            async with connection.begin_nested():
                await connection.exec_driver_sql("UPDATE counter SET n = n + 100")
        async with database.snapshot() as connection:
            assert (await connection.exec_driver_sql("SELECT n FROM counter")).scalar() == 111
    finally:
        await database.close()


async def test_a_writer_of_another_process_waits_for_the_lock_without_stalling_the_loop(
    tmp_path: Path,
) -> None:
    """Two `Database`s on one file hold separate locks, as two replicas do: the second
    writer waits for the first to commit (off the event loop), then goes on."""
    first, second = await opened(tmp_path / "t.db"), await opened(tmp_path / "t.db")
    order: list[str] = []
    ticks = 0
    first_holds = asyncio.Event()

    async def hold_the_lock() -> None:
        async with first.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
            order.append("first holds")
            first_holds.set()
            await asyncio.sleep(0.3)  # long enough for the ticks and the second writer
            order.append("first commits")

    async def write_meanwhile() -> None:
        await first_holds.wait()
        async with second.transaction() as connection:
            order.append("second begins")
            await connection.exec_driver_sql("UPDATE counter SET n = n + 10")

    async def tick() -> None:
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.01)  # time passing on the loop while the second writer waits
            ticks += 1
        order.append("ticked")

    try:
        await asyncio.gather(hold_the_lock(), write_meanwhile(), tick())
        async with second.snapshot() as connection:
            total = (await connection.exec_driver_sql("SELECT n FROM counter")).scalar()
    finally:
        await first.close()
        await second.close()
    # The loop kept running while the second writer waited for the lock.
    assert order == ["first holds", "ticked", "first commits", "second begins"]
    assert (total, ticks) == (11, 10)


async def test_a_writer_cancelled_while_it_waits_for_the_lock_leaves_its_connection_clean(
    tmp_path: Path,
) -> None:
    """A caller whose deadline passes while its `BEGIN IMMEDIATE` waits on another
    process's lock: once the lock is free its connection goes back to the pool with
    nothing begun, and the next writer of that database proceeds."""
    first, second = await opened(tmp_path / "t.db"), await opened(tmp_path / "t.db")
    first_holds = asyncio.Event()

    async def hold_the_lock() -> None:
        async with first.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
            first_holds.set()
            await asyncio.sleep(0.3)  # long enough for the waiter to wait, and be cancelled

    async def never_gets_to_write() -> None:
        async with second.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 100")

    try:
        holder = asyncio.create_task(hold_the_lock())
        await first_holds.wait()
        waiter = asyncio.create_task(never_gets_to_write())
        # Time to reach its `BEGIN IMMEDIATE`, which blocks in SQLite with no sign to await.
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await holder
        async with second.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 10")
        async with first.snapshot() as connection:
            total = (await connection.exec_driver_sql("SELECT n FROM counter")).scalar()
    finally:
        await first.close()
        await second.close()
    assert total == 11


async def test_published_marks_wait_out_a_failed_transaction_for_the_next(
    tmp_path: Path,
) -> None:
    """Marks handed to the database (`mark_published`) go with the next transaction that
    commits; one that fails leaves them for the one after, or for a flush."""
    database = await opened(tmp_path / "t.db")
    envelopes = [
        events_pb2.EventEnvelope(
            event_id=f"e{n}",
            producer="orders",
            order_id="o1",
            order_placed=events_pb2.OrderPlaced(order_id="o1"),
        )
        for n in (1, 2)
    ]

    async def marked() -> set[str]:
        async with database.snapshot() as connection:
            rows = await connection.execute(
                sa.select(outbox.c.event_id).where(outbox.c.published_time.is_not(None))
            )
            return set(rows.scalars())

    try:
        async with database.transaction() as connection:
            for envelope in envelopes:
                await SqlTransaction(connection).enqueue_event(envelope)
        database.mark_published(["e1"])

        async def failing() -> None:
            async with database.transaction() as connection:
                await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
                raise RuntimeError("the change failed")

        with pytest.raises(RuntimeError):
            await failing()
        assert (await marked(), database.unmarked) == (set(), 1)
        async with database.transaction() as connection:
            await connection.exec_driver_sql("UPDATE counter SET n = n + 1")
        assert (await marked(), database.unmarked) == ({"e1"}, 0)
        database.mark_published(["e2"])
        await database.flush_published_marks()
        assert (await marked(), database.unmarked) == ({"e1", "e2"}, 0)
    finally:
        await database.close()


async def test_request_ids_are_scoped_by_caller_and_bound_to_their_request(
    tmp_path: Path,
) -> None:
    database = await opened(tmp_path / "t.db")
    first, other = events_pb2.OrderPlaced(order_id="a"), events_pb2.OrderPlaced(order_id="b")

    async def record(subject: str | None, request: events_pb2.OrderPlaced, result: str) -> None:
        with serving(subject, request):
            async with database.transaction() as connection:
                await record_request(connection, "M", "r1", {"result": result})

    async def find(subject: str | None, request: events_pb2.OrderPlaced) -> object:
        with serving(subject, request):
            async with database.snapshot() as connection:
                return await find_request(connection, "M", "r1")

    try:
        await record("alice", first, "alice's")
        await record("bob", first, "bob's")  # another caller's id: a request of its own
        await record(None, first, "a service's")
        assert await find("alice", first) == {"result": "alice's"}
        assert await find("bob", first) == {"result": "bob's"}
        assert await find(None, first) == {"result": "a service's"}
        with pytest.raises(AlreadyExists) as reused:
            await find("alice", other)
        assert reused.value.reason == "REQUEST_ID_REUSED"
        async with database.snapshot() as connection:  # serving no call: the services' scope
            assert await find_request(connection, "M", "r1") == {"result": "a service's"}
    finally:
        await database.close()
