"""A service's connection to its database, the same to its code on SQLite and Postgres.

Adapters run SQLAlchemy Core statements with `await connection.execute(...)` inside a
transaction that `mesh.runtime.storage.Database` opened; how the statement reaches the
database depends on the backend:

* **SQLite** (`SqliteEngine`): a statement on a local file takes microseconds, so it
  runs inline, on the event loop's thread, with SQLAlchemy's synchronous engine. An
  asyncio driver (aiosqlite) hands every statement, fetch and close to a thread of its
  own and back, which costs about six times the statement itself (measured in
  docs/benchmarks.md). Only the steps that wait go to a thread: `COMMIT`, which waits
  for the fsync, and `BEGIN IMMEDIATE` when another process (a replica) holds the
  write lock; a free lock is taken inline. Reads never wait in WAL mode.
* **Postgres** (`PostgresEngine`, asyncpg): statements travel over the network, and each
  is awaited (`AwaitedConnection`).

Both engines give the same two transactions, `transaction()` (a write transaction that
waits its turn, on SQLite's file lock or on a Postgres advisory lock) and `snapshot()`
(a read-only one that never waits for writers), so `mesh.runtime.storage.Database` is the same
code on both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

T = TypeVar("T")
Parameters = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
DriverParameters = tuple[Any, ...] | Mapping[str, Any] | None

#: How long a writer waits for SQLite's lock before giving up, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Connection(ABC):
    """One connection, inside a transaction that `Database.transaction` or `snapshot` began."""

    @property
    @abstractmethod
    def dialect(self) -> sa.Dialect: ...

    @property
    @abstractmethod
    def info(self) -> dict[Any, Any]:
        """Per-connection scratch space, kept while the connection lives in the pool."""

    @abstractmethod
    async def execute(
        self, statement: sa.Executable, parameters: Parameters = None
    ) -> sa.CursorResult[Any]:
        """Run a Core statement; the result is buffered (read it without awaiting)."""

    @abstractmethod
    async def exec_driver_sql(
        self, statement: str, parameters: DriverParameters = None
    ) -> sa.CursorResult[Any]: ...

    @abstractmethod
    async def run_sync(self, function: Callable[[sa.Connection], T]) -> T:
        """`function` with the synchronous connection (schema inspection, `create_all`)."""

    @abstractmethod
    def begin_nested(self) -> AbstractAsyncContextManager[object]:
        """A savepoint: released when the block ends, rolled back (alone) on error."""


class InlineConnection(Connection):
    """A synchronous connection run on the caller's thread (SQLite; see the module doc)."""

    def __init__(self, connection: sa.Connection) -> None:
        self.sync = connection
        self._driver = _driver(connection)
        self._savepoints = 0

    @property
    def dialect(self) -> sa.Dialect:
        return self.sync.dialect

    @property
    def info(self) -> dict[Any, Any]:
        return self.sync.info

    async def execute(
        self, statement: sa.Executable, parameters: Parameters = None
    ) -> sa.CursorResult[Any]:
        return self.sync.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: DriverParameters = None
    ) -> sa.CursorResult[Any]:
        return self.sync.exec_driver_sql(statement, parameters)

    async def run_sync(self, function: Callable[[sa.Connection], T]) -> T:
        return function(self.sync)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[object]:
        """A savepoint, set and released on the driver: SQLAlchemy's own bookkeeping of
        one costs several times the two statements (a consumer sets one per event of a
        batch), and nothing here asks SQLAlchemy about savepoints."""
        self._savepoints += 1
        name = f"shop_savepoint_{self._savepoints}"
        self._driver.execute(f"SAVEPOINT {name}")
        try:
            yield name
        except BaseException:
            if self._driver.in_transaction:  # not when SQLite ended it over an error
                self._driver.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        finally:
            self._savepoints -= 1
            if self._driver.in_transaction:
                self._driver.execute(f"RELEASE SAVEPOINT {name}")


