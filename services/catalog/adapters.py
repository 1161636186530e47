"""The catalog's adapters: its SQL tables and store, and its client of the inventory service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import grpc
import sqlalchemy as sa

from mesh.runtime import deadlines
from mesh.runtime.circuit import Circuit, CircuitOpen, Outcome
from mesh.runtime.errors import Unavailable
from mesh.runtime.money import Money
from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    keyset_page,
    utc_now,
    whole_row_parameters,
    whole_row_update,
)
from services.catalog.domain import Product
from services.catalog.ports import InventoryUnreachable
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc

MIGRATIONS = (
    Migration(
        1,
        "products",
        [
            """
            CREATE TABLE products (
                id VARCHAR(36) PRIMARY KEY,
                name VARCHAR(200) NOT NULL CHECK (length(name) > 0),
                description TEXT NOT NULL,
                price_currency CHAR(3) NOT NULL,
                price_minor_units BIGINT NOT NULL CHECK (price_minor_units > 0),
                category VARCHAR(64) NOT NULL,
                weight_grams INTEGER NOT NULL CHECK (weight_grams >= 0),
                create_time TIMESTAMP NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX products_by_creation ON products (create_time, id)",
            "CREATE INDEX products_by_category ON products (category, create_time, id)",
        ],
    ),
    Migration(
        2,
        "each product's revision, for the events that report its changes",
        ["ALTER TABLE products ADD COLUMN revision BIGINT NOT NULL DEFAULT 1"],
    ),
    Migration(
        3,
        "the catalog's one-off announcements of what it held before it published events",
        [
            """
            CREATE TABLE catalog_announcements (
                name VARCHAR(64) PRIMARY KEY,
                announce_time TIMESTAMP NOT NULL
            )
            """
        ],
    ),
)

