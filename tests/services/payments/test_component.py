"""Payments over real gRPC, on a real database (SQLite, Postgres), with the real processor."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from google.type import money_pb2
from grpc_status import rpc_status

from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.storage import Database, utc_now
from services.payments.adapters import (
    MIGRATIONS,
    GrpcPaymentProvider,
    SqlPaymentsStore,
    captures,
    refunds,
)
from services.payments.adapters import (
    payments as payments_table,
)
from services.payments.bootstrap import registration
from services.processor import adapters as processor_adapters
from services.processor.bootstrap import registration as processor_registration
from shop.payments.v1 import payments_service_pb2 as pb
from shop.payments.v1 import payments_service_pb2_grpc as pb_grpc
from shop.processor.v1 import processor_service_pb2 as processor_pb
from shop.processor.v1 import processor_service_pb2_grpc as processor_grpc
from tests.support.component import (
    Databases,
    error_reason,
    field_violations,
    serving,
    sqlite_database,
)

pytestmark = pytest.mark.integration

ALICE = ((SUBJECT_METADATA_KEY, "alice"),)
BOB = ((SUBJECT_METADATA_KEY, "bob"),)


@pytest.fixture
async def processor(databases: Databases, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the real processor, on its own database, as payments' sidecar would be."""
    async with (
        databases.open(tmp_path, "processor", processor_adapters.MIGRATIONS) as database,
        serving(processor_registration(processor_adapters.SqlProcessorStore(database))) as channel,
    ):
        yield channel


def served(
    database: Database, processor: grpc.aio.Channel
) -> AbstractAsyncContextManager[grpc.aio.Channel]:
    return serving(registration(SqlPaymentsStore(database), GrpcPaymentProvider(processor)))


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "payments", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def payments(database: Database, processor: grpc.aio.Channel) -> AsyncIterator[Any]:
    async with served(database, processor) as channel:
        yield pb_grpc.PaymentsServiceStub(channel)


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def new_id() -> str:
    return str(uuid.uuid4())


def authorize_request(**fields: Any) -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        order_id=fields.pop("order_id", "order-1"),
        customer_id=fields.pop("customer_id", "alice"),
        amount=fields.pop("amount", eur(25)),
        payment_token=fields.pop("payment_token", "tok_visa"),
        request_id=fields.pop("request_id", new_id()),
    )


async def authorize(payments: Any, **fields: Any) -> pb.Payment:
    payment: pb.Payment = (await payments.AuthorizePayment(authorize_request(**fields))).payment
    return payment


async def capture(payments: Any, payment_id: str, request_id: str = "") -> pb.Payment:
    request = pb.CapturePaymentRequest(payment_id=payment_id, request_id=request_id or new_id())
    payment: pb.Payment = (await payments.CapturePayment(request)).payment
    return payment


async def refund(payments: Any, payment_id: str, **fields: Any) -> pb.Payment:
    request = pb.RefundPaymentRequest(
        payment_id=payment_id, request_id=fields.pop("request_id", new_id()), **fields
    )
    payment: pb.Payment = (await payments.RefundPayment(request)).payment
    return payment


async def get(payments: Any, payment_id: str, metadata: Any = ALICE) -> pb.Payment:
    request = pb.GetPaymentRequest(id=payment_id)
    payment: pb.Payment = (await payments.GetPayment(request, metadata=metadata)).payment
    return payment


