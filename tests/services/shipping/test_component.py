"""Shipping over real gRPC, on a real database (SQLite, Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from google.type import money_pb2, postal_address_pb2
from sqlalchemy.exc import IntegrityError

from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.consumer import Delivery, EventConsumer, Handler
from mesh.runtime.events import new_event, subject
from mesh.runtime.storage import Database
from services.shipping import saga
from services.shipping.adapters import MIGRATIONS, SqlShippingStore, shipments
from services.shipping.bootstrap import registration
from services.shipping.domain import TRACKING_NUMBER
from shop.events.v1 import events_pb2
from shop.shipping.v1 import shipping_service_pb2 as pb
from shop.shipping.v1 import shipping_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, error_reason, field_violations, serving

pytestmark = pytest.mark.integration

ALICE = ((SUBJECT_METADATA_KEY, "alice"),)
BOB = ((SUBJECT_METADATA_KEY, "bob"),)


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "shipping", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def shipping(database: Database) -> AsyncIterator[Any]:
    async with serving(registration(SqlShippingStore(database))) as channel:
        yield pb_grpc.ShippingServiceStub(channel)


def address(region_code: str = "FR", **fields: Any) -> postal_address_pb2.PostalAddress:
    fields.setdefault("postal_code", "75001")
    return postal_address_pb2.PostalAddress(region_code=region_code, **fields)


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


async def create(shipping: Any, order_id: str = "order-1", **fields: Any) -> pb.Shipment:
    response = await shipping.CreateShipment(
        pb.CreateShipmentRequest(
            order_id=order_id,
            customer_id=fields.pop("customer_id", "alice"),
            destination=fields.pop("destination", address()),
            weight_grams=fields.pop("weight_grams", 2_000),
            request_id=fields.pop("request_id", f"request-{order_id}"),
        )
    )
    created: pb.Shipment = response.shipment
    return created


async def get(shipping: Any, shipment_id: str, metadata: Any = ALICE) -> pb.Shipment:
    response = await shipping.GetShipment(pb.GetShipmentRequest(id=shipment_id), metadata=metadata)
    fetched: pb.Shipment = response.shipment
    return fetched


async def get_failure(shipping: Any, shipment_id: str, metadata: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await get(shipping, shipment_id, metadata)
    return failure.value


@pytest.mark.parametrize(
    ("region_code", "weight", "cost", "carrier", "days"),
    [
        ("DE", 800, eur(4, 990_000_000), "DHL", 2),
        ("FR", 2_000, eur(14, 990_000_000), "DHL", 5),
        ("JP", 30_000, eur(59, 990_000_000), "UPS", 10),
    ],
    ids=["domestic", "eu", "world"],
)
async def test_quote_depends_on_zone_and_weight(
    shipping: Any, region_code: str, weight: int, cost: money_pb2.Money, carrier: str, days: int
) -> None:
    quote = await shipping.QuoteShipment(
        pb.QuoteShipmentRequest(destination=address(region_code), weight_grams=weight)
    )
    assert (quote.cost, quote.carrier, quote.estimated_days) == (cost, carrier, days)


@pytest.mark.parametrize(
    ("destination", "weight", "violations"),
    [
        (address(), -1, ["weight_grams"]),
        (address(), 0, ["weight_grams"]),
        (address(), 40_000, ["weight_grams"]),
        (address(""), 500, ["destination.region_code"]),
        (address("France"), 500, ["destination.region_code"]),
        (address(postal_code=""), 500, ["destination.address_lines"]),
        (None, 500, ["destination"]),
    ],
    ids=[
        "negative-weight",
        "no-weight",
        "too-heavy",
        "no-region",
        "bad-region",
        "no-postal-code-or-line",
        "no-destination",
    ],
)
async def test_bad_quote_requests_name_the_field(
    shipping: Any,
    destination: postal_address_pb2.PostalAddress | None,
    weight: int,
    violations: list[str],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await shipping.QuoteShipment(
            pb.QuoteShipmentRequest(destination=destination, weight_grams=weight)
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == violations


async def test_a_quote_needs_only_an_address_line_without_postal_code(shipping: Any) -> None:
    quote = await shipping.QuoteShipment(
        pb.QuoteShipmentRequest(
            destination=address("HK", postal_code="", address_lines=["1 Queen's Road"]),
            weight_grams=100,
        )
    )
    assert quote.carrier == "UPS"


async def test_create_schedules_a_shipment_at_its_quoted_cost(shipping: Any) -> None:
    destination = address("DE", postal_code="10115", address_lines=["Invalidenstr. 1"])
    created = await create(shipping, destination=destination, weight_grams=1_500)
    quote = await shipping.QuoteShipment(
        pb.QuoteShipmentRequest(destination=destination, weight_grams=1_500)
    )
    assert created.status == pb.SHIPMENT_STATUS_SCHEDULED
    assert created.cost == quote.cost == eur(6, 990_000_000)
    assert created.carrier == quote.carrier
    assert TRACKING_NUMBER.fullmatch(created.tracking_number)
    assert created.destination == destination
    assert created.customer_id == "alice"
    assert await get(shipping, created.id) == created


async def test_the_owner_reads_their_shipment(shipping: Any) -> None:
    alices = await create(shipping, "order-1")
    bobs = await create(shipping, "order-2", customer_id="bob")
    assert (await get(shipping, alices.id, ALICE)).customer_id == "alice"
    assert (await get(shipping, bobs.id, BOB)).customer_id == "bob"


async def test_another_customers_shipment_is_not_found_like_a_missing_one(
    shipping: Any,
) -> None:
    created = await create(shipping)
    theirs = await get_failure(shipping, created.id, BOB)
    missing = await get_failure(shipping, "nope", BOB)
    assert theirs.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(theirs) == error_reason(missing) == "SHIPMENT_NOT_FOUND"


@pytest.mark.parametrize("metadata", [(), ((SUBJECT_METADATA_KEY, ""),)], ids=["none", "empty"])
async def test_reading_a_shipment_without_a_subject_is_unauthenticated(
    shipping: Any, metadata: Any
) -> None:
    created = await create(shipping)
    for shipment_id in (created.id, "nope"):
        failure = await get_failure(shipping, shipment_id, metadata)
        assert failure.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(failure) == "NO_SUBJECT"


async def test_shipments_get_distinct_tracking_numbers(shipping: Any) -> None:
    created = await asyncio.gather(*(create(shipping, f"order-{i}") for i in range(10)))
    assert len({s.tracking_number for s in created}) == 10


async def test_the_database_refuses_a_repeated_tracking_number(
    shipping: Any, database: Database
) -> None:
    first = await create(shipping, "order-1")
    second = await create(shipping, "order-2")
    with pytest.raises(IntegrityError):
        async with database.transaction() as connection:
            await connection.execute(
                sa.text("UPDATE shipments SET tracking_number = :t WHERE id = :id"),
                {"t": first.tracking_number, "id": second.id},
            )


async def test_an_order_has_one_shipment_even_under_new_request_ids(shipping: Any) -> None:
    first = await create(shipping, "order-1", request_id="a")
    again, concurrent = await asyncio.gather(
        create(shipping, "order-1", request_id="b", weight_grams=9_000),
        create(shipping, "order-1", request_id="c"),
    )
    assert again == first
    assert concurrent == first


async def test_a_retried_create_returns_the_first_shipment(shipping: Any) -> None:
    first = await create(shipping, "order-1", request_id="retry")
    again = await create(shipping, "order-1", request_id="retry")
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await create(shipping, "order-2", request_id="retry")
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_an_invalid_create_is_refused_and_can_be_retried(shipping: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(shipping, weight_grams=-3, request_id="fix-me")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["weight_grams"]
    created = await create(shipping, weight_grams=300, request_id="fix-me")
    assert created.weight_grams == 300


async def test_create_requires_order_customer_and_request_ids(shipping: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await shipping.CreateShipment(
            pb.CreateShipmentRequest(destination=address(), weight_grams=100)
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(failure.value)) == ["customer_id", "order_id", "request_id"]


async def test_unknown_shipment_is_not_found(shipping: Any) -> None:
    for call in (
        shipping.GetShipment(pb.GetShipmentRequest(id="nope"), metadata=ALICE),
        shipping.CancelShipment(pb.CancelShipmentRequest(shipment_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(failure.value) == "SHIPMENT_NOT_FOUND"


async def test_cancel_cancels_once_and_a_repeat_returns_it_unchanged(shipping: Any) -> None:
    created = await create(shipping)
    cancel = pb.CancelShipmentRequest(shipment_id=created.id, reason="payment declined")
    cancelled = (await shipping.CancelShipment(cancel)).shipment
    again = (await shipping.CancelShipment(cancel)).shipment
    assert cancelled.status == pb.SHIPMENT_STATUS_CANCELLED
    assert again == cancelled
    fetched = await get(shipping, created.id)
    assert fetched.status == pb.SHIPMENT_STATUS_CANCELLED
    assert (await create(shipping)).status == pb.SHIPMENT_STATUS_CANCELLED


async def test_data_survives_a_restart(databases: Databases, tmp_path: Path) -> None:
    async with (
        databases.open(tmp_path, "shipping", MIGRATIONS) as database,
        serving(registration(SqlShippingStore(database))) as channel,
    ):
        stub = pb_grpc.ShippingServiceStub(channel)
        created = await create(stub, "order-1", destination=address(address_lines=["1 rue X"]))
        await create(stub, "order-2")
        await stub.CancelShipment(pb.CancelShipmentRequest(shipment_id=created.id))
    async with databases.open(tmp_path, "shipping", MIGRATIONS) as database:
        assert await database.applied_versions() == [1, 2]
        async with serving(registration(SqlShippingStore(database))) as channel:
            stub = pb_grpc.ShippingServiceStub(channel)
            fetched = await get(stub, created.id)
            retried = await create(stub, "order-1", request_id="another")
    assert fetched.status == pb.SHIPMENT_STATUS_CANCELLED
    assert fetched.destination.address_lines == ["1 rue X"]
    assert fetched.tracking_number == created.tracking_number
    assert retried.id == created.id
    assert fetched.customer_id == "alice"


async def deliver(database: Database, handler: Handler, producer: str, payload: Message) -> None:
    """Hand `handler` `producer`'s event about order-1 as the consumer does, inside a
    transaction of the database."""
    async with database.transaction() as connection:
        delivery = Delivery(cast(EventConsumer, None), new_event(producer, "order-1", payload))
        delivery.granted.set_result(connection)
        await handler(delivery)


async def test_the_saga_ships_to_the_customer_who_placed_the_order(
    shipping: Any, database: Database
) -> None:
    steps = saga.handlers(SqlShippingStore(database).within)
    placed = events_pb2.OrderPlaced(
        order_id="order-1",
        customer_id="alice",
        shipping_address=address(),
        weight_grams=1_200,
        payment_token="tok_visa",
    )
    await deliver(database, steps[subject("orders", "order_placed")], "orders", placed)
    captured = events_pb2.PaymentCaptured(order_id="order-1", payment_id="pay-1")
    await deliver(database, steps[subject("payments", "payment_captured")], "payments", captured)
    async with database.snapshot() as connection:
        stored = (
            await connection.execute(shipments.select().where(shipments.c.order_id == "order-1"))
        ).one()
    assert stored.customer_id == "alice"
    assert (await get(shipping, stored.id, ALICE)).customer_id == "alice"
    assert (await get_failure(shipping, stored.id, BOB)).code() == grpc.StatusCode.NOT_FOUND
