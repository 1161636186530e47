"""The processor over real gRPC, on a real database (SQLite, Postgres)."""

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

from mesh.runtime.storage import Database, utc_now
from services.processor.adapters import (
    MIGRATIONS,
    SqlProcessorStore,
    authorizations,
    transient_failures,
)
from services.processor.bootstrap import registration
from shop.processor.v1 import processor_service_pb2 as pb
from shop.processor.v1 import processor_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, error_reason, field_violations, serving

pytestmark = pytest.mark.integration

APPROVED, DECLINED = pb.AUTHORIZATION_DECISION_APPROVED, pb.AUTHORIZATION_DECISION_DECLINED


def served(database: Database) -> AbstractAsyncContextManager[grpc.aio.Channel]:
    return serving(registration(SqlProcessorStore(database)))


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "processor", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def processor(database: Database) -> AsyncIterator[Any]:
    async with served(database) as channel:
        yield pb_grpc.ProcessorServiceStub(channel)


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def authorize_request(**fields: Any) -> pb.AuthorizeRequest:
    return pb.AuthorizeRequest(
        payment_token=fields.pop("payment_token", "tok_visa"),
        amount=fields.pop("amount", eur(25)),
        idempotency_key=fields.pop("idempotency_key", str(uuid.uuid4())),
    )


async def row_count(database: Database, table: sa.Table) -> int:
    async with database.snapshot() as connection:
        count = (await connection.execute(sa.select(sa.func.count()).select_from(table))).scalar()
    return int(count or 0)


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The ErrorInfo metadata of a failed call."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return dict(info.metadata)


async def test_visa_is_approved_and_a_retry_gets_the_same_answer(processor: Any) -> None:
    request = authorize_request(amount=eur(25, 500_000_000))
    approved = await processor.Authorize(request)
    assert approved.decision == APPROVED
    assert approved.decline_reason == ""
    assert len(approved.authorization_id) == 36
    assert await processor.Authorize(request) == approved


async def test_a_declined_card_is_declined_the_same_way_on_every_retry(
    processor: Any, database: Database
) -> None:
    request = authorize_request(payment_token="tok_declined")
    answers = [await processor.Authorize(request) for _ in range(3)]
    assert {(a.decision, a.decline_reason) for a in answers} == {(DECLINED, "card_declined")}
    assert len({a.authorization_id for a in answers}) == 1
    assert await row_count(database, authorizations) == 1


async def test_an_unknown_token_is_refused_naming_the_field(
    processor: Any, database: Database
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await processor.Authorize(authorize_request(payment_token="tok_mastercard"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["payment_token"]
    assert await row_count(database, authorizations) == 0


async def test_every_field_is_required(processor: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await processor.Authorize(pb.AuthorizeRequest())
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(failure.value)) == [
        "amount",
        "idempotency_key",
        "payment_token",
    ]


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"amount": eur(0)}, "amount"),
        ({"amount": eur(-5)}, "amount"),
        ({"amount": money_pb2.Money(currency_code="XXX", units=1)}, "amount"),
        ({"amount": money_pb2.Money(currency_code="EUR", units=1, nanos=1)}, "amount"),
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
    ],
    ids=["zero", "negative", "unknown-currency", "sub-cent", "long-key", "unprintable-key"],
)
async def test_invalid_requests_are_refused_with_field_violations(
    processor: Any, database: Database, fields: dict[str, Any], violation: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await processor.Authorize(authorize_request(**fields))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == [violation]
    assert await row_count(database, authorizations) == 0


async def test_tok_transient_fails_once_per_key_then_is_approved(
    processor: Any, database: Database
) -> None:
    request = authorize_request(payment_token="tok_transient")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await processor.Authorize(request)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(failure.value) == "PROVIDER_UNAVAILABLE"
    assert await row_count(database, authorizations) == 0

    retried = await processor.Authorize(request)
    assert retried.decision == APPROVED
    assert await processor.Authorize(request) == retried

    with pytest.raises(grpc.aio.AioRpcError) as other_key:
        await processor.Authorize(authorize_request(payment_token="tok_transient"))
    assert other_key.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_transient_failure_is_remembered_across_a_restart(
    databases: Databases, tmp_path: Path
) -> None:
    request = authorize_request(payment_token="tok_transient")
    async with (
        databases.open(tmp_path, "processor", MIGRATIONS) as database,
        served(database) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await pb_grpc.ProcessorServiceStub(channel).Authorize(request)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    async with (
        databases.open(tmp_path, "processor", MIGRATIONS) as database,
        served(database) as channel,
    ):
        response = await pb_grpc.ProcessorServiceStub(channel).Authorize(request)
    assert response.decision == APPROVED


@pytest.mark.parametrize(
    "fields",
    [
        {"payment_token": "tok_declined"},
        {"amount": eur(26)},
        {"amount": money_pb2.Money(currency_code="USD", units=25)},
    ],
    ids=["other-token", "other-amount", "other-currency"],
)
async def test_a_key_reused_for_another_request_is_refused(
    processor: Any, fields: dict[str, Any]
) -> None:
    first_request = authorize_request(idempotency_key="order-42")
    first = await processor.Authorize(first_request)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await processor.Authorize(authorize_request(idempotency_key="order-42", **fields))
    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(failure.value) == "IDEMPOTENCY_KEY_REUSED"
    assert error_metadata(failure.value) == {"idempotency_key": "order-42"}
    assert await processor.Authorize(first_request) == first


async def test_concurrent_attempts_of_one_transient_key_fail_once_and_decide_once(
    processor: Any, database: Database
) -> None:
    request = authorize_request(payment_token="tok_transient")
    outcomes = await asyncio.gather(
        *(processor.Authorize(request) for _ in range(8)), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert [f.code() for f in failures if isinstance(f, grpc.aio.AioRpcError)] == [
        grpc.StatusCode.UNAVAILABLE
    ]
    assert len(failures) == 1
    answers = [o for o in outcomes if not isinstance(o, BaseException)]
    assert {(a.decision, a.authorization_id) for a in answers} == {
        (APPROVED, answers[0].authorization_id)
    }
    assert await row_count(database, authorizations) == 1
    assert await row_count(database, transient_failures) == 1


async def test_the_token_itself_is_never_stored(processor: Any, database: Database) -> None:
    await processor.Authorize(authorize_request(payment_token="tok_visa"))
    async with database.snapshot() as connection:
        rows = (await connection.execute(authorizations.select())).all()
    assert len(rows) == 1
    assert not any("tok_visa" in str(value) for value in rows[0])


async def test_the_database_refuses_a_second_answer_for_one_key(
    processor: Any, database: Database
) -> None:
    request = authorize_request()
    await processor.Authorize(request)
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as connection:
            await connection.execute(
                authorizations.insert().values(
                    id=str(uuid.uuid4()),
                    idempotency_key=request.idempotency_key,
                    token_fingerprint="0" * 64,
                    currency="EUR",
                    amount_minor_units=2500,
                    decision="DECLINED",
                    decline_reason="card_declined",
                    create_time=utc_now(),
                )
            )


async def test_answers_survive_a_restart(databases: Databases, tmp_path: Path) -> None:
    request = authorize_request(payment_token="tok_declined")
    async with (
        databases.open(tmp_path, "processor", MIGRATIONS) as database,
        served(database) as channel,
    ):
        first = await pb_grpc.ProcessorServiceStub(channel).Authorize(request)
    async with databases.open(tmp_path, "processor", MIGRATIONS) as database:
        assert await database.applied_versions() == [1]
        async with served(database) as channel:
            again = await pb_grpc.ProcessorServiceStub(channel).Authorize(request)
    assert again == first
