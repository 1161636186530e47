"""The processor's adapters: its SQL tables and store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mesh.runtime.money import Money
from mesh.runtime.storage import Database, Migration, SqlStore, SqlTransaction, UtcDateTime
from services.processor.domain import Authorization, Decision

MIGRATIONS = (
    Migration(
        1,
        "authorizations by idempotency key, and the keys that failed transiently",
        [
            # One answer per key: the unique key makes a second decision fail.
            """
            CREATE TABLE authorizations (
                id VARCHAR(36) PRIMARY KEY,
                idempotency_key VARCHAR(128) NOT NULL UNIQUE
                    CHECK (length(idempotency_key) > 0),
                token_fingerprint CHAR(64) NOT NULL,
                currency CHAR(3) NOT NULL,
                amount_minor_units BIGINT NOT NULL CHECK (amount_minor_units > 0),
                decision VARCHAR(16) NOT NULL CHECK (decision IN ('APPROVED', 'DECLINED')),
                decline_reason VARCHAR(64) NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
            # Attempts of `tok_transient` that already failed once, so that the retry
            # succeeds, also after a restart.
            """
            CREATE TABLE transient_failures (
                idempotency_key VARCHAR(128) PRIMARY KEY,
                create_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
)

metadata = sa.MetaData()
authorizations = sa.Table(
    "authorizations",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("token_fingerprint", sa.String(64), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor_units", sa.BigInteger, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("decline_reason", sa.String(64), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)
transient_failures = sa.Table(
    "transient_failures",
    metadata,
    sa.Column("idempotency_key", sa.String(128), primary_key=True),
    sa.Column("create_time", UtcDateTime, nullable=False),
)


def _row(authorization: Authorization) -> dict[str, Any]:
    return {
        "id": authorization.id,
        "idempotency_key": authorization.idempotency_key,
        "token_fingerprint": authorization.token_fingerprint,
        "currency": authorization.amount.currency,
        "amount_minor_units": authorization.amount.minor_units,
        "decision": authorization.decision.value,
        "decline_reason": authorization.decline_reason,
        "create_time": authorization.create_time,
    }


def _authorization(row: sa.Row[Any]) -> Authorization:
    return Authorization(
        id=row.id,
        idempotency_key=row.idempotency_key,
        token_fingerprint=row.token_fingerprint,
        amount=Money(row.currency, row.amount_minor_units),
        decision=Decision(row.decision),
        decline_reason=row.decline_reason,
        create_time=row.create_time,
    )


#: The statements of an authorization, built once (see `mesh.runtime.storage`'s note on that).
_FIND = authorizations.select().where(
    authorizations.c.idempotency_key == sa.bindparam("idempotency_key")
)
_ADD = authorizations.insert()
_FAILED_BEFORE = sa.select(transient_failures.c.idempotency_key).where(
    transient_failures.c.idempotency_key == sa.bindparam("idempotency_key")
)
_RECORD_TRANSIENT_FAILURE = transient_failures.insert()


class SqlProcessorTransaction(SqlTransaction):
    """The processor's tables, inside one transaction."""

    async def find(self, idempotency_key: str) -> Authorization | None:
        found = await self._connection.execute(_FIND, {"idempotency_key": idempotency_key})
        row = found.first()
        return None if row is None else _authorization(row)

    async def add(self, authorization: Authorization) -> None:
        await self._connection.execute(_ADD, _row(authorization))

    async def failed_before(self, idempotency_key: str) -> bool:
        found = await self._connection.execute(_FAILED_BEFORE, {"idempotency_key": idempotency_key})
        return found.first() is not None

    async def record_transient_failure(self, idempotency_key: str, now: datetime) -> None:
        await self._connection.execute(
            _RECORD_TRANSIENT_FAILURE, {"idempotency_key": idempotency_key, "create_time": now}
        )


class SqlProcessorStore(SqlStore[SqlProcessorTransaction]):
    """The processor's database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlProcessorTransaction)
