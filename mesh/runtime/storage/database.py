"""A service's database: opening it, migrating it, its transactions and snapshots."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.runtime.connection import Connection, Engine, PostgresEngine
from mesh.runtime.pagination import PageTokens
from mesh.runtime.storage.outbox_events import OUTBOX_WRITTEN
from mesh.runtime.storage.schema import (
    MESH_MIGRATIONS,
    Migration,
    metadata,
    outbox,
    schema_migrations,
    service_keys,
    utc_now,
)

#: Bytes of a service key: 256 bits, as HMAC-SHA256 takes them.
_KEY_BYTES = 32

#: Built once (see the note on statements in `mesh.runtime.storage`).
_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.event_id.in_(sa.bindparam("event_ids", expanding=True)))
    .values(published_time=sa.bindparam("now"))
)


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
            await self._migrate("mesh", MESH_MIGRATIONS)
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
            connection.info.pop(OUTBOX_WRITTEN, None)
            yield connection
            await self._write_published_marks(connection)
            wrote_events = connection.info.pop(OUTBOX_WRITTEN, False)
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
                lambda sync: metadata.create_all(sync, tables=[schema_migrations])
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
                dialect = connection.dialect.name
                for statement in [*migration.statements, *migration.by_dialect.get(dialect, ())]:
                    if dialect == "postgresql":
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
