"""Each service's own database: connection set-up, versioned migrations, transactions.

Storage is SQLAlchemy Core (`mesh.runtime.connection`: SQLite inline on the event loop, Postgres
on asyncpg). Services write their queries against
SQLAlchemy `Table` objects, not SQL strings, so the same adapters run on SQLite (the
local mesh: one file per service under the run directory) and on Postgres (a DSN such as
`postgresql+asyncpg://...` in production) without touching the domain. Migrations are
numbered lists of portable DDL, applied in order at start-up and recorded in
`schema_migrations`; no service ever opens another service's database.

The DDL is written once for both backends: the one type name they spell differently,
SQLite's `BLOB`, is `BYTEA` on Postgres (`_postgres_ddl`); timestamps are `TIMESTAMP`
columns holding UTC (`UtcDateTime`).

On SQLite every connection runs in WAL mode with foreign keys enforced and a busy
timeout, and write transactions start with `BEGIN IMMEDIATE`, so two writers queue for
the lock instead of failing half-way ("database is locked") and a read-check-write
inside one transaction is serialized. On Postgres write transactions queue the same way,
on a transaction-scoped advisory lock (`Database.transaction`), so the services'
read-check-write steps (idempotent retries, whole-row saves, create-if-missing) mean the
same on both backends, replicas included; reads never wait for it. Rules that must hold
under concurrency are still written as conditional statements and CHECK constraints, so
they hold even for a writer that bypasses the lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.runtime import telemetry
from mesh.runtime.caller import current_call
from mesh.runtime.connection import Connection, Engine, PostgresEngine
from mesh.runtime.errors import AlreadyExists
from mesh.runtime.pagination import PageTokens
from shop.events.v1 import events_pb2

#: Marks a connection whose transaction wrote to the outbox (see `Database.transaction`).
_OUTBOX_WRITTEN = "shop_outbox_written"


@dataclass(frozen=True)
class Migration:
    """One step of a schema's history; never edited once released, only followed."""

    version: int
    description: str
    statements: Sequence[str]


def utc_now() -> datetime:
    """The current time, timezone-aware, as stored in every `*_time` column."""
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp in and out, stored as UTC without a zone on every backend.

    The migrations declare `TIMESTAMP` (without time zone) columns. Handing Postgres an
    aware value for one would convert it to the server's local time zone on the way in
    (and nothing converts it back), so the value is turned into naive UTC first, as
    SQLite, which keeps no zone at all, needs anyway.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def keyset_page(
    table: sa.Table, cursor: tuple[datetime, str] | None, limit: int, *, newest_first: bool
) -> sa.Select[Any]:
    """One page of `table` in (create_time, id) order, after `cursor`, at most `limit` rows.

    Keyset pagination: stable while rows are added, and an index on (create_time, id)
    serves it at any depth. Callers add their own filters to the select.
    """
    key = sa.tuple_(table.c.create_time, table.c.id)
    order = (
        (table.c.create_time.desc(), table.c.id.desc())
        if newest_first
        else (table.c.create_time, table.c.id)
    )
    query = table.select().order_by(*order).limit(limit)
    if cursor is not None:
        bound = sa.tuple_(sa.literal(cursor[0], UtcDateTime), sa.literal(cursor[1]))
        query = query.where(key < bound if newest_first else key > bound)
    return query


_metadata = sa.MetaData()

