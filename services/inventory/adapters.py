"""The inventory's adapters: its SQL tables and store.

The rule `0 <= reserved <= on_hand` is written twice into the database: as CHECK
constraints on `stock`, and as the WHERE clause of every UPDATE that moves units, so a
change that would break it matches no row instead of failing half-way. Both hold on
Postgres under concurrent writers as well as on SQLite.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from mesh.storage import Database, Migration, SqlStore, SqlTransaction, UtcDateTime
from services.inventory.domain import Reservation, ReservationLine, ReservationStatus, Stock

MIGRATIONS = (
    Migration(
        1,
        "stock and reservations",
        [
            """
            CREATE TABLE stock (
                product_id VARCHAR(128) PRIMARY KEY,
                on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
                reserved INTEGER NOT NULL CHECK (reserved >= 0),
                update_time TIMESTAMP NOT NULL,
                CHECK (reserved <= on_hand)
            )
            """,
            """
            CREATE TABLE reservations (
                order_id VARCHAR(128) PRIMARY KEY,
                status VARCHAR(16) NOT NULL
                    CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED')),
                create_time TIMESTAMP NOT NULL,
                update_time TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE reservation_lines (
                order_id VARCHAR(128) NOT NULL REFERENCES reservations (order_id),
                line_number INTEGER NOT NULL,
                product_id VARCHAR(128) NOT NULL REFERENCES stock (product_id),
                quantity INTEGER NOT NULL CHECK (quantity > 0),
                PRIMARY KEY (order_id, line_number),
                UNIQUE (order_id, product_id)
            )
            """,
        ],
    ),
)

metadata = sa.MetaData()
stock = sa.Table(
    "stock",
    metadata,
    sa.Column("product_id", sa.String(128), primary_key=True),
    sa.Column("on_hand", sa.Integer, nullable=False),
    sa.Column("reserved", sa.Integer, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)
reservation_lines = sa.Table(
    "reservation_lines",
    metadata,
    sa.Column("order_id", sa.String(128), primary_key=True),
    sa.Column("line_number", sa.Integer, primary_key=True),
    sa.Column("product_id", sa.String(128), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
)


def _stock(row: sa.Row[Any]) -> Stock:
    return Stock(
        product_id=row.product_id,
        on_hand=row.on_hand,
        reserved=row.reserved,
        update_time=row.update_time,
    )


class SqlInventoryTransaction(SqlTransaction):
    """The stock and reservation tables, inside one transaction."""

    async def get_stock(self, product_id: str) -> Stock | None:
        row = (
            await self._connection.execute(stock.select().where(stock.c.product_id == product_id))
        ).first()
        return None if row is None else _stock(row)

    async def get_stocks(self, product_ids: list[str]) -> list[Stock]:
        rows = await self._connection.execute(
            stock.select().where(stock.c.product_id.in_(product_ids))
        )
        return [_stock(row) for row in rows]

    async def add_stock(self, level: Stock) -> None:
        await self._connection.execute(
            stock.insert().values(
                product_id=level.product_id,
                on_hand=level.on_hand,
                reserved=level.reserved,
                update_time=level.update_time,
            )
        )

    async def _update(self, product_id: str, condition: Any, **values: Any) -> bool:
        result = await self._connection.execute(
            stock.update().where(stock.c.product_id == product_id, condition).values(**values)
        )
        return result.rowcount == 1

    async def set_on_hand(self, product_id: str, on_hand: int, now: datetime) -> bool:
        return await self._update(
            product_id, stock.c.reserved <= on_hand, on_hand=on_hand, update_time=now
        )

    async def adjust_on_hand(self, product_id: str, delta: int, now: datetime) -> bool:
        return await self._update(
            product_id,
            stock.c.on_hand + delta >= stock.c.reserved,
            on_hand=stock.c.on_hand + delta,
            update_time=now,
        )

    async def hold(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(
            product_id,
            stock.c.on_hand - stock.c.reserved >= quantity,
            reserved=stock.c.reserved + quantity,
            update_time=now,
        )

    async def let_go(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(
            product_id,
            stock.c.reserved >= quantity,
            reserved=stock.c.reserved - quantity,
            update_time=now,
        )

    async def ship(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(
            product_id,
            stock.c.reserved >= quantity,
            on_hand=stock.c.on_hand - quantity,
            reserved=stock.c.reserved - quantity,
            update_time=now,
        )

    async def get_reservation(self, order_id: str) -> Reservation | None:
        row = (
            await self._connection.execute(
                reservations.select().where(reservations.c.order_id == order_id)
            )
        ).first()
        if row is None:
            return None
        lines = await self._connection.execute(
            reservation_lines.select()
            .where(reservation_lines.c.order_id == order_id)
            .order_by(reservation_lines.c.line_number)
        )
        return Reservation(
            order_id=row.order_id,
            lines=tuple(ReservationLine(line.product_id, line.quantity) for line in lines),
            status=ReservationStatus(row.status),
            create_time=row.create_time,
            update_time=row.update_time,
        )

    async def add_reservation(self, reservation: Reservation) -> None:
        await self._connection.execute(
            reservations.insert().values(
                order_id=reservation.order_id,
                status=reservation.status.value,
                create_time=reservation.create_time,
                update_time=reservation.update_time,
            )
        )
        if not reservation.lines:
            return
        await self._connection.execute(
            reservation_lines.insert(),
            [
                {
                    "order_id": reservation.order_id,
                    "line_number": number,
                    "product_id": line.product_id,
                    "quantity": line.quantity,
                }
                for number, line in enumerate(reservation.lines)
            ],
        )

    async def move_reservation(
        self, order_id: str, before: ReservationStatus, after: ReservationStatus, now: datetime
    ) -> bool:
        result = await self._connection.execute(
            reservations.update()
            .where(reservations.c.order_id == order_id, reservations.c.status == before.value)
            .values(status=after.value, update_time=now)
        )
        return result.rowcount == 1


class SqlInventoryStore(SqlStore[SqlInventoryTransaction]):
    """The inventory's database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlInventoryTransaction)
