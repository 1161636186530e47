"""The catalog's events: each change of a product, with the product's whole state after it.

They are kept per product (`latest_per_entity` in the contract): published on
`shop.catalog.<event>.<product_id>`, and the bus keeps the latest of each kind of every
product for good, so a read model (the search service's) can be rebuilt from them.
"""

from __future__ import annotations

from collections.abc import Iterable

from mesh.runtime.events import new_event
from mesh.runtime.timestamps import to_timestamp
from services.catalog.domain import Product
from shop.events.v1 import events_pb2

#: The producer name in the catalog's event subjects: `shop.catalog.<event>.<product_id>`.
PRODUCER = "catalog"


def _state(product: Product) -> events_pb2.CatalogProduct:
    return events_pb2.CatalogProduct(
        product_id=product.id,
        name=product.name,
        description=product.description,
        price=product.price.to_proto(),
        category=product.category,
        weight_grams=product.weight_grams,
        create_time=to_timestamp(product.create_time),
        update_time=to_timestamp(product.update_time),
        revision=product.revision,
    )


def product_created(product: Product) -> events_pb2.EventEnvelope:
    created = events_pb2.ProductCreated(product=_state(product))
    return new_event(PRODUCER, "", created, entity_id=product.id)


def product_updated(product: Product, changed: Iterable[str]) -> events_pb2.EventEnvelope:
    updated = events_pb2.ProductUpdated(product=_state(product), changed_fields=sorted(changed))
    return new_event(PRODUCER, "", updated, entity_id=product.id)


def product_deleted(product: Product) -> events_pb2.EventEnvelope:
    """The removal of `product`, one revision after its last change."""
    deleted = events_pb2.ProductDeleted(product_id=product.id, revision=product.revision + 1)
    return new_event(PRODUCER, "", deleted, entity_id=product.id)
