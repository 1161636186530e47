"""The catalog's use cases: each takes a command and the store, and returns domain objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mesh.runtime.degradation import degraded
from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.money import Money
from mesh.runtime.pagination import page_size
from mesh.runtime.storage import utc_now
from services.catalog import messages
from services.catalog.domain import (
    Product,
    new_product,
    product_exists,
    product_not_found,
    updated_product,
)
from services.catalog.ports import CatalogStore, InventoryUnreachable, StockLevels

MAX_BATCH = 100


@dataclass(frozen=True)
class CreateProduct:
    name: str
    description: str
    price: Money
    category: str
    weight_grams: int
    initial_stock: int
    request_id: str
    product_id: str = ""
    """The id the client chose (API v2); empty for a fresh UUID."""


@dataclass(frozen=True)
class UpdateProduct:
    product_id: str
    changes: dict[str, object]
    request_id: str


@dataclass(frozen=True)
class ListProducts:
    category: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class ProductPage:
    products: list[Product]
    next_page_token: str


@dataclass(frozen=True)
class StockReading:
    """The stock levels of the products of one answer: the units available by product id,
    or none at all when the inventory service did not answer (`unreachable`)."""

    available: Mapping[str, int]
    unreachable: bool = False

    def available_of(self, product_id: str) -> int:
        """The units of a product that can be ordered: none if inventory holds no stock."""
        return self.available.get(product_id, 0)


async def create_product(
    store: CatalogStore, inventory: StockLevels, command: CreateProduct
) -> Product:
    """Create a product, then give it its initial stock (zero if none) in the inventory service.

    The stock is set after the product is committed, under a request id derived from the
    product: if inventory cannot be reached the caller gets the error, and a retry with
    the same `request_id` finds the product already created and sets the stock again.
    An id the client chose that another product has is ALREADY_EXISTS (AIP-133).
    """
    if command.initial_stock < 0:
        raise InvalidArgument.of(
            [FieldViolation("initial_stock", "The initial stock must not be negative.")]
        )
    async with store.transaction() as tx:
        prior = await tx.find_request("CreateProduct", command.request_id)
        product = await tx.get(prior["product_id"]) if prior else None
        if product is None:
            product = new_product(
                name=command.name,
                description=command.description,
                price=command.price,
                category=command.category,
                weight_grams=command.weight_grams,
                now=utc_now(),
                product_id=command.product_id,
            )
            if command.product_id and await tx.get(product.id) is not None:
                raise product_exists(product.id)
            await tx.add(product)
            await tx.enqueue_event(messages.product_created(product))
            await tx.record_request("CreateProduct", command.request_id, {"product_id": product.id})
    # Every product gets a stock row, so its stock link resolves from the start.
    await inventory.set_stock(product.id, command.initial_stock, f"{product.id}:initial")
    return product


#: The announcement of the products the catalog held before it published its changes.
PRODUCTS_BEFORE_EVENTS = "products-before-events"
#: Products read per page while they are announced.
_ANNOUNCE_PAGE = 500


async def announce_existing_products(store: CatalogStore) -> int:
    """Publish a ProductCreated for every product the catalog holds, once in its life: the
    products it had before it published its changes would otherwise never reach a read
    model of them (search). The first start after the upgrade does it, in one
    transaction; every later start, and a new catalog, finds it done. How many it
    announced."""
    async with store.transaction() as tx:
        if await tx.announced(PRODUCTS_BEFORE_EVENTS):
            return 0
        count, after = 0, None
        while page := await tx.page("", after, _ANNOUNCE_PAGE):
            for product in page:
                await tx.enqueue_event(messages.product_created(product))
            count += len(page)
            after = (page[-1].create_time, page[-1].id)
        await tx.record_announcement(PRODUCTS_BEFORE_EVENTS)
    return count


async def get_product(store: CatalogStore, product_id: str) -> Product:
    async with store.snapshot() as tx:
        product = await tx.get(product_id)
    if product is None:
        raise product_not_found(product_id)
    return product


async def batch_get_products(store: CatalogStore, product_ids: list[str]) -> list[Product]:
    """The products with these ids, in the order asked; NOT_FOUND names any missing one."""
    if len(product_ids) > MAX_BATCH:
        raise InvalidArgument.of(
            [FieldViolation("ids", f"At most {MAX_BATCH} ids may be asked for at once.")]
        )
    async with store.snapshot() as tx:
        found = {p.id: p for p in await tx.get_many(sorted(set(product_ids)))}
    missing = [pid for pid in product_ids if pid not in found]
    if missing:
        raise product_not_found(missing[0])
    return [found[pid] for pid in product_ids]


async def list_products(store: CatalogStore, query: ListProducts) -> ProductPage:
    """One page of products, oldest first, continuing after the page token."""
    limit = page_size(query.page_size)
    filters = {"category": query.category}
    cursor = store.page_tokens.decode_time_cursor(query.page_token, filters)
    async with store.snapshot() as tx:
        rows = await tx.page(query.category, cursor, limit + 1)
    products, more = rows[:limit], len(rows) > limit
    last = products[-1] if more else None
    token = store.page_tokens.encode_time_cursor(last.create_time, last.id, filters) if last else ""
    return ProductPage(products, token)


async def update_product(store: CatalogStore, command: UpdateProduct) -> Product:
    async with store.transaction() as tx:
        prior = await tx.find_request("UpdateProduct", command.request_id)
        if prior:
            product = await tx.get(prior["product_id"])
            if product is not None:
                return product
        current = await tx.get(command.product_id)
        if current is None:
            raise product_not_found(command.product_id)
        product = updated_product(current, command.changes, utc_now())
        await tx.save(product)
        await tx.enqueue_event(messages.product_updated(product, command.changes))
        await tx.record_request("UpdateProduct", command.request_id, {"product_id": product.id})
    return product


async def delete_product(store: CatalogStore, product_id: str, request_id: str) -> None:
    """Delete a product; a retry of a delete that succeeded succeeds again."""
    async with store.transaction() as tx:
        if await tx.find_request("DeleteProduct", request_id):
            return
        product = await tx.get(product_id)
        if product is None or not await tx.delete(product_id):
            raise product_not_found(product_id)
        await tx.enqueue_event(messages.product_deleted(product))
        await tx.record_request("DeleteProduct", request_id, {"product_id": product_id})


async def read_stock(
    inventory: StockLevels, products: Sequence[Product], method: str
) -> StockReading:
    """The stock levels of `products`, read from the inventory service in one call.

    When inventory does not answer in time, `method` (the read being served) answers
    without them, on purpose: the reading is `unreachable`, and `degraded` counts it and
    says so in the log. Any other failure of inventory is raised.
    """
    product_ids = list(dict.fromkeys(product.id for product in products))
    if not product_ids:
        return StockReading({})
    try:
        return StockReading(await inventory.available(product_ids))
    except InventoryUnreachable as failure:
        fallback = f"{len(product_ids)} product(s) without stock levels, not to be cached"
        degraded("inventory", method, fallback, str(failure))
        return StockReading({}, unreachable=True)
