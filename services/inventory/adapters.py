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

from mesh.runtime.storage import Database, Migration, SqlStore, SqlTransaction, UtcDateTime
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


def _stock_update(condition: Any, **values: Any) -> sa.Update:
    """A conditional update of one product's stock; its parameters are `b_product_id`,
    `b_now` and those `condition` and `values` name."""
    return (
        stock.update()
        .where(stock.c.product_id == sa.bindparam("b_product_id"), condition)
        .values(update_time=sa.bindparam("b_now"), **values)
    )


#: The statements of the saga's steps, built once (see `mesh.runtime.storage`'s note on that).
_GET_STOCK = stock.select().where(stock.c.product_id == sa.bindparam("product_id"))
_GET_STOCKS = stock.select().where(stock.c.product_id.in_(sa.bindparam("ids", expanding=True)))
_ADD_STOCK = stock.insert()
_QUANTITY: sa.BindParameter[int] = sa.bindparam("b_quantity", type_=sa.Integer)
_SET_ON_HAND = _stock_update(
    stock.c.reserved <= sa.bindparam("b_on_hand"), on_hand=sa.bindparam("b_on_hand")
)
_ADJUST_ON_HAND = _stock_update(
    stock.c.on_hand + sa.bindparam("b_delta") >= stock.c.reserved,
    on_hand=stock.c.on_hand + sa.bindparam("b_delta"),
)
_HOLD = _stock_update(
    stock.c.on_hand - stock.c.reserved >= _QUANTITY, reserved=stock.c.reserved + _QUANTITY
)
_LET_GO = _stock_update(stock.c.reserved >= _QUANTITY, reserved=stock.c.reserved - _QUANTITY)
_SHIP = _stock_update(
    stock.c.reserved >= _QUANTITY,
    on_hand=stock.c.on_hand - _QUANTITY,
    reserved=stock.c.reserved - _QUANTITY,
)
_GET_RESERVATION = reservations.select().where(reservations.c.order_id == sa.bindparam("order_id"))
_GET_RESERVATION_LINES = (
    reservation_lines.select()
    .where(reservation_lines.c.order_id == sa.bindparam("order_id"))
    .order_by(reservation_lines.c.line_number)
)
_ADD_RESERVATION = reservations.insert()
_ADD_RESERVATION_LINES = reservation_lines.insert()
_MOVE_RESERVATION = (
    reservations.update()
    .where(
        reservations.c.order_id == sa.bindparam("b_order_id"),
        reservations.c.status == sa.bindparam("b_before"),
    )
    .values(status=sa.bindparam("b_after"), update_time=sa.bindparam("b_now"))
)


class SqlInventoryTransaction(SqlTransaction):
    """The stock and reservation tables, inside one transaction."""

    async def get_stock(self, product_id: str) -> Stock | None:
        found = await self._connection.execute(_GET_STOCK, {"product_id": product_id})
        row = found.first()
        return None if row is None else _stock(row)

    async def get_stocks(self, product_ids: list[str]) -> list[Stock]:
        rows = await self._connection.execute(_GET_STOCKS, {"ids": product_ids})
        return [_stock(row) for row in rows]

    async def add_stock(self, level: Stock) -> None:
        await self._connection.execute(
            _ADD_STOCK,
            {
                "product_id": level.product_id,
                "on_hand": level.on_hand,
                "reserved": level.reserved,
                "update_time": level.update_time,
            },
        )

    async def _update(
        self, statement: sa.Update, product_id: str, now: datetime, **values: int
    ) -> bool:
        parameters = {f"b_{name}": value for name, value in values.items()}
        result = await self._connection.execute(
            statement, {"b_product_id": product_id, "b_now": now, **parameters}
        )
        return result.rowcount == 1

    async def set_on_hand(self, product_id: str, on_hand: int, now: datetime) -> bool:
        return await self._update(_SET_ON_HAND, product_id, now, on_hand=on_hand)

    async def adjust_on_hand(self, product_id: str, delta: int, now: datetime) -> bool:
        return await self._update(_ADJUST_ON_HAND, product_id, now, delta=delta)

    async def hold(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(_HOLD, product_id, now, quantity=quantity)

    async def let_go(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(_LET_GO, product_id, now, quantity=quantity)

    async def ship(self, product_id: str, quantity: int, now: datetime) -> bool:
        return await self._update(_SHIP, product_id, now, quantity=quantity)

    async def get_reservation(self, order_id: str) -> Reservation | None:
        row = (await self._connection.execute(_GET_RESERVATION, {"order_id": order_id})).first()
        if row is None:
            return None
        lines = await self._connection.execute(_GET_RESERVATION_LINES, {"order_id": order_id})
        return Reservation(
            order_id=row.order_id,
            lines=tuple(ReservationLine(line.product_id, line.quantity) for line in lines),
            status=ReservationStatus(row.status),
            create_time=row.create_time,
            update_time=row.update_time,
        )

    async def add_reservation(self, reservation: Reservation) -> None:
        await self._connection.execute(
            _ADD_RESERVATION,
            {
                "order_id": reservation.order_id,
                "status": reservation.status.value,
                "create_time": reservation.create_time,
                "update_time": reservation.update_time,
            },
        )
        if not reservation.lines:
            return
        await self._connection.execute(
            _ADD_RESERVATION_LINES,
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
            _MOVE_RESERVATION,
            {
                "b_order_id": order_id,
                "b_before": before.value,
                "b_after": after.value,
                "b_now": now,
            },
        )
        return result.rowcount == 1


class SqlInventoryStore(SqlStore[SqlInventoryTransaction]):
    """The inventory's database."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, SqlInventoryTransaction)
