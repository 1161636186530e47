"""The catalog's rules and use cases, with an in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest

from mesh.runtime.errors import InvalidArgument, NotFound, Unavailable
from mesh.runtime.money import Money
from mesh.runtime.pagination import PageTokens
from services.catalog import handlers
from services.catalog.domain import Product, new_product, updated_product
from services.catalog.ports import CatalogTransaction

NOW = datetime.fromisoformat("2026-11-26T10:00:00+00:00")


class MemoryCatalog:
    """The CatalogStore port in memory (transactions are not isolated: single-task tests)."""

    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}
        self.page_tokens = PageTokens(b"a key for tests")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CatalogTransaction]:
        yield self

    snapshot = transaction

    async def get(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    async def get_many(self, product_ids: list[str]) -> list[Product]:
        return [self.products[i] for i in product_ids if i in self.products]

    async def add(self, product: Product) -> None:
        self.products[product.id] = product

    async def save(self, product: Product) -> None:
        self.products[product.id] = product

    async def delete(self, product_id: str) -> bool:
        return self.products.pop(product_id, None) is not None

    async def page(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Product]:
        rows = sorted(self.products.values(), key=lambda p: (p.create_time, p.id))
        rows = [p for p in rows if not category or p.category == category]
        rows = [p for p in rows if after is None or (p.create_time, p.id) > after]
        return rows[:limit]

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.requests[(method, request_id)] = result


class RecordingInventory:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.fail = fail

    async def set_stock(self, product_id: str, on_hand: int, request_id: str) -> None:
        self.calls.append((product_id, on_hand, request_id))
        if self.fail:
            raise Unavailable("inventory is down", reason="INVENTORY_UNAVAILABLE")


def command(**overrides: Any) -> handlers.CreateProduct:
    values: dict[str, Any] = {
        "name": "Tea",
        "description": "",
        "price": Money("EUR", 450),
        "category": "food",
        "weight_grams": 250,
        "initial_stock": 0,
        "request_id": "",
    }
    values.update(overrides)
    return handlers.CreateProduct(**values)


def test_a_new_product_is_trimmed_and_dated() -> None:
    product = new_product(
        name="  Tea ",
        description="",
        price=Money("EUR", 1),
        category="food",
        weight_grams=0,
        now=NOW,
    )
    assert (product.name, product.create_time, product.update_time) == ("Tea", NOW, NOW)


def test_every_broken_rule_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as refused:
        new_product(
            name="",
            description="",
            price=Money("EUR", 0),
            category="",
            weight_grams=-5,
            now=NOW,
        )
    assert [v.field for v in refused.value.violations] == [
        "product.name",
        "product.price",
        "product.category",
        "product.weight_grams",
    ]


def test_an_update_may_not_touch_the_id() -> None:
    product = new_product(
        name="Tea",
        description="",
        price=Money("EUR", 1),
        category="food",
        weight_grams=0,
        now=NOW,
    )
    with pytest.raises(InvalidArgument):
        updated_product(product, {"id": "other"}, NOW)


async def test_initial_stock_is_set_in_inventory_under_a_request_id_of_the_product() -> None:
    store, inventory = MemoryCatalog(), RecordingInventory()
    product = await handlers.create_product(store, inventory, command(initial_stock=7))
    assert inventory.calls == [(product.id, 7, f"{product.id}:initial")]


async def test_a_retry_after_inventory_failed_sets_the_stock_of_the_same_product() -> None:
    store = MemoryCatalog()
    with pytest.raises(Unavailable):
        await handlers.create_product(
            store, RecordingInventory(fail=True), command(initial_stock=3, request_id="r1")
        )
    inventory = RecordingInventory()
    product = await handlers.create_product(
        store, inventory, command(initial_stock=3, request_id="r1")
    )
    assert list(store.products) == [product.id]
    assert inventory.calls == [(product.id, 3, f"{product.id}:initial")]


async def test_a_product_without_initial_stock_gets_a_zero_stock_level() -> None:
    inventory = RecordingInventory()
    product = await handlers.create_product(MemoryCatalog(), inventory, command())
    assert inventory.calls == [(product.id, 0, f"{product.id}:initial")]


async def test_negative_initial_stock_is_refused_before_anything_is_stored() -> None:
    store = MemoryCatalog()
    with pytest.raises(InvalidArgument):
        await handlers.create_product(store, RecordingInventory(), command(initial_stock=-1))
    assert store.products == {}


async def test_page_size_is_capped_and_pages_chain() -> None:
    store = MemoryCatalog()
    for i in range(3):
        await handlers.create_product(store, RecordingInventory(), command(name=f"P{i}"))
    first = await handlers.list_products(store, handlers.ListProducts("", 2, ""))
    second = await handlers.list_products(
        store, handlers.ListProducts("", 2, first.next_page_token)
    )
    assert len(first.products) == 2
    assert len(second.products) == 1
    assert second.next_page_token == ""


async def test_batch_get_names_the_first_missing_id() -> None:
    with pytest.raises(NotFound) as missing:
        await handlers.batch_get_products(MemoryCatalog(), ["a"])
    assert missing.value.metadata == {"product_id": "a"}
