"""The mesh's tables in every service's database, their migrations, and the column type of
every timestamp.

A service's own tables follow the same rules: `Migration` steps of portable DDL and
`UtcDateTime` columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa


@dataclass(frozen=True)
class Migration:
    """One step of a schema's history; never edited once released, only followed."""

    version: int
    description: str
    statements: Sequence[str]
    #: Statements only one backend runs, by its dialect's name ("sqlite", "postgresql"),
    #: after `statements`: what the two spell differently, such as a full-text index.
    by_dialect: Mapping[str, Sequence[str]] = field(default_factory=dict)


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


#: The mesh's tables (`Database` creates `schema_migrations` from it before migrating).
metadata = sa.MetaData()

#: Which migrations of which component have been applied.
schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", UtcDateTime, nullable=False),
)

#: Results of mutations by request id (AIP-155): a retry returns the first result.
request_log = sa.Table(
    "request_log",
    metadata,
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
    metadata,
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
    metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("processed_time", UtcDateTime, nullable=False),
)
#: The service's own secret keys by use (`page_tokens`), each made on its first start.
service_keys = sa.Table(
    "service_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)
saga_orders = sa.Table(
    "saga_orders",
    metadata,
    sa.Column("order_id", sa.String(36), primary_key=True),
    sa.Column("placed", sa.LargeBinary),
    sa.Column("cancelled", sa.Boolean, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)


#: The mesh's own tables, present in every service's database.
MESH_MIGRATIONS = (
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
