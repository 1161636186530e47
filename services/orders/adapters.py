"""The orders' adapters: their SQL tables and store, and their client of the catalog."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import grpc
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.runtime.errors import Unavailable
from mesh.runtime.money import Money, MoneyError
from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    keyset_page,
    whole_row_parameters,
    whole_row_update,
)
from services.orders.domain import (
    Order,
    OrderLine,
    OrderStatus,
    PricedProduct,
    ProductNotInCatalog,
    SagaStep,
    ShippingAddress,
    StepOutcome,
)
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc

MIGRATIONS = (
    Migration(
        1,
        "orders, their lines and their saga history",
        [
            """
            CREATE TABLE orders (
                id VARCHAR(36) PRIMARY KEY,
                customer_id VARCHAR(128) NOT NULL CHECK (length(customer_id) > 0),
                status VARCHAR(16) NOT NULL
                    CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
                cancel_reason TEXT NOT NULL,
                shipping_address TEXT NOT NULL,
                payment_token TEXT NOT NULL,
                payment_id VARCHAR(64) NOT NULL,
                shipment_id VARCHAR(64) NOT NULL,
                tracking_number VARCHAR(64) NOT NULL,
                create_time TIMESTAMP NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX orders_by_customer ON orders (customer_id, create_time, id)",
            """
            CREATE TABLE order_lines (
                order_id VARCHAR(36) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
                position INTEGER NOT NULL CHECK (position >= 0),
                product_id VARCHAR(36) NOT NULL,
                product_name VARCHAR(200) NOT NULL,
                quantity INTEGER NOT NULL CHECK (quantity > 0),
                unit_price_currency CHAR(3) NOT NULL,
                unit_price_minor_units BIGINT NOT NULL CHECK (unit_price_minor_units >= 0),
                PRIMARY KEY (order_id, position),
                UNIQUE (order_id, product_id)
            )
            """,
            """
            CREATE TABLE order_history (
                order_id VARCHAR(36) NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
                position INTEGER NOT NULL CHECK (position >= 0),
                name VARCHAR(64) NOT NULL CHECK (length(name) > 0),
                outcome VARCHAR(16) NOT NULL
                    CHECK (outcome IN ('SUCCEEDED', 'FAILED', 'COMPENSATED')),
                detail TEXT NOT NULL,
                time TIMESTAMP NOT NULL,
                PRIMARY KEY (order_id, position)
            )
            """,
        ],
    ),
    Migration(
        2,
        "the PENDING orders by time, in all and by customer: the backlog of sagas",
        [
            "CREATE INDEX orders_pending ON orders (create_time) WHERE status = 'PENDING'",
            """
            CREATE INDEX orders_pending_by_customer ON orders (customer_id, create_time)
                WHERE status = 'PENDING'
            """,
        ],
    ),
)

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("customer_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cancel_reason", sa.Text, nullable=False),
    sa.Column("shipping_address", sa.Text, nullable=False),
    sa.Column("payment_token", sa.Text, nullable=False),
    sa.Column("payment_id", sa.String(64), nullable=False),
    sa.Column("shipment_id", sa.String(64), nullable=False),
    sa.Column("tracking_number", sa.String(64), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)
order_lines = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.String(36), nullable=False),
    sa.Column("product_name", sa.String(200), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("unit_price_currency", sa.String(3), nullable=False),
    sa.Column("unit_price_minor_units", sa.BigInteger, nullable=False),
)
order_history = sa.Table(
    "order_history",
    metadata,
    sa.Column("order_id", sa.String(36), sa.ForeignKey("orders.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("time", UtcDateTime, nullable=False),
)


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "cancel_reason": order.cancel_reason,
        "shipping_address": json.dumps(asdict(order.shipping_address)),
        "payment_token": order.payment_token,
        "payment_id": order.payment_id,
        "shipment_id": order.shipment_id,
        "tracking_number": order.tracking_number,
        "create_time": order.create_time,
        "update_time": order.update_time,
    }


def _line_rows(order: Order) -> list[dict[str, Any]]:
    return [
        {
            "order_id": order.id,
            "position": position,
            "product_id": line.product_id,
            "product_name": line.product_name,
            "quantity": line.quantity,
            "unit_price_currency": line.unit_price.currency,
            "unit_price_minor_units": line.unit_price.minor_units,
        }
        for position, line in enumerate(order.lines)
    ]


def _step_rows(order: Order, start: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": order.id,
            "position": position,
            "name": step.name,
            "outcome": step.outcome.value,
            "detail": step.detail,
            "time": step.time,
        }
        for position, step in enumerate(order.history)
        if position >= start
    ]


def _address(text: str) -> ShippingAddress:
    fields = json.loads(text)
    fields["address_lines"] = tuple(fields["address_lines"])
    fields["recipients"] = tuple(fields["recipients"])
    return ShippingAddress(**fields)


def _order(row: sa.Row[Any], lines: list[sa.Row[Any]], steps: list[sa.Row[Any]]) -> Order:
    return Order(
        id=row.id,
        customer_id=row.customer_id,
        lines=tuple(
            OrderLine(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price=Money(line.unit_price_currency, line.unit_price_minor_units),
            )
            for line in lines
        ),
        shipping_address=_address(row.shipping_address),
        payment_token=row.payment_token,
        status=OrderStatus(row.status),
        cancel_reason=row.cancel_reason,
        history=tuple(
            SagaStep(step.name, StepOutcome(step.outcome), step.detail, step.time) for step in steps
        ),
        create_time=row.create_time,
        update_time=row.update_time,
        payment_id=row.payment_id,
        shipment_id=row.shipment_id,
        tracking_number=row.tracking_number,
    )


