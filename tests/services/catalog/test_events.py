"""What the catalog publishes of its products' changes: the product's whole state after
each change, on its product's own subject, in the change's transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from mesh.runtime.money import Money
from mesh.runtime.storage import event_subject, subject_filter
from services.catalog import handlers
from shop.events.v1 import events_pb2
from tests.support.memory_catalog import MemoryCatalog, RecordingInventory


def _create() -> handlers.CreateProduct:
    return handlers.CreateProduct(
        name="Tea", description="Green, loose leaf.", price=Money("EUR", 900),
        category="tea", weight_grams=100, initial_stock=5, request_id="r1",
    )  # fmt: skip


async def test_each_change_publishes_the_product_after_it() -> None:
    store = MemoryCatalog()
    product = await handlers.create_product(store, RecordingInventory(), _create())
    await handlers.create_product(store, RecordingInventory(), _create())  # a retry
    changed = handlers.UpdateProduct(product.id, {"price": Money("EUR", 950)}, "r2")
    await handlers.update_product(store, changed)
    await handlers.delete_product(store, product.id, "r3")
    kinds = [e.WhichOneof("payload") for e in store.events]
    assert kinds == ["product_created", "product_updated", "product_deleted"]
    created, updated, deleted = store.events
    assert created.product_created.product.revision == 1
    assert created.product_created.product.name == "Tea"
    assert updated.product_updated.product.price.units == 9
    assert updated.product_updated.product.price.nanos == 500_000_000
    assert updated.product_updated.product.revision == 2
    assert list(updated.product_updated.changed_fields) == ["price"]
    assert deleted.product_deleted.revision == 3
    assert {e.entity_id for e in store.events} == {product.id}
    assert {e.order_id for e in store.events} == {""}
    assert event_subject(updated) == f"shop.catalog.product_updated.{product.id}"
    assert subject_filter(event_subject(updated)) == "shop.catalog.product_updated.*"


def test_an_event_kept_per_entity_needs_its_entity_and_only_it_one() -> None:
    keyed = events_pb2.EventEnvelope(event_id="e", producer="catalog")
    keyed.product_deleted.product_id = "p"
    with pytest.raises(ValueError, match="entity id"):
        event_subject(keyed)
    keyed.entity_id = "p.>"
    with pytest.raises(ValueError, match="subject token"):
        event_subject(keyed)
    saga = events_pb2.EventEnvelope(event_id="e", producer="orders", entity_id="o1")
    saga.order_confirmed.order_id = "o1"
    with pytest.raises(ValueError, match="entity id"):
        event_subject(saga)


async def test_the_products_from_before_the_events_are_announced_once() -> None:
    """A catalog upgraded with products in it: each gets one ProductCreated, at the first
    start only, so search finds them too."""
    store = MemoryCatalog()
    first = await handlers.create_product(store, RecordingInventory(), _create())
    older = replace(first, id="older", create_time=first.create_time - timedelta(days=1))
    store.products["older"] = older
    store.events.clear()  # as if the catalog had published nothing
    assert await handlers.announce_existing_products(store) == 2
    assert [e.entity_id for e in store.events] == ["older", first.id]
    assert {e.WhichOneof("payload") for e in store.events} == {"product_created"}
    assert await handlers.announce_existing_products(store) == 0
    assert len(store.events) == 2
