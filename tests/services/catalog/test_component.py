"""The catalog over real gRPC, on a real database (SQLite, Postgres), with the real inventory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from google.type import money_pb2

from mesh.runtime.money import Money
from mesh.runtime.storage import outbox, utc_now
from services.catalog import adapters as catalog_adapters
from services.catalog import handlers
from services.catalog.domain import new_product
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from shop.catalog.v2 import catalog_service_pb2 as pb_v2
from shop.catalog.v2 import catalog_service_pb2_grpc as pb_v2_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from tests.support.component import (
    Databases,
    catalog_and_inventory,
    error_reason,
    field_violations,
)

pytestmark = pytest.mark.integration


@asynccontextmanager
async def catalog_with_inventory(
    databases: Databases, directory: Path
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Stubs of the real catalog (API v1), the real inventory it calls, and the catalog's
    API v2, served beside v1 by the same app."""
    async with catalog_and_inventory(databases, directory) as (catalog_channel, inventory_channel):
        yield (
            pb_grpc.CatalogServiceStub(catalog_channel),
            inventory_grpc.InventoryServiceStub(inventory_channel),
            pb_v2_grpc.CatalogServiceStub(catalog_channel),
        )


@pytest.fixture
async def services(databases: Databases, tmp_path: Path) -> AsyncIterator[tuple[Any, Any, Any]]:
    async with catalog_with_inventory(databases, tmp_path) as stubs:
        yield stubs


@pytest.fixture
def catalog(services: tuple[Any, Any, Any]) -> Any:
    return services[0]


@pytest.fixture
def catalog_v2(services: tuple[Any, Any, Any]) -> Any:
    return services[2]


def eur(units: int, nanos: int = 0) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", units=units, nanos=nanos)


def product(name: str = "Tea", category: str = "food", **fields: Any) -> pb.Product:
    fields.setdefault("weight_grams", 250)
    return pb.Product(
        name=name, category=category, price=fields.pop("price", eur(4, 500_000_000)), **fields
    )


async def create(catalog: Any, **fields: Any) -> pb.Product:
    request_id = fields.pop("request_id", "")
    response = await catalog.CreateProduct(
        pb.CreateProductRequest(product=product(**fields), request_id=request_id)
    )
    created: pb.Product = response.product
    return created


async def test_create_then_get_returns_the_stored_product(catalog: Any) -> None:
    created = await create(catalog, description="Green tea", weight_grams=250)
    assert len(created.id) == 36
    assert created.stock_link == f"/v1/products/{created.id}/stock"
    fetched = (await catalog.GetProduct(pb.GetProductRequest(id=created.id))).product
    assert fetched == created
    assert fetched.price == eur(4, 500_000_000)


async def test_initial_stock_lands_in_inventory(services: tuple[Any, Any, Any]) -> None:
    catalog, inventory, _ = services
    stocked = (
        await catalog.CreateProduct(pb.CreateProductRequest(product=product(), initial_stock=7))
    ).product
    unstocked = await create(catalog)
    for created, expected in ((stocked, 7), (unstocked, 0)):
        stock = (
            await inventory.GetStock(inventory_pb.GetStockRequest(product_id=created.id))
        ).stock
        assert (stock.on_hand, stock.available) == (expected, expected)


async def stocked(catalog: Any, name: str, units: int) -> pb.Product:
    request = pb.CreateProductRequest(product=product(name=name), initial_stock=units)
    created: pb.Product = (await catalog.CreateProduct(request)).product
    return created


async def test_reads_with_stock_show_what_inventory_holds(services: tuple[Any, Any, Any]) -> None:
    catalog, inventory, _ = services
    tea, mug = await stocked(catalog, "Tea", 7), await stocked(catalog, "Mug", 0)
    await inventory.ReserveStock(
        inventory_pb.ReserveStockRequest(
            order_id="order-1", lines=[inventory_pb.ReservationLine(product_id=tea.id, quantity=2)]
        )
    )
    with_stock = pb.PRODUCT_VIEW_WITH_STOCK
    got = (await catalog.GetProduct(pb.GetProductRequest(id=tea.id, view=with_stock))).product
    assert (got.stock.state, got.stock.available) == (pb.STOCK_STATE_CURRENT, 5)
    listed = await catalog.ListProducts(pb.ListProductsRequest(view=with_stock))
    assert [(p.name, p.stock.available) for p in listed.products] == [("Tea", 5), ("Mug", 0)]
    assert all(p.stock.HasField("available") for p in listed.products)  # 0 is a level too
    batch = await catalog.BatchGetProducts(
        pb.BatchGetProductsRequest(ids=[mug.id, tea.id, mug.id], view=with_stock)
    )
    assert [p.stock.available for p in batch.products] == [0, 5, 0]
    # The basic view, the default, has no stock.
    basic = (await catalog.GetProduct(pb.GetProductRequest(id=tea.id))).product
    assert not basic.HasField("stock")
    assert basic == tea