#: The statements of the saga's hot path, built once (see `mesh.runtime.storage`).
_GET = orders.select().where(orders.c.id == sa.bindparam("order_id"))
_ADD = orders.insert()
_ADD_LINES = order_lines.insert()
_ADD_STEPS = order_history.insert()
_LINES = (
    order_lines.select()
    .where(order_lines.c.order_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(order_lines.c.order_id, order_lines.c.position)
)
_STEPS = (
    order_history.select()
    .where(order_history.c.order_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(order_history.c.order_id, order_history.c.position)
)
_STEP_COUNT = (
    sa.select(sa.func.count())
    .select_from(order_history)
    .where(order_history.c.order_id == sa.bindparam("order_id"))
)
_PENDING = (
    sa.select(orders.c.id)
    .where(orders.c.status == OrderStatus.PENDING.value)
    .where(orders.c.create_time >= sa.bindparam("since"))
    .limit(sa.bindparam("limit"))
)
_COUNT_PENDING = sa.select(sa.func.count()).select_from(_PENDING.subquery())
_COUNT_PENDING_OF = sa.select(sa.func.count()).select_from(
    _PENDING.where(orders.c.customer_id == sa.bindparam("customer_id")).subquery()
)
#: The row's columns come from the parameters; its id and `b_was` pick the row.
_SAVE = whole_row_update(orders, orders.c.status == sa.bindparam("b_was"))


class SqlOrdersTransaction(SqlTransaction):
    """The orders, order_lines and order_history tables, inside one transaction."""

    async def _load(self, rows: Sequence[sa.Row[Any]]) -> list[Order]:
        """The orders of `rows`, each with its lines and history (three queries in all)."""
        ids = [row.id for row in rows]
        if not ids:
            return []
        lines: dict[str, list[sa.Row[Any]]] = defaultdict(list)
        for line in await self._connection.execute(_LINES, {"ids": ids}):
            lines[line.order_id].append(line)
        steps: dict[str, list[sa.Row[Any]]] = defaultdict(list)
        for step in await self._connection.execute(_STEPS, {"ids": ids}):
            steps[step.order_id].append(step)
        return [_order(row, lines[row.id], steps[row.id]) for row in rows]

    async def get(self, order_id: str) -> Order | None:
        row = (await self._connection.execute(_GET, {"order_id": order_id})).first()
        return None if row is None else (await self._load([row]))[0]

    async def add(self, order: Order) -> None:
        await self._connection.execute(_ADD, _order_row(order))
        await self._connection.execute(_ADD_LINES, _line_rows(order))
        await self._connection.execute(_ADD_STEPS, _step_rows(order, 0))

    async def save(self, order: Order, *, was: OrderStatus) -> bool:
        result = await self._connection.execute(
            _SAVE, whole_row_parameters(_order_row(order), b_was=was.value)
        )
        if result.rowcount == 0:
            return False
        counted = await self._connection.execute(_STEP_COUNT, {"order_id": order.id})
        stored = counted.scalar_one()
        new_steps = _step_rows(order, stored)
        if new_steps:
            await self._connection.execute(_ADD_STEPS, new_steps)
        return True

    async def count_pending(
        self, placed_since: datetime, limit: int, customer_id: str | None = None
    ) -> int:
        parameters = {"since": placed_since, "limit": limit}
        if customer_id is None:
            counted = await self._connection.execute(_COUNT_PENDING, parameters)
        else:
            counted = await self._connection.execute(
                _COUNT_PENDING_OF, {**parameters, "customer_id": customer_id}
            )
        return int(counted.scalar_one())

    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Order]:
        query = keyset_page(orders, before, limit, newest_first=True).where(
            orders.c.customer_id == customer_id
        )
        return await self._load(list(await self._connection.execute(query)))


class SqlOrdersStore(SqlStore[SqlOrdersTransaction]):
    """The orders' database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlOrdersTransaction)


def _missing_product(error: grpc.aio.AioRpcError) -> str:
    """The product id the catalog's NOT_FOUND names in its ErrorInfo ("" if none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.metadata.get("product_id", ""))
    return ""


class GrpcCatalog:
    """The catalog service over gRPC."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = catalog_grpc.CatalogServiceStub(channel)

    async def products(self, ids: Sequence[str]) -> dict[str, PricedProduct]:
        try:
            response = await self._stub.BatchGetProducts(
                catalog_pb.BatchGetProductsRequest(ids=list(ids)), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise ProductNotInCatalog(_missing_product(error)) from error
            raise Unavailable(
                "the catalog could not price the order; retry later",
                reason="CATALOG_UNAVAILABLE",
            ) from error
        try:
            return {
                product.id: PricedProduct(
                    product.id, product.name, Money.from_proto(product.price), product.weight_grams
                )
                for product in response.products
            }
        except MoneyError as error:
            raise Unavailable(
                "the catalog returned a price orders cannot use",
                reason="CATALOG_UNAVAILABLE",
            ) from error
