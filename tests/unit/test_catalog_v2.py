"""The catalog's API version 2 (`services/catalog/servicer_v2.py`): resource names, update
masks and filters mapped to the same commands as version 1, on an in-memory store, and
both versions served by one process."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import money_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.runtime.errors import InvalidArgument, NotFound
from mesh.runtime.money import Money
from mesh.runtime.runner import ServiceRunner
from services.catalog.bootstrap import registrations
from services.catalog.servicer import CatalogServicer
from services.catalog.servicer_v2 import (
    CatalogServicerV2,
    category_filter,
    masked_changes,
    product_id,
    product_ids,
)
from shop.catalog.v1 import catalog_service_pb2 as v1
from shop.catalog.v1 import catalog_service_pb2_grpc as v1_grpc
from shop.catalog.v2 import catalog_service_pb2 as v2
from shop.catalog.v2 import catalog_service_pb2_grpc as v2_grpc
from tests.support.memory_catalog import MemoryCatalog, RecordingInventory
from tests.support.reflection import listed

TEA = v2.Product(
    display_name="Tea",
    description="Green tea",
    category="food",
    weight_grams=250,
    price=money_pb2.Money(currency_code="EUR", units=4, nanos=500_000_000),
)


@pytest.fixture
def store() -> MemoryCatalog:
    return MemoryCatalog()


@pytest.fixture
def catalog(store: MemoryCatalog) -> CatalogServicerV2:
    return CatalogServicerV2(store, RecordingInventory())


def _violations(refused: pytest.ExceptionInfo[InvalidArgument]) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in refused.value.violations]


async def _create(catalog: CatalogServicerV2, **fields: Any) -> v2.Product:
    request = v2.CreateProductRequest(**{"product": TEA, **fields})
    return (await catalog.CreateProduct(request, None)).product


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


# Resource names ---------------------------------------------------------------------


def test_a_resource_name_names_a_product_id() -> None:
    assert product_id("products/green-tea", "name") == "green-tea"
    assert product_ids(["products/a", "products/b"], "names") == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "REQUIRED"),
        ("green-tea", "INVALID_RESOURCE_NAME"),
        ("products/", "INVALID_RESOURCE_NAME"),
        ("products/a/b", "INVALID_RESOURCE_NAME"),
        ("shelves/a", "INVALID_RESOURCE_NAME"),
    ],
)
def test_anything_else_is_invalid_argument_on_its_field(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        product_id(name, "product.name")
    assert _violations(refused) == [("product.name", reason)]


def test_each_bad_name_of_a_list_is_named_by_its_index() -> None:
    with pytest.raises(InvalidArgument) as refused:
        product_ids(["products/a", "a", "products/b", "products/"], "names")
    assert [field for field, _ in _violations(refused)] == ["names[1]", "names[3]"]


# Update masks -----------------------------------------------------------------------


def test_a_mask_takes_the_named_fields_by_their_domain_names() -> None:
    changes = masked_changes(TEA, ["display_name", "price"])
    assert changes == {"name": "Tea", "price": Money("EUR", 450)}


def test_every_field_is_a_full_replacement() -> None:
    changes = masked_changes(TEA, ["*"])
    assert set(changes) == {"name", "description", "price", "category", "weight_grams"}


def test_the_name_and_output_only_fields_are_ignored() -> None:
    assert masked_changes(TEA, ["name", "create_time", "update_time", "stock_link"]) == {}
    assert masked_changes(TEA, ["update_time", "category"]) == {"category": "food"}


def test_unknown_paths_are_each_a_field_violation() -> None:
    with pytest.raises(InvalidArgument) as refused:
        masked_changes(TEA, ["display_name", "colour", "price.units"])
    assert _violations(refused) == [
        ("update_mask", "UNKNOWN_FIELD"),
        ("update_mask", "UNKNOWN_FIELD"),
    ]
    assert "'colour'" in refused.value.violations[0].description
    assert "'price.units'" in refused.value.violations[1].description


def test_every_field_must_be_the_only_path() -> None:
    with pytest.raises(InvalidArgument) as refused:
        masked_changes(TEA, ["*", "price"])
    assert _violations(refused) == [("update_mask", "INVALID_FIELD_MASK")]


# Filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category"),
    [("", ""), ("  ", ""), ('category = "books"', "books"), ("category=books", "books")],
)
def test_a_filter_compares_the_category(text: str, category: str) -> None:
    assert category_filter(text) == category


@pytest.mark.parametrize(
    "text", ['name = "Tea"', 'category = ""', 'category != "books"', 'category = "a" OR x']
)
def test_any_other_filter_is_invalid_argument(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        category_filter(text)
    assert _violations(refused) == [("filter", "UNSUPPORTED_FILTER")]


# The servicer -----------------------------------------------------------------------


async def test_create_under_a_chosen_id_then_get_by_name(catalog: CatalogServicerV2) -> None:
    created = await _create(catalog, product_id="green-tea")
    assert created.name == "products/green-tea"
    assert (created.display_name, created.category, created.weight_grams) == ("Tea", "food", 250)
    assert created.stock_link == "/v1/products/green-tea/stock"
    got = await catalog.GetProduct(v2.GetProductRequest(name="products/green-tea"), None)
    assert got.product == created


async def test_without_a_chosen_id_a_product_gets_a_uuid(catalog: CatalogServicerV2) -> None:
    created = await _create(catalog)
    assert created.name.startswith("products/")
    assert len(created.name.removeprefix("products/")) == 36


async def test_v1_and_v2_are_two_views_of_one_product(store: MemoryCatalog) -> None:
    catalog_v1 = CatalogServicer(store, RecordingInventory())
    created = await _create(CatalogServicerV2(store, RecordingInventory()), product_id="tea")
    seen = (await catalog_v1.GetProduct(v1.GetProductRequest(id="tea"), None)).product
    assert (seen.id, seen.name, seen.price) == ("tea", "Tea", created.price)


async def test_update_changes_the_masked_fields_only(catalog: CatalogServicerV2) -> None:
    await _create(catalog, product_id="tea")
    change = v2.Product(name="products/tea", display_name="Black tea", category="drinks")
    request = v2.UpdateProductRequest(product=change, update_mask=_mask("display_name"))
    updated = (await catalog.UpdateProduct(request, None)).product
    assert (updated.display_name, updated.category, updated.price) == (
        "Black tea",
        "food",
        TEA.price,
    )


async def test_the_domains_violations_name_v2s_fields(catalog: CatalogServicerV2) -> None:
    await _create(catalog, product_id="tea")
    blank = v2.UpdateProductRequest(
        product=v2.Product(name="products/tea", display_name=" "), update_mask=_mask("display_name")
    )
    with pytest.raises(InvalidArgument) as refused:
        await catalog.UpdateProduct(blank, None)
    assert [field for field, _ in _violations(refused)] == ["product.display_name"]
    with pytest.raises(InvalidArgument) as refused:
        await _create(
            catalog,
            product=v2.Product(display_name="", category="food", price=TEA.price, weight_grams=1),
        )
    assert [field for field, _ in _violations(refused)] == ["product.display_name"]


async def test_an_update_names_its_product(catalog: CatalogServicerV2) -> None:
    request = v2.UpdateProductRequest(product=TEA, update_mask=_mask("display_name"))
    with pytest.raises(InvalidArgument) as refused:
        await catalog.UpdateProduct(request, None)
    assert _violations(refused) == [("product.name", "REQUIRED")]


async def test_list_by_filter_and_batch_get_by_names(catalog: CatalogServicerV2) -> None:
    await _create(catalog, product_id="tea")
    mug = v2.Product(display_name="Mug", category="kitchen", price=TEA.price, weight_grams=300)
    await _create(catalog, product_id="mug", product=mug)
    listed = await catalog.ListProducts(v2.ListProductsRequest(filter="category = kitchen"), None)
    assert [p.name for p in listed.products] == ["products/mug"]
    names = ["products/mug", "products/tea"]
    batch = await catalog.BatchGetProducts(v2.BatchGetProductsRequest(names=names), None)
    assert [p.name for p in batch.products] == names


async def test_delete_by_name(catalog: CatalogServicerV2, store: MemoryCatalog) -> None:
    await _create(catalog, product_id="tea")
    await catalog.DeleteProduct(v2.DeleteProductRequest(name="products/tea"), None)
    assert store.products == {}
    with pytest.raises(NotFound):
        await catalog.GetProduct(v2.GetProductRequest(name="products/tea"), None)


# One process, both versions -----------------------------------------------------------


async def test_the_catalog_app_serves_both_versions_with_health_and_reflection() -> None:
    runner = ServiceRunner(registrations(MemoryCatalog(), RecordingInventory()), grace=0)
    await runner.start()
    try:
        services = {"shop.catalog.v1.CatalogService", "shop.catalog.v2.CatalogService"}
        assert services <= await listed(runner.address)
        async with grpc.aio.insecure_channel(runner.address) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            for service in services:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            created = await v2_grpc.CatalogServiceStub(channel).CreateProduct(
                v2.CreateProductRequest(product=TEA, product_id="tea")
            )
            seen = await v1_grpc.CatalogServiceStub(channel).GetProduct(
                v1.GetProductRequest(id="tea")
            )
        assert (created.product.name, seen.product.id) == ("products/tea", "tea")
    finally:
        await runner.stop(0)