async def test_batch_get_stock_leaves_out_products_without_stock(
    services: tuple[Any, Any, Any],
) -> None:
    catalog, inventory, _ = services
    tea, mug = await stocked(catalog, "Tea", 3), await stocked(catalog, "Mug", 1)
    ids = [mug.id, "never-stocked", tea.id]
    found = await inventory.BatchGetStock(inventory_pb.BatchGetStockRequest(product_ids=ids))
    assert [(s.product_id, s.on_hand) for s in found.stocks] == [(mug.id, 1), (tea.id, 3)]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await inventory.BatchGetStock(
            inventory_pb.BatchGetStockRequest(product_ids=[f"p{i}" for i in range(101)])
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_negative_initial_stock_is_refused(catalog: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.CreateProduct(pb.CreateProductRequest(product=product(), initial_stock=-1))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["initial_stock"]


async def test_unknown_product_is_not_found(catalog: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.GetProduct(pb.GetProductRequest(id="0f1e0e3c-2f5e-4f7f-8a4c-1c3c2b1a0000"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(failure.value) == "PRODUCT_NOT_FOUND"


@pytest.mark.parametrize(
    ("fields", "violation"),
    [
        ({"name": "   "}, "product.name"),
        ({"price": eur(0)}, "product.price"),
        ({"price": eur(-3)}, "product.price"),
        ({"price": money_pb2.Money(currency_code="XXX", units=1)}, "product.price"),
        ({"price": money_pb2.Money(currency_code="EUR", units=1, nanos=1)}, "product.price"),
        ({"category": "Food"}, "product.category"),
        ({"weight_grams": -1}, "product.weight_grams"),
        ({"weight_grams": 0}, "product.weight_grams"),
        ({"weight_grams": 31_501}, "product.weight_grams"),
    ],
    ids=[
        "blank-name",
        "zero-price",
        "negative-price",
        "unknown-currency",
        "sub-cent",
        "upper-category",
        "negative-weight",
        "no-weight",
        "heavier-than-a-parcel",
    ],
)
async def test_invalid_products_are_refused_with_field_violations(
    catalog: Any, fields: dict[str, Any], violation: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await create(catalog, **fields)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == [violation]


async def test_retried_create_with_the_same_request_id_creates_once(catalog: Any) -> None:
    first = await create(catalog, request_id="3b0b7c1e-0000-4000-8000-000000000001")
    again = await create(catalog, request_id="3b0b7c1e-0000-4000-8000-000000000001")
    assert again.id == first.id
    listed = (await catalog.ListProducts(pb.ListProductsRequest())).products
    assert [p.id for p in listed] == [first.id]


async def test_list_filters_by_category_and_pages_stably(catalog: Any) -> None:
    books = [(await create(catalog, name=f"Book {i}", category="books")).id for i in range(5)]
    await create(catalog, name="Tea", category="food")

    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = await catalog.ListProducts(
            pb.ListProductsRequest(category="books", page_size=2, page_token=token)
        )
        seen += [p.id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert seen == books
    assert token == ""


async def test_page_token_of_another_filter_is_refused(catalog: Any) -> None:
    for i in range(3):
        await create(catalog, name=f"Book {i}", category="books")
    page = await catalog.ListProducts(pb.ListProductsRequest(category="books", page_size=1))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.ListProducts(
            pb.ListProductsRequest(category="food", page_token=page.next_page_token)
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["page_token"]


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        "eyJhZnRlciI6IHsiY3JlYXRlX3RpbWUiOiAieCIsICJpZCI6ICJwIn0sICJmaWx0ZXJzIjogeyJjYXRlZ29yeSI6ICIifX0",
    ],
    ids=["garbage", "bad-timestamp"],
)
async def test_a_forged_page_token_is_invalid_argument(catalog: Any, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.ListProducts(pb.ListProductsRequest(page_token=token))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["page_token"]


async def test_update_changes_only_the_masked_fields(catalog: Any) -> None:
    created = await create(catalog, description="old")
    updated = (
        await catalog.UpdateProduct(
            pb.UpdateProductRequest(
                product=pb.Product(id=created.id, price=eur(5), description="ignored"),
                update_mask=field_mask_pb2.FieldMask(paths=["price"]),
            )
        )
    ).product
    assert updated.price == eur(5)
    assert updated.description == "old"
    assert updated.update_time.ToDatetime() >= created.update_time.ToDatetime()


async def test_update_of_an_unknown_field_is_refused(catalog: Any) -> None:
    created = await create(catalog)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.UpdateProduct(
            pb.UpdateProductRequest(
                product=pb.Product(id=created.id),
                update_mask=field_mask_pb2.FieldMask(paths=["id"]),
            )
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["update_mask"]


async def test_batch_get_keeps_the_order_asked_and_names_a_missing_id(catalog: Any) -> None:
    a, b = await create(catalog, name="A"), await create(catalog, name="B")
    found = await catalog.BatchGetProducts(pb.BatchGetProductsRequest(ids=[b.id, a.id]))
    assert [p.name for p in found.products] == ["B", "A"]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.BatchGetProducts(pb.BatchGetProductsRequest(ids=[a.id, "nope"]))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_request_id_reused_for_another_request_is_already_exists(catalog: Any) -> None:
    first, second = await create(catalog, name="A"), await create(catalog, name="B")
    reused = "3b0b7c1e-0000-4000-8000-0000000000aa"
    update = pb.UpdateProductRequest(
        product=pb.Product(id=first.id, description="new"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        request_id=reused,
    )
    await catalog.UpdateProduct(update)
    await catalog.DeleteProduct(pb.DeleteProductRequest(id=first.id))
    update.product.id = second.id
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.UpdateProduct(update)
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(failure.value) == "REQUEST_ID_REUSED"
    unchanged = await catalog.GetProduct(pb.GetProductRequest(id=second.id))
    assert unchanged.product.description == ""


async def test_delete_removes_and_a_retry_succeeds(catalog: Any) -> None:
    created = await create(catalog)
    delete = pb.DeleteProductRequest(
        id=created.id, request_id="3b0b7c1e-0000-4000-8000-00000000000d"
    )
    await catalog.DeleteProduct(delete)
    await catalog.DeleteProduct(delete)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await catalog.GetProduct(pb.GetProductRequest(id=created.id))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND


async def test_data_survives_a_restart(databases: Databases, tmp_path: Path) -> None:
    async with catalog_with_inventory(databases, tmp_path) as (catalog, _, _):
        created = await create(catalog)
    async with catalog_with_inventory(databases, tmp_path) as (catalog, _, _):
        fetched = await catalog.GetProduct(pb.GetProductRequest(id=created.id))
    assert fetched.product == created


async def test_concurrent_creates_all_land(catalog: Any) -> None:
    created = await asyncio.gather(*(create(catalog, name=f"P{i}") for i in range(20)))
    listed = (await catalog.ListProducts(pb.ListProductsRequest(page_size=100))).products
    assert sorted(p.id for p in listed) == sorted(p.id for p in created)


async def test_concurrent_v2_creates_of_one_chosen_id_make_one_product(
    catalog: Any, catalog_v2: Any
) -> None:
    """A client-chosen id names one product however many creates race for it (AIP-133):
    one lands, the others are ALREADY_EXISTS, on either database."""
    request = pb_v2.CreateProductRequest(
        product=pb_v2.Product(display_name="Tea", category="food", price=eur(4), weight_grams=9),
        product_id="green-tea",
    )
    outcomes = await asyncio.gather(
        *(catalog_v2.CreateProduct(request) for _ in range(8)), return_exceptions=True
    )
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert {error.code() for error in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    assert len(refused) == 7
    fetched = (await catalog.GetProduct(pb.GetProductRequest(id="green-tea"))).product
    assert (fetched.id, fetched.name) == ("green-tea", "Tea")


async def test_products_from_before_the_events_are_announced_once_on_each_backend(
    databases: Databases, tmp_path: Path
) -> None:
    async with databases.open(tmp_path, "catalog", catalog_adapters.MIGRATIONS) as database:
        store = catalog_adapters.SqlCatalogStore(database)
        async with store.transaction() as tx:
            for index in range(3):
                await tx.add(new_product(name=f"Tea {index}", description="", category="food",
                                         price=Money("EUR", 100), weight_grams=100,
                                         now=utc_now()))  # fmt: skip
        assert await handlers.announce_existing_products(store) == 3
        assert await handlers.announce_existing_products(store) == 0
        async with database.snapshot() as connection:
            subjects = list(await connection.execute(sa.select(outbox.c.subject)))
        assert len(subjects) == 3
        assert all(s.subject.startswith("shop.catalog.product_created.") for s in subjects)