async def get_failure(payments: Any, payment_id: str, metadata: Any) -> grpc.aio.AioRpcError:
    """The error reading the payment fails with, for the caller `metadata` names."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await get(payments, payment_id, metadata)
    return failure.value


async def captured_payment(payments: Any, amount: money_pb2.Money | None = None) -> pb.Payment:
    return await capture(payments, (await authorize(payments, amount=amount or eur(25))).id)


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The ErrorInfo metadata of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return dict(info.metadata)


async def row_count(database: Database, table: sa.Table) -> int:
    async with database.snapshot() as connection:
        count = (await connection.execute(sa.select(sa.func.count()).select_from(table))).scalar()
    return int(count or 0)


async def test_visa_is_authorized_captured_and_refunded(payments: Any) -> None:
    authorized = await authorize(payments, order_id="order-7", amount=eur(25, 500_000_000))
    assert len(authorized.id) == 36
    assert authorized.order_id == "order-7"
    assert authorized.customer_id == "alice"
    assert authorized.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert authorized.amount == eur(25, 500_000_000)
    assert authorized.captured_amount == eur(0)
    assert await get(payments, authorized.id) == authorized

    captured = await capture(payments, authorized.id)
    assert captured.status == pb.PAYMENT_STATUS_CAPTURED
    assert captured.captured_amount == eur(25, 500_000_000)

    refunded = await refund(payments, authorized.id, reason="order cancelled")
    assert refunded.status == pb.PAYMENT_STATUS_REFUNDED
    assert refunded.refunded_amount == eur(25, 500_000_000)
    assert await get(payments, authorized.id) == refunded


async def test_declined_card_is_recorded_and_a_retry_fails_the_same(payments: Any) -> None:
    request = authorize_request(payment_token="tok_declined")
    errors = []
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await payments.AuthorizePayment(request)
        errors.append(failure.value)
    for error in errors:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(error) == "PAYMENT_DECLINED"
    payment_id = error_metadata(errors[0])["payment_id"]
    assert error_metadata(errors[1])["payment_id"] == payment_id

    declined = await get(payments, payment_id)
    assert declined.status == pb.PAYMENT_STATUS_DECLINED
    assert declined.decline_reason == "card_declined"
    assert declined.captured_amount == eur(0)


async def test_transient_failure_charges_nothing_and_a_retry_succeeds(
    payments: Any, database: Database
) -> None:
    request = authorize_request(payment_token="tok_transient")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await payments.AuthorizePayment(request)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(failure.value) == "PROVIDER_UNAVAILABLE"
    assert await row_count(database, payments_table) == 0

    retried = (await payments.AuthorizePayment(request)).payment
    assert retried.status == pb.PAYMENT_STATUS_AUTHORIZED
    assert (await payments.AuthorizePayment(request)).payment == retried

    with pytest.raises(grpc.aio.AioRpcError) as other_request:
        await authorize(payments, payment_token="tok_transient")
    assert other_request.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_concurrent_retries_of_a_transient_authorization_fail_once(
    payments: Any, database: Database
) -> None:
    """The processor fails one attempt of the request id, whichever comes first; the
    others find the failure remembered, and one payment is recorded."""
    request = authorize_request(payment_token="tok_transient")
    outcomes = await asyncio.gather(
        *(payments.AuthorizePayment(request) for _ in range(6)), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert [f.code() for f in failures] == [grpc.StatusCode.UNAVAILABLE]
    assert len({o.payment.id for o in outcomes if not isinstance(o, BaseException)}) == 1
    assert await row_count(database, payments_table) == 1


async def test_an_unreachable_processor_is_a_transient_failure(database: Database) -> None:
    async with (
        grpc.aio.insecure_channel("127.0.0.1:1") as nowhere,  # nothing listens on port 1
        served(database, nowhere) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await authorize(pb_grpc.PaymentsServiceStub(channel))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(failure.value) == "PROVIDER_UNAVAILABLE"
    assert await row_count(database, payments_table) == 0


async def test_unknown_token_is_refused(payments: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await authorize(payments, payment_token="tok_mastercard")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["payment_token"]


async def test_a_request_id_the_processor_answered_for_another_card_is_refused(
    payments: Any, processor: grpc.aio.Channel, database: Database
) -> None:
    """The processor answered for this request id, as if payments then crashed before it
    recorded the answer; a retry that names another card is refused, and charges nothing."""
    request = authorize_request(payment_token="tok_visa")
    await processor_grpc.ProcessorServiceStub(processor).Authorize(
        processor_pb.AuthorizeRequest(
            payment_token="tok_visa", amount=request.amount, idempotency_key=request.request_id
        )
    )
    request.payment_token = "tok_declined"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await payments.AuthorizePayment(request)
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(failure.value) == "IDEMPOTENCY_KEY_REUSED"
    assert await row_count(database, payments_table) == 0


@pytest.mark.parametrize(
    "amount",
    [
        eur(0),
        eur(-5),
        money_pb2.Money(currency_code="XXX", units=1),
        money_pb2.Money(currency_code="EUR", units=1, nanos=1),
    ],
    ids=["zero", "negative", "unknown-currency", "sub-cent"],
)
async def test_invalid_amounts_are_refused(
    payments: Any, database: Database, amount: money_pb2.Money
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await authorize(payments, amount=amount)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["amount"]
    assert await row_count(database, payments_table) == 0


async def test_retried_authorization_returns_the_same_payment_once(
    payments: Any, database: Database
) -> None:
    request = authorize_request()
    first = (await payments.AuthorizePayment(request)).payment
    retries = await asyncio.gather(*(payments.AuthorizePayment(request) for _ in range(5)))
    assert {r.payment.id for r in retries} == {first.id}
    assert await row_count(database, payments_table) == 1


async def test_concurrent_authorizations_with_one_request_id_record_one_payment(
    payments: Any, database: Database
) -> None:
    request = authorize_request()
    responses = await asyncio.gather(*(payments.AuthorizePayment(request) for _ in range(10)))
    assert len({r.payment.id for r in responses}) == 1
    assert await row_count(database, payments_table) == 1


async def test_capturing_twice_returns_the_payment_unchanged(payments: Any) -> None:
    first = await captured_payment(payments)
    again = await capture(payments, first.id)
    assert again == first


async def test_concurrent_captures_capture_exactly_once(payments: Any, database: Database) -> None:
    authorized = await authorize(payments, amount=eur(40))
    outcomes = await asyncio.gather(
        *(capture(payments, authorized.id) for _ in range(10)), return_exceptions=True
    )
    results = [o for o in outcomes if isinstance(o, pb.Payment)]
    assert len(results) == 10, [o for o in outcomes if not isinstance(o, pb.Payment)]
    assert {r.status for r in results} == {pb.PAYMENT_STATUS_CAPTURED}
    assert {r.update_time.ToDatetime() for r in results} == {results[0].update_time.ToDatetime()}
    assert all(r.captured_amount == eur(40) for r in results)
    assert await row_count(database, captures) == 1


async def test_a_capture_retried_with_its_request_id_returns_its_payment(payments: Any) -> None:
    authorized = await authorize(payments)
    request_id = new_id()
    captured = await capture(payments, authorized.id, request_id)
    await refund(payments, authorized.id)
    retried = await capture(payments, authorized.id, request_id)
    assert retried.id == captured.id
    assert retried.status == pb.PAYMENT_STATUS_REFUNDED


async def test_unknown_payments_are_not_found(payments: Any) -> None:
    unknown = new_id()
    calls = [
        payments.GetPayment(pb.GetPaymentRequest(id=unknown), metadata=ALICE),
        payments.CapturePayment(pb.CapturePaymentRequest(payment_id=unknown, request_id=new_id())),
        payments.RefundPayment(pb.RefundPaymentRequest(payment_id=unknown, request_id=new_id())),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(failure.value) == "PAYMENT_NOT_FOUND"


async def declined_payment_id(payments: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await authorize(payments, payment_token="tok_declined")
    return error_metadata(failure.value)["payment_id"]


async def test_declined_refunded_and_voided_payments_cannot_be_captured(payments: Any) -> None:
    refunded = (await captured_payment(payments)).id
    await refund(payments, refunded)
    voided = (await authorize(payments)).id
    await refund(payments, voided)
    for payment_id in (await declined_payment_id(payments), refunded, voided):
        before = await get(payments, payment_id)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await capture(payments, payment_id)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(failure.value) == "PAYMENT_NOT_CAPTURABLE"
        assert await get(payments, payment_id) == before


async def test_refunding_an_authorized_payment_voids_it(payments: Any) -> None:
    authorized = await authorize(payments)
    voided = await refund(payments, authorized.id, reason="order cancelled")
    assert voided.status == pb.PAYMENT_STATUS_VOIDED
    assert voided.captured_amount == eur(0)
    assert voided.refunded_amount == eur(0)


async def test_declined_and_voided_payments_cannot_be_refunded(payments: Any) -> None:
    voided = (await authorize(payments)).id
    await refund(payments, voided)
    for payment_id in (await declined_payment_id(payments), voided):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await refund(payments, payment_id)
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(failure.value) == "PAYMENT_NOT_REFUNDABLE"


async def test_partial_refunds_accumulate_up_to_the_captured_amount(payments: Any) -> None:
    payment = await captured_payment(payments, eur(25))
    assert (await refund(payments, payment.id, amount=eur(10))).refunded_amount == eur(10)
    partly = await refund(payments, payment.id, amount=eur(5, 500_000_000))
    assert partly.status == pb.PAYMENT_STATUS_REFUNDED
    assert partly.refunded_amount == eur(15, 500_000_000)

    with pytest.raises(grpc.aio.AioRpcError) as too_much:
        await refund(payments, payment.id, amount=eur(10))
    assert too_much.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(too_much.value) == "REFUND_EXCEEDS_CAPTURED"

    rest = await refund(payments, payment.id)
    assert rest.refunded_amount == eur(25)
    with pytest.raises(grpc.aio.AioRpcError) as nothing_left:
        await refund(payments, payment.id)
    assert nothing_left.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(nothing_left.value) == "PAYMENT_FULLY_REFUNDED"
    assert (await get(payments, payment.id)).refunded_amount == eur(25)


@pytest.mark.parametrize(
    "amount",
    [eur(0), eur(-1), money_pb2.Money(currency_code="USD", units=1)],
    ids=["zero", "negative", "other-currency"],
)
async def test_invalid_refund_amounts_are_refused(payments: Any, amount: money_pb2.Money) -> None:
    payment = await captured_payment(payments)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await refund(payments, payment.id, amount=amount)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["amount"]
    assert (await get(payments, payment.id)).refunded_amount == eur(0)


async def test_retried_refund_refunds_once(payments: Any, database: Database) -> None:
    payment = await captured_payment(payments, eur(25))
    request_id = new_id()
    first = await refund(payments, payment.id, amount=eur(10), request_id=request_id)
    again = await refund(payments, payment.id, amount=eur(10), request_id=request_id)
    assert again == first
    assert again.refunded_amount == eur(10)
    async with database.snapshot() as connection:
        rows = (await connection.execute(sa.select(refunds.c.minor_units))).all()
    assert [row.minor_units for row in rows] == [1000]


async def test_the_database_refuses_refunding_more_than_was_captured(
    payments: Any, database: Database
) -> None:
    payment = await captured_payment(payments, eur(25))
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as connection:
            await connection.execute(
                payments_table.update()
                .where(payments_table.c.id == payment.id)
                .values(refunded_minor_units=2501)
            )
    assert (await get(payments, payment.id)).refunded_amount == eur(0)


async def test_the_database_refuses_a_second_capture_of_a_payment(
    payments: Any, database: Database
) -> None:
    payment = await captured_payment(payments, eur(25))
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as connection:
            await connection.execute(
                captures.insert().values(
                    payment_id=payment.id, minor_units=2500, create_time=utc_now()
                )
            )


async def test_data_survives_a_restart(
    databases: Databases, tmp_path: Path, processor: grpc.aio.Channel
) -> None:
    async with (
        databases.open(tmp_path, "payments", MIGRATIONS) as database,
        served(database, processor) as channel,
    ):
        stub = pb_grpc.PaymentsServiceStub(channel)
        payment = await refund(stub, (await captured_payment(stub)).id, amount=eur(5))
    async with databases.open(tmp_path, "payments", MIGRATIONS) as database:
        assert await database.applied_versions() == [1, 2, 3, 4]
        async with served(database, processor) as channel:
            fetched = await get(pb_grpc.PaymentsServiceStub(channel), payment.id)
    assert fetched == payment
    assert fetched.refunded_amount == eur(5)


def old_payment_row(payment_id: str) -> dict[str, Any]:
    """A payment as the tables before `customer_id` stored it."""
    now = utc_now()
    return {
        "id": payment_id,
        "order_id": "order-1",
        "currency": "EUR",
        "amount_minor_units": 2500,
        "status": "AUTHORIZED",
        "decline_reason": "",
        "captured_minor_units": 0,
        "refunded_minor_units": 0,
        "create_time": now,
        "update_time": now,
    }


async def insert_old_payment(database: Database) -> str:
    payment_id = new_id()
    async with database.transaction() as connection:
        await connection.execute(payments_table.insert(), old_payment_row(payment_id))
    return payment_id


async def test_upgrading_drops_the_old_in_process_providers_table_and_keeps_payments(
    tmp_path: Path,
) -> None:
    before_the_processor = MIGRATIONS[:1]
    async with sqlite_database(tmp_path, "payments", before_the_processor) as database:
        payment_id = await insert_old_payment(database)
        async with database.snapshot() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "provider_transient_failures" in tables
    async with sqlite_database(tmp_path, "payments", MIGRATIONS) as database:
        assert await database.applied_versions() == [1, 2, 3, 4]
        async with database.snapshot() as connection:
            tables = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
            rows = (await connection.execute(sa.select(payments_table.c.id))).all()
    assert "provider_transient_failures" not in tables
    assert {"payments", "captures", "refunds"} <= set(tables)
    assert [row.id for row in rows] == [payment_id]


async def test_payments_from_before_owners_belong_to_no_one(
    tmp_path: Path, processor: grpc.aio.Channel
) -> None:
    before_owners = MIGRATIONS[:2]
    async with sqlite_database(tmp_path, "payments", before_owners) as database:
        payment_id = await insert_old_payment(database)
    async with sqlite_database(tmp_path, "payments", MIGRATIONS) as database:
        async with database.snapshot() as connection:
            row = (await connection.execute(sa.select(payments_table))).one()
        async with served(database, processor) as channel:
            error = await get_failure(pb_grpc.PaymentsServiceStub(channel), payment_id, ALICE)
    assert (row.id, row.customer_id) == (payment_id, "")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "PAYMENT_NOT_FOUND"


async def test_the_owner_reads_their_payment(payments: Any) -> None:
    authorized = await authorize(payments, customer_id="alice")
    assert authorized.customer_id == "alice"
    fetched = await get(payments, authorized.id, ALICE)
    assert fetched == authorized


async def test_another_customers_payment_is_not_found_like_a_missing_one(payments: Any) -> None:
    theirs = await authorize(payments, customer_id="alice")
    missing = new_id()
    for payment_id in (theirs.id, missing):
        error = await get_failure(payments, payment_id, BOB)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(error) == "PAYMENT_NOT_FOUND"
        assert error_metadata(error) == {"payment_id": payment_id}
        assert error.details() == f"payment {payment_id!r} does not exist"
    assert await get(payments, theirs.id, ALICE) == theirs


@pytest.mark.parametrize("metadata", [None, ((SUBJECT_METADATA_KEY, ""),)], ids=["none", "empty"])
async def test_reading_a_payment_without_a_subject_is_unauthenticated(
    payments: Any, metadata: Any
) -> None:
    known = (await authorize(payments)).id
    for payment_id in (known, new_id()):
        error = await get_failure(payments, payment_id, metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(error) == "NO_SUBJECT"


async def test_an_authorization_must_name_the_customer(payments: Any, database: Database) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await authorize(payments, customer_id="")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["customer_id"]
    assert await row_count(database, payments_table) == 0
