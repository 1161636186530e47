"""The payments adapters: its SQL tables and store, and the simulated payment provider."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mesh.errors import Aborted, FieldViolation, InvalidArgument, Unavailable
from mesh.money import Money
from mesh.storage import Database, Migration, SqlStore, SqlTransaction, UtcDateTime, utc_now
from services.payments.domain import (
    Approved,
    Declined,
    Payment,
    PaymentStatus,
    ProviderDecision,
    Refund,
)

MIGRATIONS = (
    Migration(
        1,
        "payments, their captures and refunds, and the simulated provider's memory",
        [
            """
            CREATE TABLE payments (
                id VARCHAR(36) PRIMARY KEY,
                order_id VARCHAR(128) NOT NULL,
                currency CHAR(3) NOT NULL,
                amount_minor_units BIGINT NOT NULL CHECK (amount_minor_units > 0),
                status VARCHAR(16) NOT NULL
                    CHECK (status IN ('AUTHORIZED', 'CAPTURED', 'DECLINED', 'REFUNDED', 'VOIDED')),
                decline_reason VARCHAR(64) NOT NULL,
                captured_minor_units BIGINT NOT NULL
                    CHECK (captured_minor_units >= 0
                           AND captured_minor_units <= amount_minor_units),
                refunded_minor_units BIGINT NOT NULL
                    CHECK (refunded_minor_units >= 0
                           AND refunded_minor_units <= captured_minor_units),
                create_time TIMESTAMP NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX payments_by_order ON payments (order_id)",
            # One row per captured payment: the primary key makes a second capture fail.
            """
            CREATE TABLE captures (
                payment_id VARCHAR(36) PRIMARY KEY REFERENCES payments (id),
                minor_units BIGINT NOT NULL CHECK (minor_units > 0),
                create_time TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE refunds (
                id VARCHAR(36) PRIMARY KEY,
                payment_id VARCHAR(36) NOT NULL REFERENCES payments (id),
                minor_units BIGINT NOT NULL CHECK (minor_units > 0),
                reason TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX refunds_by_payment ON refunds (payment_id)",
            # Authorizations of `tok_transient` that already failed once, by idempotency key.
            """
            CREATE TABLE provider_transient_failures (
                idempotency_key VARCHAR(128) PRIMARY KEY,
                create_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
)

metadata = sa.MetaData()
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(128), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("amount_minor_units", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decline_reason", sa.String(64), nullable=False),
    sa.Column("captured_minor_units", sa.BigInteger, nullable=False),
    sa.Column("refunded_minor_units", sa.BigInteger, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)
captures = sa.Table(
    "captures",
    metadata,
    sa.Column("payment_id", sa.String(36), primary_key=True),
    sa.Column("minor_units", sa.BigInteger, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)
refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("payment_id", sa.String(36), nullable=False),
    sa.Column("minor_units", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)
provider_transient_failures = sa.Table(
    "provider_transient_failures",
    metadata,
    sa.Column("idempotency_key", sa.String(128), primary_key=True),
    sa.Column("create_time", UtcDateTime, nullable=False),
)


def _row(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "order_id": payment.order_id,
        "currency": payment.amount.currency,
        "amount_minor_units": payment.amount.minor_units,
        "status": payment.status.value,
        "decline_reason": payment.decline_reason,
        "captured_minor_units": payment.captured_amount.minor_units,
        "refunded_minor_units": payment.refunded_amount.minor_units,
        "create_time": payment.create_time,
        "update_time": payment.update_time,
    }


def _payment(row: sa.Row[Any]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        amount=Money(row.currency, row.amount_minor_units),
        status=PaymentStatus(row.status),
        decline_reason=row.decline_reason,
        captured_amount=Money(row.currency, row.captured_minor_units),
        refunded_amount=Money(row.currency, row.refunded_minor_units),
        create_time=row.create_time,
        update_time=row.update_time,
    )


class SqlPaymentsTransaction(SqlTransaction):
    """The payments tables, inside one transaction."""

    async def get(self, payment_id: str) -> Payment | None:
        row = (
            await self._connection.execute(payments.select().where(payments.c.id == payment_id))
        ).first()
        return None if row is None else _payment(row)

    async def add(self, payment: Payment) -> None:
        await self._connection.execute(payments.insert().values(_row(payment)))

    async def save(self, payment: Payment) -> None:
        await self._connection.execute(
            payments.update().where(payments.c.id == payment.id).values(_row(payment))
        )

    async def record_capture(self, payment: Payment) -> None:
        try:
            await self._connection.execute(
                captures.insert().values(
                    payment_id=payment.id,
                    minor_units=payment.captured_amount.minor_units,
                    create_time=payment.update_time,
                )
            )
        except sa.exc.IntegrityError as error:
            # Only reachable by a writer outside `Database.transaction`, whose lock
            # serializes writers on SQLite and Postgres alike: a retry finds the
            # payment captured and returns it unchanged.
            raise Aborted(
                f"payment {payment.id!r} was captured concurrently; retry",
                reason="CONCURRENT_CAPTURE",
                metadata={"payment_id": payment.id},
            ) from error

    async def record_refund(self, refund: Refund) -> None:
        await self._connection.execute(
            refunds.insert().values(
                id=refund.id,
                payment_id=refund.payment_id,
                minor_units=refund.amount.minor_units,
                reason=refund.reason,
                create_time=refund.create_time,
            )
        )


class SqlPaymentsStore(SqlStore[SqlPaymentsTransaction]):
    """The payments database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlPaymentsTransaction)


#: The test tokens the simulated provider knows (see the contract).
VISA_TOKEN = "tok_visa"
DECLINED_TOKEN = "tok_declined"
TRANSIENT_TOKEN = "tok_transient"


class SimulatedPaymentProvider:
    """A deterministic stand-in for a card processor, decided by the token alone.

    Which `tok_transient` authorizations already failed once is kept in the payments
    database, so a retry after a restart succeeds instead of failing again.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        if payment_token == VISA_TOKEN:
            return Approved()
        if payment_token == DECLINED_TOKEN:
            return Declined("card_declined")
        if payment_token == TRANSIENT_TOKEN:
            if await self._failed_before(idempotency_key):
                return Approved()
            raise Unavailable(
                "the payment provider is temporarily unavailable; retry with the same request_id",
                reason="PROVIDER_UNAVAILABLE",
            )
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "payment_token",
                    f"Unknown payment token; use {VISA_TOKEN}, {DECLINED_TOKEN} "
                    f"or {TRANSIENT_TOKEN}.",
                )
            ]
        )

    async def _failed_before(self, idempotency_key: str) -> bool:
        """Whether this key failed already; remembers (and commits) the failure if not."""
        async with self._database.transaction() as connection:
            seen = (
                await connection.execute(
                    sa.select(provider_transient_failures.c.idempotency_key).where(
                        provider_transient_failures.c.idempotency_key == idempotency_key
                    )
                )
            ).first()
            if seen is None:
                await connection.execute(
                    provider_transient_failures.insert().values(
                        idempotency_key=idempotency_key, create_time=utc_now()
                    )
                )
        return seen is not None