#: Which migrations of which component have been applied.
schema_migrations = sa.Table(
    "schema_migrations",
    _metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

#: Results of mutations by request id (AIP-155): a retry returns the first result.
request_log = sa.Table(
    "request_log",
    _metadata,
    sa.Column("method", sa.String(128), primary_key=True),
    sa.Column("caller", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)

#: Events waiting to be published (`mesh.runtime.events.OutboxRelay`), written by `enqueue_event`
#: in the transaction of the change they report, and the event ids a consumer applied.
#: An event the bus refused too often is parked: kept, with the reason, and skipped.
outbox = sa.Table(
    "outbox",
    _metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("published_time", UtcDateTime),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("parked_time", UtcDateTime),
    sa.Column("park_reason", sa.String(500)),
)
processed_events = sa.Table(
    "processed_events",
    _metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("processed_time", UtcDateTime, nullable=False),
)
#: The service's own secret keys by use (`page_tokens`), each made on its first start.
service_keys = sa.Table(
    "service_keys",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)
saga_orders = sa.Table(
    "saga_orders",
    _metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("placed", sa.LargeBinary),
    sa.Column("cancelled", sa.Boolean, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)


#: The mesh's own tables, present in every service's database.
_MESH_MIGRATIONS = (
    Migration(
        1,
        "request log for idempotent mutations",
        [
            """
            CREATE TABLE request_log (
                method VARCHAR(128) NOT NULL,
                request_id VARCHAR(128) NOT NULL,
                result TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL,
                PRIMARY KEY (method, request_id)
            )
            """
        ],
    ),
    Migration(
        2,
        "transactional outbox and processed event ids (mesh.runtime.events)",
        [
            """
            CREATE TABLE outbox (
                event_id VARCHAR(36) PRIMARY KEY,
                subject VARCHAR(200) NOT NULL,
                payload BLOB NOT NULL,
                create_time TIMESTAMP NOT NULL,
                published_time TIMESTAMP
            )
            """,
            "CREATE INDEX outbox_pending ON outbox (published_time, create_time)",
            """
            CREATE TABLE processed_events (
                consumer VARCHAR(100) NOT NULL,
                event_id VARCHAR(36) NOT NULL,
                processed_time TIMESTAMP NOT NULL,
                PRIMARY KEY (consumer, event_id)
            )
            """,
        ],
    ),
    Migration(
        3,
        "what a saga participant remembers of each order (mesh.runtime.saga)",
        [
            """
            CREATE TABLE saga_orders (
                order_id VARCHAR(36) PRIMARY KEY,
                placed BLOB,
                cancelled BOOLEAN NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
    Migration(
        4,
        "the service's secret keys (page tokens' signatures)",
        [
            """
            CREATE TABLE service_keys (
                name VARCHAR(64) PRIMARY KEY,
                secret BLOB NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
    Migration(
        5,
        "outbox events the bus refused: counted, then parked with the reason",
        [
            "ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE outbox ADD COLUMN parked_time TIMESTAMP",
            "ALTER TABLE outbox ADD COLUMN park_reason VARCHAR(500)",
        ],
    ),
    Migration(
        6,
        "request ids scoped by the caller, with the request they were first used for",
        [
            """
            CREATE TABLE request_log_scoped (
                method VARCHAR(128) NOT NULL,
                caller VARCHAR(64) NOT NULL,
                request_id VARCHAR(128) NOT NULL,
                fingerprint VARCHAR(64) NOT NULL,
                result TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL,
                PRIMARY KEY (method, caller, request_id)
            )
            """,
            """
            INSERT INTO request_log_scoped
                (method, caller, request_id, fingerprint, result, create_time)
            SELECT method, '', request_id, '', result, create_time FROM request_log
            """,
            "DROP TABLE request_log",
            "ALTER TABLE request_log_scoped RENAME TO request_log",
        ],
    ),
)

#: Bytes of a service key: 256 bits, as HMAC-SHA256 takes them.
_KEY_BYTES = 32


class Database:
    """A service's database: an engine plus the service's migrations."""

    def __init__(self, url: str, component: str, migrations: Sequence[Migration]) -> None:
        versions = [m.version for m in migrations]
        if versions != sorted(set(versions)):
            raise ValueError(f"{component}: migration versions must be unique and ascending")
        self.url = url
        self.component = component
        self._migrations = tuple(migrations)
        self._engine: Engine | None = None
        #: Set when a transaction that wrote to the outbox commits (wakes the relay).
        self.outbox_written = asyncio.Event()
        #: Writers of this process queue here, in order (see `transaction`).
        self._writer = asyncio.Lock()
        #: Outbox rows published and not marked yet (see `mark_published`).
        self._published: list[str] = []
        self._page_tokens: PageTokens | None = None

    @classmethod
    def sqlite(cls, path: Path, component: str, migrations: Sequence[Migration]) -> Database:
        """The database in the SQLite file `path`, readable by its owner only.

        The directory is created 0700 and the file 0600 (SQLite gives its -wal and -shm
        files the database file's mode): a service's data, password hashes and keys
        included, is nobody else's business.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        return cls(f"sqlite:///{path}", component, migrations)

    @property
    def engine(self) -> AsyncEngine:
        """The Postgres engine, for tests that go around `transaction` on purpose."""
        if not isinstance(self._engine, PostgresEngine):
            raise RuntimeError(f"the {self.component} database is not an open Postgres one")
        return self._engine.engine

    async def open(self) -> None:
        """Connect and bring the schema up to date (or, failing that, close again)."""
        self._engine = Engine.of(sa.make_url(self.url))
        try:
            await self._migrate("mesh", _MESH_MIGRATIONS)
            await self._migrate(self.component, self._migrations)
            self._page_tokens = PageTokens(await self._key("page_tokens"))
        except BaseException:
            await self.close()
            raise

    @property
    def page_tokens(self) -> PageTokens:
        """The service's page tokens, signed with its key (the same for every replica)."""
        if self._page_tokens is None:
            raise RuntimeError(f"the {self.component} database is not open")
        return self._page_tokens

    async def _key(self, name: str) -> bytes:
        """The service's secret key `name`, made (by the first replica to ask) if missing."""
        async with self.transaction() as connection:
            secret: bytes | None = (
                await connection.execute(
                    sa.select(service_keys.c.secret).where(service_keys.c.name == name)
                )
            ).scalar_one_or_none()
            if secret is None:
                secret = secrets.token_bytes(_KEY_BYTES)
                await connection.execute(
                    service_keys.insert().values(name=name, secret=secret, create_time=utc_now())
                )
        return secret

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    def _open_engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"the {self.component} database is not open")
        return self._engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on error.

        SQLite has one writer at a time. Writers of this process queue on a lock, in
        order, instead of each polling the file lock with SQLite's busy handler (which
        sleeps up to 100 ms between tries, the long tail under load); other processes
        (replicas) still meet at the file lock (`BEGIN IMMEDIATE`, see `SqliteEngine`).

        Postgres would run writers side by side (READ COMMITTED), and the services'
        read-check-write steps would then race: a retry finding no recorded request, two
        whole-row saves from one read, two replicas each creating the first signing key.
        So its write transactions queue too, replicas included, on an advisory lock
        (`PostgresEngine`). Snapshots never take it, and reads never wait for writers.
        """
        async with self._writer, self._open_engine().transaction() as connection:
            connection.info.pop(_OUTBOX_WRITTEN, None)
            yield connection
            await self._write_published_marks(connection)
            wrote_events = connection.info.pop(_OUTBOX_WRITTEN, False)
        if wrote_events:
            self.outbox_written.set()

    def mark_published(self, event_ids: Sequence[str]) -> None:
        """Have the outbox rows of these events marked published by the next write
        transaction of this process, whatever it is for, instead of by one of their own:
        a transaction costs a lock, a commit and an fsync, and the relay's marking would
        otherwise be one in every few a service makes. `flush_published_marks` writes
        them at once. Until they are written, a crash or a failed commit leaves the rows
        pending, and the relay publishes them again: JetStream drops the copies (the same
        message id, within its duplicate window)."""
        self._published += event_ids

    @property
    def unmarked(self) -> int:
        """How many published events wait for their rows' marks (see `mark_published`)."""
        return len(self._published)

    async def flush_published_marks(self) -> None:
        """Write the marks no transaction took yet, in a transaction of their own."""
        if self._published:
            async with self.transaction():
                pass

    async def _write_published_marks(self, connection: Connection) -> None:
        marks, self._published = self._published, []
        if not marks:
            return
        try:
            await connection.execute(_MARK_PUBLISHED, {"event_ids": marks, "now": utc_now()})
        except BaseException:
            self._published = marks + self._published
            raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        """A read-only transaction: a consistent view that takes no write lock."""
        async with self._open_engine().snapshot() as connection:
            yield connection

    async def applied_versions(self, component: str | None = None) -> list[int]:
        """Versions of `component`'s migrations (default: this service's) applied so far."""
        async with self.snapshot() as connection:
            rows = await connection.execute(
                sa.select(schema_migrations.c.version)
                .where(schema_migrations.c.component == (component or self.component))
                .order_by(schema_migrations.c.version)
            )
            return [row.version for row in rows]

    async def _migrate(self, component: str, migrations: Sequence[Migration]) -> None:
        async with self.transaction() as connection:
            await connection.run_sync(
                lambda sync: _metadata.create_all(sync, tables=[schema_migrations])
            )
            # Inside the write lock, so replicas starting together migrate once.
            applied = set(
                (
                    await connection.execute(
                        sa.select(schema_migrations.c.version).where(
                            schema_migrations.c.component == component
                        )
                    )
                ).scalars()
            )
            for migration in migrations:
                if migration.version in applied:
                    continue
                for statement in migration.statements:
                    if connection.dialect.name == "postgresql":
                        statement = _postgres_ddl(statement)
                    await connection.exec_driver_sql(statement)
                await connection.execute(
                    schema_migrations.insert().values(
                        component=component,
                        version=migration.version,
                        description=migration.description,
                        applied_at=utc_now(),
                    )
                )


def _postgres_ddl(statement: str) -> str:
    """A migration's statement as Postgres spells it: `BLOB` is `BYTEA` there.

    Everything else the migrations use (`VARCHAR`, `CHAR`, `TEXT`, `INTEGER`, `BIGINT`,
    `BOOLEAN`, `TIMESTAMP`, CHECK, UNIQUE, REFERENCES, `length`, `substr`, `LIKE`) means
    the same on both backends.
    """
    return re.sub(r"\bBLOB\b", "BYTEA", statement)


#: The statements every request or event runs, built once: SQLAlchemy then finds each
#: one's compiled form by a cache key it computed already, where a statement built anew
#: for each call costs about three times the query itself on SQLite.
_FIND_REQUEST = sa.select(request_log.c.result, request_log.c.fingerprint).where(
    request_log.c.method == sa.bindparam("method"),
    request_log.c.caller == sa.bindparam("caller"),
    request_log.c.request_id == sa.bindparam("request_id"),
)
_RECORD_REQUEST = request_log.insert()

#: The parameter that names the row a `whole_row_update` sets.
_ROW_ID = "b_id"


def whole_row_update(table: sa.Table, *conditions: sa.ColumnElement[bool]) -> sa.Update:
    """An update, built once, of the row of `table` with a given `id` (and `conditions`),
    setting the columns its parameters name (`whole_row_parameters`)."""
    return table.update().where(table.c.id == sa.bindparam(_ROW_ID), *conditions)


def whole_row_parameters(row: Mapping[str, Any], **conditions: Any) -> dict[str, Any]:
    """The parameters of a `whole_row_update` of `row` (which holds its `id`), with the
    values of the update's own `conditions`."""
    return {**row, _ROW_ID: row["id"], **conditions}


_ENQUEUE = outbox.insert()
_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.event_id.in_(sa.bindparam("event_ids", expanding=True)))
    .values(published_time=sa.bindparam("now"))
)


def _request_reused(method: str, request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for another {method} request; send a new one",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


def _scope() -> tuple[str, str]:
    """(caller, fingerprint) of the call being served (`mesh.runtime.caller.current_call`);
    ("", "") for work that serves no call, such as an event."""
    call = current_call()
    return (call.subject, call.fingerprint) if call is not None else ("", "")


async def find_request(
    connection: Connection, method: str, request_id: str
) -> dict[str, Any] | None:
    """The recorded result of an earlier request with this id, if there was one.

    Request ids are the caller's (AIP-155): one customer's id never finds another's
    request, and a service's own calls share one scope. An id recorded for a different
    request is ALREADY_EXISTS (`REQUEST_ID_REUSED`): the id names the request it was
    first used for, as a client-assigned id names the resource it created, so the
    second request can never succeed with it; a retry of the same request (the same
    canonical bytes) gets the first result.
    """
    if not request_id:
        return None
    caller, fingerprint = _scope()
    found = await connection.execute(
        _FIND_REQUEST, {"method": method, "caller": caller, "request_id": request_id}
    )
    row = found.first()
    if row is None:
        return None
    if fingerprint and row.fingerprint and fingerprint != row.fingerprint:
        raise _request_reused(method, request_id)
    return dict(json.loads(row.result))


async def record_request(
    connection: Connection, method: str, request_id: str, result: Mapping[str, Any]
) -> None:
    """Remember `result` for `request_id`, in the transaction that made the change.

    A request id already recorded for this method means the id was reused for a request
    whose first result cannot be replayed (say, the resource it made is gone): that is
    ALREADY_EXISTS for the caller, and the whole transaction is rolled back.
    """
    if not request_id:
        return
    caller, fingerprint = _scope()
    try:
        await connection.execute(
            _RECORD_REQUEST,
            {
                "method": method,
                "caller": caller,
                "request_id": request_id,
                "fingerprint": fingerprint,
                "result": json.dumps(dict(result)),
                "create_time": utc_now(),
            },
        )
    except sa.exc.IntegrityError:
        raise _request_reused(method, request_id) from None


def event_subject(envelope: events_pb2.EventEnvelope) -> str:
    """`shop.<producer>.<event>` (the payload's field name: order_placed, stock_reserved...)."""
    kind = envelope.WhichOneof("payload")
    if kind is None or not envelope.producer or not envelope.event_id:
        raise ValueError("an event needs an id, a producer and a payload")
    return f"shop.{envelope.producer}.{kind}"


class SqlTransaction:
    """Base of a service's view of its database inside one transaction.

    A service subclasses it with its own queries; the request log comes with it.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return await find_request(self._connection, method, request_id)

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        await record_request(self._connection, method, request_id, result)

    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        """Put an event in the outbox, in this transaction (see `enqueue_event`)."""
        await enqueue_event(self._connection, envelope)


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
    connection.info[_OUTBOX_WRITTEN] = True


View = TypeVar("View", bound=SqlTransaction)


class SqlStore(Generic[View]):
    """A service's store port on SQL: transactions, each seen through the service's view."""

    def __init__(self, database: Database, view: Callable[[Connection], View]) -> None:
        self._database = database
        self._view = view

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[View]:
        """A write transaction (see `Database.transaction`)."""
        async with self._database.transaction() as connection:
            yield self._view(connection)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[View]:
        """A read-only transaction (see `Database.snapshot`)."""
        async with self._database.snapshot() as connection:
            yield self._view(connection)

    @property
    def page_tokens(self) -> PageTokens:
        """The service's page tokens (see `Database.page_tokens`)."""
        return self._database.page_tokens

    def within(self, connection: Connection) -> JoinedStore[View]:
        """This store inside `connection`'s open transaction (an event's, say)."""
        return JoinedStore(connection, self._view, self.page_tokens)


class JoinedStore(Generic[View]):
    """A store whose transactions are savepoints of one open transaction.

    A use case written against a store runs unchanged inside an event consumer's
    transaction: its writes commit with the event's record, and an error it raises
    rolls back its own writes (the savepoint) and nothing else.
    """

    def __init__(
        self, connection: Connection, view: Callable[[Connection], View], page_tokens: PageTokens
    ):
        self._connection = connection
        self._view = view
        self.page_tokens = page_tokens

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[View]:
        async with self._connection.begin_nested():
            yield self._view(self._connection)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[View]:
        yield self._view(self._connection)