class AwaitedConnection(Connection):
    """An asyncio connection whose every statement is awaited (Postgres)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    @property
    def dialect(self) -> sa.Dialect:
        return self.connection.dialect

    @property
    def info(self) -> dict[Any, Any]:
        return self.connection.info

    async def execute(
        self, statement: sa.Executable, parameters: Parameters = None
    ) -> sa.CursorResult[Any]:
        return await self.connection.execute(statement, parameters)

    async def exec_driver_sql(
        self, statement: str, parameters: DriverParameters = None
    ) -> sa.CursorResult[Any]:
        return await self.connection.exec_driver_sql(statement, parameters)

    async def run_sync(self, function: Callable[[sa.Connection], T]) -> T:
        return await self.connection.run_sync(function)

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[object]:
        async with self.connection.begin_nested() as savepoint:
            yield savepoint


class Engine(ABC):
    """A database's transactions, as `mesh.runtime.storage.Database` uses them."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction, serialized with every other writer of the database."""

    @abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction: a consistent view that takes no write lock."""

    @abstractmethod
    async def dispose(self) -> None: ...

    @staticmethod
    def of(url: sa.URL) -> Engine:
        """The engine for `url`: SQLite files inline, anything else on asyncio."""
        return SqliteEngine(url) if url.get_backend_name() == "sqlite" else PostgresEngine(url)


class PostgresEngine(Engine):
    """Postgres through asyncpg. Postgres would run writers side by side (READ
    COMMITTED); so that read-check-write steps mean what they mean on SQLite, replicas
    included, a write transaction's first statement takes a transaction-scoped advisory
    lock, released by the commit or rollback. Snapshots never take it."""

    #: Any constant 64-bit key serves, since advisory locks are per database: b"shopwrtr".
    WRITER_LOCK = int.from_bytes(b"shopwrtr", "big")

    def __init__(self, url: sa.URL) -> None:
        self.engine: AsyncEngine = create_async_engine(url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.engine.begin() as awaited:
            await awaited.execute(sa.select(sa.func.pg_advisory_xact_lock(self.WRITER_LOCK)))
            yield AwaitedConnection(awaited)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        async with self.engine.connect() as awaited, awaited.begin():
            yield AwaitedConnection(awaited)

    async def dispose(self) -> None:
        await self.engine.dispose()


class SqliteEngine(Engine):
    """SQLite files, with statements inline and the waiting steps on one thread.

    Every connection runs in WAL mode with foreign keys enforced, `synchronous=FULL`
    (a commit is on disk when it returns) and a busy timeout. A write transaction
    begins `IMMEDIATE`, taking the write lock at once, so a read-check-write inside one
    transaction is serialized and two writers queue instead of failing half-way
    ("database is locked"). The `BEGIN` is tried inline first, without waiting; only
    when another process (a replica) holds the lock does it wait, on the thread. A
    hop to the thread and back costs more than the statement: a write transaction
    costs about 100 us of CPU less this way (docs/benchmarks.md).
    """

    def __init__(self, url: sa.URL) -> None:
        # A checkout never waits for a free connection (`max_overflow=-1`): it would
        # block the event loop, and with it the connections' return.
        self._engine = sa.create_engine(
            url.set(drivername="sqlite"),
            connect_args={"check_same_thread": False},
            poolclass=sa.pool.QueuePool,
            pool_size=8,
            max_overflow=-1,
        )
        _configure_sqlite(self._engine)
        #: The thread that waits for the write lock and the fsync: one suffices, since
        #: this process's writers queue before they get here (`Database.transaction`).
        self._waiter = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        with self._engine.connect() as sync:
            driver = _driver(sync)
            if not _begin_unless_locked(driver):
                await self._wait_for(driver.execute, "BEGIN IMMEDIATE")
            transaction = sync.begin()  # SQLAlchemy's begin issues nothing on SQLite
            try:
                yield InlineConnection(sync)
            except BaseException:
                transaction.rollback()
                raise
            await self._wait_for(transaction.commit)

    async def _wait_for(self, step: Callable[..., object], *args: object) -> None:
        """`step` on the waiter thread. A caller cancelled meanwhile (a deadline passed)
        still waits for the thread to be done with the connection: only then may the
        connection go back to the pool (which rolls back what it began)."""
        running = asyncio.get_running_loop().run_in_executor(self._waiter, step, *args)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait([running])
            raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        with self._engine.connect() as sync:
            _driver(sync).execute("BEGIN")  # deferred: a read takes no write lock
            with sync.begin():  # SQLAlchemy's begin issues nothing on SQLite
                yield InlineConnection(sync)

    async def dispose(self) -> None:
        self._engine.dispose()
        self._waiter.shutdown(wait=True)


def _driver(connection: sa.Connection) -> sqlite3.Connection:
    return cast(sqlite3.Connection, connection.connection.dbapi_connection)


def _begin_unless_locked(driver: sqlite3.Connection) -> bool:
    """`BEGIN IMMEDIATE` at once, inline, unless another process holds the write lock
    (False: then it must wait, on the waiter thread). This process's own writers queue
    before they get here, so the lock is free but for a replica's writes."""
    driver.execute("PRAGMA busy_timeout=0")
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        driver.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return True


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Transactions begin as `SqliteEngine.transaction` and `snapshot` say, on the
        # driver; no listener of SQLAlchemy's `begin` event does it, since any listener
        # of a connection event makes every statement dispatch its events (about a
        # fifth of a prebuilt statement's cost).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            # First: switching a new file to WAL takes a lock that replicas starting
            # together contend for, and only a busy timeout makes them wait for it.
            f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode=WAL",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=FULL",
        ):
            cursor.execute(pragma)
        cursor.close()
