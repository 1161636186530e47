"""The catalog's rules and use cases, with an in-memory store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from mesh.runtime.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from mesh.runtime.money import Money
from services.catalog import handlers
from services.catalog.domain import new_product, updated_product
from tests.support.memory_catalog import MemoryCatalog, RecordingInventory

NOW = datetime.fromisoformat("2026-11-26T10:00:00+00:00")


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
        weight_grams=100,
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
        weight_grams=100,
        now=NOW,
    )
    with pytest.raises(InvalidArgument):
        updated_product(product, {"id": "other"}, NOW)


@pytest.mark.parametrize("weight_grams", [0, -1, 31_501])
def test_a_product_must_weigh_what_one_parcel_can_carry(weight_grams: int) -> None:
    """Every order is shipped: shipping would refuse the parcel after the payment."""
    with pytest.raises(InvalidArgument) as refused:
        new_product(
            name="Tea", description="", price=Money("EUR", 1), category="food",
            weight_grams=weight_grams, now=NOW,
        )  # fmt: skip
    assert [v.field for v in refused.value.violations] == ["product.weight_grams"]
    kept = new_product(
        name="Tea", description="", price=Money("EUR", 1), category="food",
        weight_grams=31_500, now=NOW,
    )  # fmt: skip
    with pytest.raises(InvalidArgument):
        updated_product(kept, {"weight_grams": 0}, NOW)


async def test_a_product_takes_the_id_its_creator_chose_once() -> None:
    store, inventory = MemoryCatalog(), RecordingInventory()
    product = await handlers.create_product(store, inventory, command(product_id="green-tea"))
    assert product.id == "green-tea"
    with pytest.raises(AlreadyExists) as taken:
        await handlers.create_product(store, inventory, command(product_id="green-tea"))
    assert taken.value.reason == "PRODUCT_ALREADY_EXISTS"
    assert list(store.products) == ["green-tea"]


@pytest.mark.parametrize(
    "chosen", ["Green-Tea", "-tea", "tea-", "tea/leaf", "t" * 37, "té"], ids=repr
)
async def test_an_id_no_product_may_have_is_refused(chosen: str) -> None:
    store = MemoryCatalog()
    with pytest.raises(InvalidArgument) as refused:
        await handlers.create_product(store, RecordingInventory(), command(product_id=chosen))
    assert [v.field for v in refused.value.violations] == ["product_id"]
    assert store.products == {}


async def test_a_chosen_id_may_be_a_uuid_or_a_single_character() -> None:
    store, inventory = MemoryCatalog(), RecordingInventory()
    for chosen in ("0b5e1c3e-6d3c-4f44-9a0e-8d1c2b7a9f10", "t"):
        product = await handlers.create_product(store, inventory, command(product_id=chosen))
        assert product.id == chosen


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
