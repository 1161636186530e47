"""Orders over real gRPC, on a real database (SQLite, Postgres), priced by the real catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from google.type import money_pb2, postal_address_pb2
from grpc_status import rpc_status

from mesh.runtime.admission import Backlog
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.storage import Database
from services.orders.adapters import MIGRATIONS, GrpcCatalog, SqlOrdersStore
from services.orders.adapters import orders as orders_table
from services.orders.bootstrap import registration
from services.orders.domain import BACKLOG_WINDOW
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.orders.v1 import orders_service_pb2 as pb
from shop.orders.v1 import orders_service_pb2_grpc as pb_grpc
from tests.support.component import (
    Databases,
    catalog_and_inventory,
    error_reason,
    field_violations,
    serving,
)

pytestmark = pytest.mark.integration

ALICE = ((SUBJECT_METADATA_KEY, "alice"),)
BOB = ((SUBJECT_METADATA_KEY, "bob"),)
HOME = postal_address_pb2.PostalAddress(
    region_code="DE", postal_code="10115", locality="Berlin", address_lines=["Hauptstr. 1"]
)


@pytest.fixture
async def catalog_channel(databases: Databases, tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with catalog_and_inventory(databases, tmp_path) as (channel, _):
        yield channel


@pytest.fixture
def catalog(catalog_channel: grpc.aio.Channel) -> Any:
    return catalog_grpc.CatalogServiceStub(catalog_channel)


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "orders", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def orders(database: Database, catalog_channel: grpc.aio.Channel) -> AsyncIterator[Any]:
    async with serving(registration(SqlOrdersStore(database), GrpcCatalog(catalog_channel))) as ch:
        yield pb_grpc.OrdersServiceStub(ch)


def money(units: int, nanos: int = 0, currency: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


async def product(catalog: Any, name: str, price: money_pb2.Money) -> str:
    response = await catalog.CreateProduct(
        catalog_pb.CreateProductRequest(
            product=catalog_pb.Product(name=name, category="kitchen", price=price, weight_grams=400)
        )
    )
    return str(response.product.id)


def line(product_id: str, quantity: int = 1, **fields: Any) -> pb.OrderLine:
    return pb.OrderLine(product_id=product_id, quantity=quantity, **fields)


def place_request(*lines: pb.OrderLine, **fields: Any) -> pb.PlaceOrderRequest:
    fields.setdefault("shipping_address", HOME)
    fields.setdefault("payment_token", "tok_visa")
    return pb.PlaceOrderRequest(lines=lines, **fields)


async def place(orders: Any, *lines: pb.OrderLine, metadata: Any = ALICE, **fields: Any) -> Any:
    response = await orders.PlaceOrder(place_request(*lines, **fields), metadata=metadata)
    return response.order


async def failure_of(call: Any, request: Any, metadata: Any = ALICE) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(request, metadata=metadata)
    return failure.value


@pytest.fixture
async def tea(catalog: Any) -> str:
    return await product(catalog, "Tea", money(4, 500_000_000))


@pytest.fixture
async def cup(catalog: Any) -> str:
    return await product(catalog, "Cup", money(12, 990_000_000))


async def test_an_order_takes_its_prices_from_the_catalog_not_the_client(
    orders: Any, tea: str, cup: str
) -> None:
    order = await place(
        orders,
        line(tea, 3, unit_price=money(0, 10_000_000), line_total=money(0, 30_000_000)),
        line(cup, 2, unit_price=money(1)),
    )
    assert [(x.product_name, x.quantity, x.unit_price, x.line_total) for x in order.lines] == [
        ("Tea", 3, money(4, 500_000_000), money(13, 500_000_000)),
        ("Cup", 2, money(12, 990_000_000), money(25, 980_000_000)),
    ]
    assert order.total == money(39, 480_000_000)
    assert order.status == pb.ORDER_STATUS_PENDING
    assert order.customer_id == "alice"
    assert order.shipping_address == HOME
    assert [(s.name, s.outcome) for s in order.history] == [
        ("OrderPlaced", pb.SAGA_STEP_OUTCOME_SUCCEEDED)
    ]
    assert len(order.id) == 36
    fetched = await orders.GetOrder(pb.GetOrderRequest(id=order.id), metadata=ALICE)
    assert fetched.order == order


async def test_the_payment_token_is_never_returned(orders: Any, tea: str) -> None:
    order = await place(orders, line(tea), payment_token="tok_secret_4242")
    fetched = await orders.GetOrder(pb.GetOrderRequest(id=order.id), metadata=ALICE)
    listed = await orders.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    for message in (order, fetched, listed):
        assert b"tok_secret_4242" not in message.SerializeToString()


async def test_a_later_catalog_price_change_does_not_change_a_placed_order(
    orders: Any, catalog: Any, tea: str
) -> None:
    order = await place(orders, line(tea, 2))
    await catalog.UpdateProduct(
        catalog_pb.UpdateProductRequest(
            product=catalog_pb.Product(id=tea, price=money(9)),
            update_mask=field_mask_pb2.FieldMask(paths=["price"]),
        )
    )
    fetched = (await orders.GetOrder(pb.GetOrderRequest(id=order.id), metadata=ALICE)).order
    assert fetched.total == money(9)
    assert fetched.lines[0].unit_price == money(4, 500_000_000)
    newer = await place(orders, line(tea, 2))
    assert newer.total == money(18)


async def test_an_unknown_product_is_refused_naming_its_line(orders: Any, tea: str) -> None:
    error = await failure_of(
        orders.PlaceOrder, place_request(line(tea), line("7d0c8c55-0000-4000-8000-000000000000"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error) == "UNKNOWN_PRODUCT"
    assert field_violations(error) == ["lines[1].product_id"]
    listed = await orders.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    assert list(listed.orders) == []


@pytest.mark.parametrize(
    ("request_of", "violations"),
    [
        (lambda p: place_request(line(p, 0)), ["lines[0].quantity"]),
        (lambda p: place_request(line(p, -1)), ["lines[0].quantity"]),
        (lambda p: place_request(line(p, 1001)), ["lines[0].quantity"]),
        (lambda p: place_request(line(p), line(p, 2)), ["lines[1].product_id"]),
        (lambda p: place_request(*(line(f"{p}-{i}") for i in range(101))), ["lines"]),
        (
            lambda p: place_request(
                line(p), shipping_address=postal_address_pb2.PostalAddress(locality="Berlin")
            ),
            ["shipping_address.region_code", "shipping_address.address_lines"],
        ),
        (
            lambda p: place_request(
                line(p),
                shipping_address=postal_address_pb2.PostalAddress(
                    region_code="de", postal_code="1"
                ),
            ),
            ["shipping_address.region_code"],
        ),
        (
            lambda p: place_request(
                line(p),
                shipping_address=postal_address_pb2.PostalAddress(
                    region_code="DE", address_lines=["  "]
                ),
            ),
            ["shipping_address.address_lines"],
        ),
        (lambda p: place_request(line(p), payment_token=""), ["payment_token"]),
        (lambda p: pb.PlaceOrderRequest(shipping_address=HOME, payment_token="t"), ["lines"]),
    ],
    ids=[
        "zero-quantity",
        "negative-quantity",
        "too-many-units",
        "duplicate-product",
        "too-many-lines",
        "no-address",
        "lower-case-region",
        "no-postal-code-or-address-line",
        "no-payment-token",
        "no-lines",
    ],
)
async def test_invalid_orders_are_refused_with_field_violations(
    orders: Any, tea: str, request_of: Any, violations: list[str]
) -> None:
    """Each is refused before an order exists: shipping, a later step of the saga, would
    refuse the address after the payment (the region's form, a postal code or a line)."""
    error = await failure_of(orders.PlaceOrder, request_of(tea))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == violations
    listed = await orders.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    assert list(listed.orders) == []


async def test_products_in_two_currencies_cannot_share_an_order(
    orders: Any, catalog: Any, tea: str
) -> None:
    dollars = await product(catalog, "Mug", money(8, currency="USD"))
    error = await failure_of(orders.PlaceOrder, place_request(line(tea), line(dollars)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "MIXED_CURRENCIES"


async def test_an_unreachable_catalog_is_unavailable(database: Database) -> None:
    async with (
        grpc.aio.insecure_channel("127.0.0.1:1") as nowhere,
        serving(registration(SqlOrdersStore(database), GrpcCatalog(nowhere))) as channel,
    ):
        stub = pb_grpc.OrdersServiceStub(channel)
        error = await failure_of(stub.PlaceOrder, place_request(line("any")))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(error) == "CATALOG_UNAVAILABLE"


async def test_a_customer_cannot_order_for_another(orders: Any, tea: str) -> None:
    error = await failure_of(orders.PlaceOrder, place_request(line(tea), customer_id="bob"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    own = await place(orders, line(tea), customer_id="alice")
    assert own.customer_id == "alice"


async def test_a_call_without_a_caller_is_refused_whatever_it_names(orders: Any, tea: str) -> None:
    order = await place(orders, line(tea))
    calls = [
        (orders.PlaceOrder, place_request(line(tea), customer_id="alice")),
        (orders.GetOrder, pb.GetOrderRequest(id=order.id)),
        (orders.ListOrders, pb.ListOrdersRequest(customer_id="alice")),
        (orders.CancelOrder, pb.CancelOrderRequest(id=order.id)),
    ]
    for method, request in calls:
        error = await failure_of(method, request, metadata=None)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(error) == "NO_SUBJECT"


async def test_another_customers_order_looks_like_no_order(orders: Any, tea: str) -> None:
    order = await place(orders, line(tea))
    theirs = await failure_of(orders.GetOrder, pb.GetOrderRequest(id=order.id), metadata=BOB)
    missing = await failure_of(
        orders.GetOrder, pb.GetOrderRequest(id="7d0c8c55-0000-4000-8000-000000000000")
    )
    assert theirs.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(theirs) == error_reason(missing) == "ORDER_NOT_FOUND"
    cancel = await failure_of(orders.CancelOrder, pb.CancelOrderRequest(id=order.id), metadata=BOB)
    assert cancel.code() == grpc.StatusCode.NOT_FOUND
    still = await orders.GetOrder(pb.GetOrderRequest(id=order.id), metadata=ALICE)
    assert still.order.status == pb.ORDER_STATUS_PENDING


async def test_list_pages_through_the_callers_orders_newest_first(orders: Any, tea: str) -> None:
    placed = [await place(orders, line(tea, n)) for n in range(1, 6)]
    await place(orders, line(tea), metadata=BOB)

    seen: list[str] = []
    token = ""
    for _ in range(4):
        page = await orders.ListOrders(
            pb.ListOrdersRequest(page_size=2, page_token=token), metadata=ALICE
        )
        seen += [o.id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    newest_first = sorted(placed, key=lambda o: (o.create_time.ToDatetime(), o.id), reverse=True)
    assert seen == [o.id for o in newest_first]
    assert token == ""
    named = await orders.ListOrders(pb.ListOrdersRequest(customer_id="alice"), metadata=ALICE)
    assert [o.id for o in named.orders] == seen


async def test_listing_another_customers_orders_is_denied(orders: Any, tea: str) -> None:
    await place(orders, line(tea), metadata=BOB)
    error = await failure_of(orders.ListOrders, pb.ListOrdersRequest(customer_id="bob"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_page_token_of_another_customer_is_refused(orders: Any, tea: str) -> None:
    for _ in range(2):
        await place(orders, line(tea), metadata=BOB)
    page = await orders.ListOrders(pb.ListOrdersRequest(page_size=1), metadata=BOB)
    error = await failure_of(
        orders.ListOrders, pb.ListOrdersRequest(page_token=page.next_page_token)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["page_token"]
    tampered = await failure_of(orders.ListOrders, pb.ListOrdersRequest(page_token="bm9wZQ"))
    assert tampered.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_a_pending_order_once(orders: Any, tea: str) -> None:
    order = await place(orders, line(tea))
    cancel = pb.CancelOrderRequest(
        id=order.id, reason="found it cheaper", request_id="5f0b7c1e-0000-4000-8000-0000000000c1"
    )
    cancelled = (await orders.CancelOrder(cancel, metadata=ALICE)).order
    assert cancelled.status == pb.ORDER_STATUS_CANCELLED
    assert cancelled.cancel_reason == "found it cheaper"
    assert [(s.name, s.outcome) for s in cancelled.history] == [
        ("OrderPlaced", pb.SAGA_STEP_OUTCOME_SUCCEEDED),
        ("OrderCancelled", pb.SAGA_STEP_OUTCOME_SUCCEEDED),
    ]
    retried = (await orders.CancelOrder(cancel, metadata=ALICE)).order
    assert retried == cancelled

    again = await failure_of(
        orders.CancelOrder,
        pb.CancelOrderRequest(id=order.id, request_id="5f0b7c1e-0000-4000-8000-0000000000c2"),
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(again) == "ORDER_NOT_PENDING"
    fetched = await orders.GetOrder(pb.GetOrderRequest(id=order.id), metadata=ALICE)
    assert fetched.order == cancelled


async def test_a_retried_place_with_the_same_request_id_places_once(orders: Any, tea: str) -> None:
    request_id = "5f0b7c1e-0000-4000-8000-0000000000a1"
    first = await place(orders, line(tea, 2), request_id=request_id)
    again = await place(orders, line(tea, 2), request_id=request_id)
    assert again == first
    listed = await orders.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    assert [o.id for o in listed.orders] == [first.id]


async def test_a_request_id_reused_for_another_request_is_already_exists(
    orders: Any, tea: str
) -> None:
    request_id = "5f0b7c1e-0000-4000-8000-0000000000a2"
    first = await place(orders, line(tea, 2), request_id=request_id)
    error = await failure_of(orders.PlaceOrder, place_request(line(tea, 3), request_id=request_id))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error) == "REQUEST_ID_REUSED"
    listed = await orders.ListOrders(pb.ListOrdersRequest(), metadata=ALICE)
    assert [o.id for o in listed.orders] == [first.id]


async def test_request_ids_are_each_customers_own_for_every_mutation(orders: Any, tea: str) -> None:
    request_id = "5f0b7c1e-0000-4000-8000-0000000000a3"
    alices = await place(orders, line(tea), request_id=request_id)
    bobs = await place(orders, line(tea), request_id=request_id, metadata=BOB)
    assert (alices.customer_id, bobs.customer_id) == ("alice", "bob")
    for order, metadata in ((alices, ALICE), (bobs, BOB)):
        cancel = pb.CancelOrderRequest(id=order.id, request_id=request_id)
        cancelled = await orders.CancelOrder(cancel, metadata=metadata)
        assert cancelled.order.status == pb.ORDER_STATUS_CANCELLED


async def test_the_database_refuses_impossible_rows(database: Database) -> None:
    async with database.transaction() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO orders VALUES ('o1', 'alice', 'PENDING', '', '{}', 't', '', '', '', "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    for statement in (
        "UPDATE orders SET status = 'SHIPPED' WHERE id = 'o1'",
        "INSERT INTO order_lines VALUES ('o1', 0, 'p', 'P', 0, 'EUR', 100)",
        "INSERT INTO order_lines VALUES ('missing', 0, 'p', 'P', 1, 'EUR', 100)",
        "INSERT INTO order_history VALUES ('o1', 0, 'X', 'MAYBE', '', '2026-01-01 00:00:00')",
    ):
        with pytest.raises(sa.exc.IntegrityError):
            async with database.transaction() as connection:
                await connection.exec_driver_sql(statement)
    async with database.transaction() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO order_lines VALUES ('o1', 0, 'p', 'P', 1, 'EUR', 100)"
        )
        await connection.exec_driver_sql("DELETE FROM orders WHERE id = 'o1'")
        remaining = await connection.exec_driver_sql("SELECT count(*) FROM order_lines")
        assert remaining.scalar_one() == 0


async def test_orders_survive_a_restart(
    databases: Databases, tmp_path: Path, catalog_channel: grpc.aio.Channel, tea: str
) -> None:
    async with (
        databases.open(tmp_path / "first", "orders", MIGRATIONS) as database,
        serving(registration(SqlOrdersStore(database), GrpcCatalog(catalog_channel))) as channel,
    ):
        placed = await place(pb_grpc.OrdersServiceStub(channel), line(tea, 4))
    async with databases.open(tmp_path / "first", "orders", MIGRATIONS) as database:
        assert await database.applied_versions() == [m.version for m in MIGRATIONS]
        async with serving(
            registration(SqlOrdersStore(database), GrpcCatalog(catalog_channel))
        ) as channel:
            fetched = await pb_grpc.OrdersServiceStub(channel).GetOrder(
                pb.GetOrderRequest(id=placed.id), metadata=ALICE
            )
    assert fetched.order == placed


@pytest.fixture
async def bounded_orders(
    database: Database, catalog_channel: grpc.aio.Channel
) -> AsyncIterator[Any]:
    """Orders that hold at most 3 PENDING orders placed in the last minute, 2 a customer's."""
    backlog = Backlog(total=3, per_client=2)
    store = SqlOrdersStore(database)
    async with serving(registration(store, GrpcCatalog(catalog_channel), backlog)) as channel:
        yield pb_grpc.OrdersServiceStub(channel)


def quota_and_retry(error: grpc.aio.AioRpcError) -> tuple[list[str], float]:
    """The subjects of a refusal's QuotaFailure, and its RetryInfo's delay in seconds."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    assert status.details[1].Unpack(quota)
    assert status.details[2].Unpack(retry)
    return [v.subject for v in quota.violations], retry.retry_delay.ToTimedelta().total_seconds()


async def test_a_customer_with_a_full_backlog_is_refused_until_an_order_ends(
    bounded_orders: Any, tea: str
) -> None:
    first = await place(bounded_orders, line(tea), request_id="r1")
    await place(bounded_orders, line(tea), request_id="r2")
    refused = await failure_of(bounded_orders.PlaceOrder, place_request(line(tea)))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(refused) == "TOO_MANY_PENDING_ORDERS"
    assert "2 orders still being processed" in (refused.details() or "")
    assert quota_and_retry(refused) == (["customer:alice"], 1.0)
    # A request already served is served again: the backlog refuses only new orders.
    assert (await place(bounded_orders, line(tea), request_id="r1")).id == first.id
    await bounded_orders.CancelOrder(pb.CancelOrderRequest(id=first.id), metadata=ALICE)
    assert (await place(bounded_orders, line(tea))).status == pb.ORDER_STATUS_PENDING


async def test_when_the_shops_backlog_is_full_every_customer_is_refused(
    bounded_orders: Any, tea: str
) -> None:
    await place(bounded_orders, line(tea))
    await place(bounded_orders, line(tea))
    await place(bounded_orders, line(tea), metadata=BOB)
    refused = await failure_of(bounded_orders.PlaceOrder, place_request(line(tea)), metadata=BOB)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(refused) == "ORDER_BACKLOG_FULL"
    assert quota_and_retry(refused) == (["service:orders"], 1.0)


async def test_orders_pending_for_longer_than_the_window_are_stuck_not_backlog(
    bounded_orders: Any, database: Database, tea: str
) -> None:
    for _ in range(2):
        await place(bounded_orders, line(tea))
    placed = datetime.now(UTC) - BACKLOG_WINDOW - timedelta(seconds=1)
    async with database.transaction() as connection:
        await connection.execute(orders_table.update().values(create_time=placed))
    assert (await place(bounded_orders, line(tea))).status == pb.ORDER_STATUS_PENDING
