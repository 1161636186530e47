"""The payments adapters: its SQL tables and store, and its client of the card processor."""

from __future__ import annotations

from typing import Any

import grpc
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.runtime.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
)
from mesh.runtime.money import Money
from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    whole_row_parameters,
    whole_row_update,
)
from services.payments.domain import (
    Approved,
    Declined,
    Payment,
    PaymentStatus,
    ProviderDecision,
    Refund,
)
from shop.processor.v1 import processor_service_pb2 as processor_pb
from shop.processor.v1 import processor_service_pb2_grpc as processor_grpc

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
    Migration(
        2,
        "the card processor is a service of its own, which remembers its transient failures",
        ["DROP TABLE provider_transient_failures"],
    ),
    Migration(
        3,
        "payments belong to the customer who pays; earlier ones to no one",
        ["ALTER TABLE payments ADD COLUMN customer_id VARCHAR(64) NOT NULL DEFAULT ''"],
    ),
    Migration(
        4,
        "charges that wait for the card processor to answer (services.payments.waiting)",
        [
            """
            CREATE TABLE charges_waiting (
                order_id VARCHAR(128) PRIMARY KEY,
                attempts INTEGER NOT NULL CHECK (attempts >= 0),
                next_attempt_time TIMESTAMP NOT NULL,
                create_time TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX charges_waiting_by_next_attempt ON charges_waiting (next_attempt_time)",
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
    sa.Column("customer_id", sa.String(64), nullable=False),
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
charges_waiting = sa.Table(
    "charges_waiting",
    metadata,
    sa.Column("order_id", sa.String(128), primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_time", UtcDateTime, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)


def _row(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "order_id": payment.order_id,
        "customer_id": payment.customer_id,
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
        customer_id=row.customer_id,
        amount=Money(row.currency, row.amount_minor_units),
        status=PaymentStatus(row.status),
        decline_reason=row.decline_reason,
        captured_amount=Money(row.currency, row.captured_minor_units),
        refunded_amount=Money(row.currency, row.refunded_minor_units),
        create_time=row.create_time,
        update_time=row.update_time,
    )


#: The statements of the saga's steps, built once (see `mesh.runtime.storage`'s note on that).
_GET = payments.select().where(payments.c.id == sa.bindparam("payment_id"))
_ADD = payments.insert()
_SAVE = whole_row_update(payments)
_RECORD_CAPTURE = captures.insert()
_RECORD_REFUND = refunds.insert()


class SqlPaymentsTransaction(SqlTransaction):
    """The payments tables, inside one transaction."""

    async def get(self, payment_id: str) -> Payment | None:
        row = (await self._connection.execute(_GET, {"payment_id": payment_id})).first()
        return None if row is None else _payment(row)

    async def add(self, payment: Payment) -> None:
        await self._connection.execute(_ADD, _row(payment))

    async def save(self, payment: Payment) -> None:
        await self._connection.execute(_SAVE, whole_row_parameters(_row(payment)))

    async def record_capture(self, payment: Payment) -> None:
        try:
            await self._connection.execute(
                _RECORD_CAPTURE,
                {
                    "payment_id": payment.id,
                    "minor_units": payment.captured_amount.minor_units,
                    "create_time": payment.update_time,
                },
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
            _RECORD_REFUND,
            {
                "id": refund.id,
                "payment_id": refund.payment_id,
                "minor_units": refund.amount.minor_units,
                "reason": refund.reason,
                "create_time": refund.create_time,
            },
        )


class SqlPaymentsStore(SqlStore[SqlPaymentsTransaction]):
    """The payments database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlPaymentsTransaction)


#: How long payments waits for the processor's answer: longer than the call policy's
#: timeout in mesh.yaml, so that the sidecar's own retries fit in it.
AUTHORIZE_TIMEOUT_SECONDS = 10.0

#: Failures after which the same request may well succeed: the processor's transient
#: failure, and the sidecar's when it could not reach the processor in time.
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

#: The processor's name of a request field -> payments', where they differ: payments'
#: callers know the idempotency key as the request id they sent.
_FIELD_NAMES = {"idempotency_key": "request_id"}


def _details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, list[FieldViolation]]:
    """The ErrorInfo and the BadRequest field violations a failed call carries (AIP-193)."""
    info = error_details_pb2.ErrorInfo()
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Unpack(bad_request):
            violations.extend(
                FieldViolation(
                    _FIELD_NAMES.get(v.field, v.field), v.description, v.reason or "INVALID_FIELD"
                )
                for v in bad_request.field_violations
            )
    return info, violations


def _provider_error(error: grpc.aio.AioRpcError) -> Exception:
    """The error payments raises for a failed authorization, so its callers (and the
    saga) see the processor's answer as if payments had given it.

    Other codes say nothing about the request (the sidecar refused payments, the
    processor broke): they are payments' own failure, raised as they are and logged.
    """
    code = error.code()
    info, violations = _details(error)
    if code in _TRANSIENT_CODES:
        return Unavailable(
            "the card processor is unavailable; retry with the same request_id",
            reason="PROVIDER_UNAVAILABLE",
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT and violations:
        return InvalidArgument.of(violations)
    if code == grpc.StatusCode.FAILED_PRECONDITION and info.reason:
        return FailedPrecondition(
            f"the card processor refused the authorization: {error.details()}",
            reason=info.reason,
            metadata=dict(info.metadata),
        )
    return error


class GrpcPaymentProvider:
    """The card processor service over gRPC, through the sidecar (which retries it)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = processor_grpc.ProcessorServiceStub(channel)

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        request = processor_pb.AuthorizeRequest(
            payment_token=payment_token, amount=amount.to_proto(), idempotency_key=idempotency_key
        )
        try:
            response = await self._stub.Authorize(request, timeout=AUTHORIZE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as error:
            raise _provider_error(error) from error
        if response.decision == processor_pb.AUTHORIZATION_DECISION_APPROVED:
            return Approved()
        if response.decision == processor_pb.AUTHORIZATION_DECISION_DECLINED:
            return Declined(response.decline_reason)
        # Neither a reason to charge nor to tell the customer that the card was declined.
        raise RuntimeError(f"the card processor answered an unknown decision {response.decision}")
