"""Each service's own database: connection set-up, versioned migrations, transactions.

Storage is SQLAlchemy Core (`mesh.runtime.connection`: SQLite inline on the event loop, Postgres
on asyncpg). Services write their queries against
SQLAlchemy `Table` objects, not SQL strings, so the same adapters run on SQLite (the
local mesh: one file per service under the run directory) and on Postgres (a DSN such as
`postgresql+asyncpg://...` in production) without touching the domain. Migrations are
numbered lists of portable DDL, applied in order at start-up and recorded in
`schema_migrations`; no service ever opens another service's database.

The DDL is written once for both backends: the one type name they spell differently,
SQLite's `BLOB`, is `BYTEA` on Postgres (`database._postgres_ddl`); timestamps are `TIMESTAMP`
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

Statements every request or event runs are built once, at import: SQLAlchemy then finds
each one's compiled form by a cache key it computed already, where a statement built anew
for each call costs about three times the query itself on SQLite.

The modules: `schema` (the mesh's tables, `Migration`, `UtcDateTime`), `database`
(`Database`: opening, migrations, transactions), `idempotency` (the request log),
`outbox_events` (events into the outbox), `queries` (pages, whole-row saves) and
`stores` (a service's store port on SQL). A service imports from this package.
"""

from mesh.runtime.storage.database import Database
from mesh.runtime.storage.idempotency import find_request, record_request
from mesh.runtime.storage.outbox_events import (
    PER_ENTITY_EVENTS,
    enqueue_event,
    event_subject,
    ordering_key,
    subject_filter,
)
from mesh.runtime.storage.queries import keyset_page, whole_row_parameters, whole_row_update
from mesh.runtime.storage.schema import (
    Migration,
    UtcDateTime,
    outbox,
    processed_events,
    request_log,
    saga_orders,
    schema_migrations,
    service_keys,
    utc_now,
)
from mesh.runtime.storage.stores import JoinedStore, SqlStore, SqlTransaction

__all__ = [
    "PER_ENTITY_EVENTS",
    "Database",
    "JoinedStore",
    "Migration",
    "SqlStore",
    "SqlTransaction",
    "UtcDateTime",
    "enqueue_event",
    "event_subject",
    "find_request",
    "keyset_page",
    "ordering_key",
    "outbox",
    "processed_events",
    "record_request",
    "request_log",
    "saga_orders",
    "schema_migrations",
    "service_keys",
    "subject_filter",
    "utc_now",
    "whole_row_parameters",
    "whole_row_update",
]