metadata = sa.MetaData()
products = sa.Table(
    "products",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("price_currency", sa.String(3), nullable=False),
    sa.Column("price_minor_units", sa.BigInteger, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("weight_grams", sa.Integer, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
)
announcements = sa.Table(
    "catalog_announcements",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("announce_time", UtcDateTime, nullable=False),
)


def _row(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price_currency": product.price.currency,
        "price_minor_units": product.price.minor_units,
        "category": product.category,
        "weight_grams": product.weight_grams,
        "create_time": product.create_time,
        "update_time": product.update_time,
        "revision": product.revision,
    }


def _product(row: sa.Row[Any]) -> Product:
    return Product(
        id=row.id,
        name=row.name,
        description=row.description,
        price=Money(row.price_currency, row.price_minor_units),
        category=row.category,
        weight_grams=row.weight_grams,
        create_time=row.create_time,
        update_time=row.update_time,
        revision=row.revision,
    )


#: The catalog's statements, built once (see `mesh.runtime.storage`).
_GET = products.select().where(products.c.id == sa.bindparam("product_id"))
_GET_MANY = products.select().where(products.c.id.in_(sa.bindparam("ids", expanding=True)))
_ADD = products.insert()
_SAVE = whole_row_update(products)
_DELETE = products.delete().where(products.c.id == sa.bindparam("product_id"))


class SqlCatalogTransaction(SqlTransaction):
    """The products table, inside one transaction."""

    async def get(self, product_id: str) -> Product | None:
        row = (await self._connection.execute(_GET, {"product_id": product_id})).first()
        return None if row is None else _product(row)

    async def get_many(self, product_ids: list[str]) -> list[Product]:
        rows = await self._connection.execute(_GET_MANY, {"ids": product_ids})
        return [_product(row) for row in rows]

    async def add(self, product: Product) -> None:
        await self._connection.execute(_ADD, _row(product))

    async def save(self, product: Product) -> None:
        await self._connection.execute(_SAVE, whole_row_parameters(_row(product)))

    async def delete(self, product_id: str) -> bool:
        result = await self._connection.execute(_DELETE, {"product_id": product_id})
        return result.rowcount > 0

    async def page(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Product]:
        query = keyset_page(products, after, limit, newest_first=False)
        if category:
            query = query.where(products.c.category == category)
        return [_product(row) for row in await self._connection.execute(query)]

    async def announced(self, name: str) -> bool:
        found = await self._connection.execute(
            sa.select(announcements.c.name).where(announcements.c.name == name)
        )
        return found.first() is not None

    async def record_announcement(self, name: str) -> None:
        await self._connection.execute(
            announcements.insert().values(name=name, announce_time=utc_now())
        )


class SqlCatalogStore(SqlStore[SqlCatalogTransaction]):
    """The catalog's database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlCatalogTransaction)


#: The longest a read waits for the stock levels of its products before it answers
#: without them. A read of a few rows takes milliseconds, and an inventory that is gone
#: is known at once; one that hangs only by this timeout, which must leave the read's own
#: caller time for the answer: the edge gives each try of a cheap read 1 s
#: (`defaults.retries.per_try_timeout` in mesh.yaml) and then tries again.
STOCK_READ_SECONDS = 0.5
#: What a read keeps of its own deadline to answer without stock levels after waiting for
#: them: its caller hears the degraded answer rather than DEADLINE_EXCEEDED.
ANSWER_RESERVE_SECONDS = 0.25
#: What inventory's calls end with when it did not answer: stopped, unreachable, at its
#: limit (the sidecars answer UNAVAILABLE for all three), or out of the time given.
_UNANSWERED = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def stock_read_timeout() -> float:
    """The time a stock read is given: `STOCK_READ_SECONDS`, less when the read being
    served has less left than that and its reserve."""
    left = deadlines.remaining()
    if left is None:
        return STOCK_READ_SECONDS
    return max(0.0, min(STOCK_READ_SECONDS, left - ANSWER_RESERVE_SECONDS))


def stock_read_outcome(failure: BaseException) -> Outcome:
    """What a failed stock read tells of inventory: it did not answer (`_UNANSWERED`,
    but not because the served read's own time ran out), the read ended for reasons
    of the catalog's own (its deadline, a cancellation), or inventory answered."""
    if not isinstance(failure, grpc.aio.AioRpcError):
        return Outcome.NOTHING
    if deadlines.ran_out(failure):
        return Outcome.NOTHING
    if failure.code() in _UNANSWERED:
        return Outcome.UNANSWERED
    return Outcome.ANSWERED


def stock_read_failure(error: grpc.aio.AioRpcError) -> Exception:
    """What a failed stock read raises: `InventoryUnreachable` when inventory did not
    answer, for a read to do without; any other failure, or the served read's own time
    running out, as the error every call to inventory gives (DEADLINE_EXCEEDED for the
    latter: `mesh.runtime.deadlines.ran_out`)."""
    if stock_read_outcome(error) is Outcome.UNANSWERED:
        return InventoryUnreachable(error.code().name)
    return Unavailable(
        "the stock levels could not be read from the inventory service",
        reason="INVENTORY_UNAVAILABLE",
    )


class GrpcStockLevels:
    """The inventory service over gRPC."""

    def __init__(self, channel: grpc.aio.Channel, stock_reads: Circuit | None = None) -> None:
        self._stub = inventory_grpc.InventoryServiceStub(channel)
        #: Stock reads stop asking an inventory that stopped answering them.
        self._stock_reads = stock_reads or Circuit("inventory", stock_read_outcome)

    async def set_stock(self, product_id: str, on_hand: int, request_id: str) -> None:
        request = inventory_pb.SetStockRequest(
            product_id=product_id, on_hand=on_hand, request_id=request_id
        )
        try:
            await self._stub.SetStock(request, timeout=5)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                "the product was created, but its stock could not be set; "
                "retry with the same request_id",
                reason="INVENTORY_UNAVAILABLE",
                metadata={"product_id": product_id},
            ) from error

    async def available(self, product_ids: Sequence[str]) -> dict[str, int]:
        request = inventory_pb.BatchGetStockRequest(product_ids=list(product_ids))
        try:
            with self._stock_reads.calling():
                response = await self._stub.BatchGetStock(request, timeout=stock_read_timeout())
        except CircuitOpen as not_called:
            raise InventoryUnreachable(str(not_called)) from None
        except grpc.aio.AioRpcError as error:
            raise stock_read_failure(error) from error
        return {level.product_id: level.available for level in response.stocks}
