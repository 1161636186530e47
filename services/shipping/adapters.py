"""Shipping's adapters: its SQL tables and store."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa

from mesh.runtime.money import Money
from mesh.runtime.storage import (
    Database,
    Migration,
    SqlStore,
    SqlTransaction,
    UtcDateTime,
    whole_row_parameters,
    whole_row_update,
)
from services.shipping.domain import Destination, Shipment, ShipmentStatus

MIGRATIONS = (
    Migration(
        1,
        "shipments",
        [
            """
            CREATE TABLE shipments (
                id VARCHAR(36) PRIMARY KEY,
                order_id VARCHAR(64) NOT NULL UNIQUE CHECK (length(order_id) > 0),
                destination TEXT NOT NULL,
                region_code CHAR(2) NOT NULL CHECK (length(region_code) = 2),
                weight_grams INTEGER NOT NULL CHECK (weight_grams > 0),
                cost_currency CHAR(3) NOT NULL,
                cost_minor_units BIGINT NOT NULL CHECK (cost_minor_units >= 0),
                carrier VARCHAR(64) NOT NULL CHECK (length(carrier) > 0),
                tracking_number VARCHAR(15) NOT NULL UNIQUE
                    CHECK (length(tracking_number) = 15 AND substr(tracking_number, 1, 3) = 'SHP'),
                status VARCHAR(16) NOT NULL CHECK (status IN ('SCHEDULED', 'CANCELLED')),
                cancel_reason TEXT NOT NULL,
                create_time TIMESTAMP NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
        ],
    ),
    Migration(
        2,
        "shipments owned by a customer",
        ["ALTER TABLE shipments ADD COLUMN customer_id VARCHAR(64) NOT NULL DEFAULT ''"],
    ),
)

metadata = sa.MetaData()
shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("destination", sa.Text, nullable=False),
    sa.Column("region_code", sa.String(2), nullable=False),
    sa.Column("weight_grams", sa.Integer, nullable=False),
    sa.Column("cost_currency", sa.String(3), nullable=False),
    sa.Column("cost_minor_units", sa.BigInteger, nullable=False),
    sa.Column("carrier", sa.String(64), nullable=False),
    sa.Column("tracking_number", sa.String(15), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("cancel_reason", sa.Text, nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
)


def _row(shipment: Shipment) -> dict[str, Any]:
    return {
        "id": shipment.id,
        "order_id": shipment.order_id,
        "customer_id": shipment.customer_id,
        "destination": json.dumps(asdict(shipment.destination)),
        "region_code": shipment.destination.region_code,
        "weight_grams": shipment.weight_grams,
        "cost_currency": shipment.cost.currency,
        "cost_minor_units": shipment.cost.minor_units,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "status": shipment.status.value,
        "cancel_reason": shipment.cancel_reason,
        "create_time": shipment.create_time,
        "update_time": shipment.update_time,
    }


def _destination(stored: str) -> Destination:
    fields = json.loads(stored)
    return Destination(
        **{
            **fields,
            "address_lines": tuple(fields["address_lines"]),
            "recipients": tuple(fields["recipients"]),
        }
    )


def _shipment(row: sa.Row[Any]) -> Shipment:
    return Shipment(
        id=row.id,
        order_id=row.order_id,
        customer_id=row.customer_id,
        destination=_destination(row.destination),
        weight_grams=row.weight_grams,
        cost=Money(row.cost_currency, row.cost_minor_units),
        carrier=row.carrier,
        tracking_number=row.tracking_number,
        status=ShipmentStatus(row.status),
        cancel_reason=row.cancel_reason,
        create_time=row.create_time,
        update_time=row.update_time,
    )


#: The statements of the saga's steps, built once (see `mesh.runtime.storage`'s note on that).
_GET = shipments.select().where(shipments.c.id == sa.bindparam("key"))
_GET_BY_ORDER = shipments.select().where(shipments.c.order_id == sa.bindparam("key"))
_ADD = shipments.insert()
_SAVE = whole_row_update(shipments)


class SqlShippingTransaction(SqlTransaction):
    """The shipments table, inside one transaction."""

    async def _one(self, query: sa.Select[Any], key: str) -> Shipment | None:
        row = (await self._connection.execute(query, {"key": key})).first()
        return None if row is None else _shipment(row)

    async def get(self, shipment_id: str) -> Shipment | None:
        return await self._one(_GET, shipment_id)

    async def get_by_order(self, order_id: str) -> Shipment | None:
        return await self._one(_GET_BY_ORDER, order_id)

    async def add(self, shipment: Shipment) -> None:
        await self._connection.execute(_ADD, _row(shipment))

    async def save(self, shipment: Shipment) -> None:
        await self._connection.execute(_SAVE, whole_row_parameters(_row(shipment)))


class SqlShippingStore(SqlStore[SqlShippingTransaction]):
    """Shipping's database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlShippingTransaction)
