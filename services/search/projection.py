"""Search's read model of the catalog, projected from the catalog's events.

* `ProductCreated`, `ProductUpdated` -> the product's state at that revision, with the
  embedding of its text (computed before the event's transaction, off the event loop).
* `ProductDeleted` -> a tombstone at the removal's revision.

Every live generation takes each change (`handlers.apply_change`): the serving one, and
one a rebuild is building (`services.search.rebuild`), so neither misses a change made
while the other catches up. A product keeps its highest revision, so a redelivered or
late event changes nothing, beside the consumer's own record of applied events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.events import subject
from mesh.runtime.money import Money
from services.search.domain import IndexedProduct
from services.search.handlers import SemanticIndex, apply_change
from services.search.ports import SearchStore
from shop.events.v1 import events_pb2

#: What search consumes: the subjects its consumer filters on (mesh.yaml `consumes:`).
SUBJECTS = [
    subject("catalog", event) for event in ("product_created", "product_updated", "product_deleted")
]


def _state(product: events_pb2.CatalogProduct) -> IndexedProduct:
    return IndexedProduct(
        product_id=product.product_id,
        revision=product.revision,
        name=product.name,
        description=product.description,
        category=product.category,
        price=Money.from_proto(product.price),
    )


def indexed(envelope: events_pb2.EventEnvelope) -> IndexedProduct:
    """The product as an event of the catalog leaves it."""
    kind = envelope.WhichOneof("payload")
    if kind == "product_created":
        return _state(envelope.product_created.product)
    if kind == "product_updated":
        return _state(envelope.product_updated.product)
    if kind == "product_deleted":
        removed = envelope.product_deleted
        return IndexedProduct(removed.product_id, removed.revision, deleted=True)
    raise ValueError(f"search does not project {kind} events")


async def embeddings_of(
    index: SemanticIndex, products: Sequence[IndexedProduct]
) -> list[list[float] | None]:
    """The embedding of each product's text; None for a tombstone, or without a model."""
    texts = [p.text for p in products if not p.deleted]
    vectors = await index.embed_all(texts) if texts else None
    if vectors is None:
        return [None] * len(products)
    rows = iter(vectors.tolist())
    return [None if p.deleted else next(rows) for p in products]


def handlers(
    joined: Callable[[Connection], SearchStore], index: SemanticIndex
) -> dict[str, Handler]:
    """The handler of each subject search consumes: each keeps the product it reports."""

    async def project(delivery: Delivery) -> None:
        product = indexed(delivery.envelope)
        (embedding,) = await embeddings_of(index, [product])
        async with delivery.transaction() as connection:
            await apply_change(joined(connection), product, embedding)

    return dict.fromkeys(SUBJECTS, project)
