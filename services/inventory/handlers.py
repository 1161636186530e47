"""The inventory's use cases: each takes a command and the store, and returns domain objects.

Each use case checks its rule on the state it read, for a precise error, and then moves
units with a conditional update that re-checks the rule in the database. On SQLite the
write transaction is serialized, so the two always agree; on a backend where a
concurrent writer slipped in between, the conditional update matches nothing and the
caller gets ABORTED, to retry, instead of a broken stock level.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mesh.runtime.errors import Aborted
from mesh.runtime.storage import utc_now
from services.inventory.domain import (
    Reservation,
    ReservationLine,
    ReservationStatus,
    Stock,
    committed,
    insufficient_stock,
    never_reserved,
    new_reservation,
    new_stock,
    released,
    reservation_not_found,
    stock_adjusted_by,
    stock_not_found,
    stock_set_to,
)
from services.inventory.ports import InventoryStore, InventoryTransaction


@dataclass(frozen=True)
class SetStock:
    product_id: str
    on_hand: int
    request_id: str


@dataclass(frozen=True)
class AdjustStock:
    product_id: str
    delta: int
    request_id: str


@dataclass(frozen=True)
class ReserveStock:
    order_id: str
    lines: tuple[ReservationLine, ...]


def _concurrent_change(product_id: str) -> Aborted:
    return Aborted(
        f"the stock of product {product_id!r} changed meanwhile; retry",
        reason="CONCURRENT_STOCK_CHANGE",
        metadata={"product_id": product_id},
    )


def _logged(level: Stock) -> dict[str, Any]:
    return {
        "product_id": level.product_id,
        "on_hand": level.on_hand,
        "reserved": level.reserved,
        "update_time": level.update_time.isoformat(),
    }


def _from_log(result: dict[str, Any]) -> Stock:
    return Stock(
        product_id=result["product_id"],
        on_hand=result["on_hand"],
        reserved=result["reserved"],
        update_time=datetime.fromisoformat(result["update_time"]),
    )


async def get_stock(store: InventoryStore, product_id: str) -> Stock:
    async with store.snapshot() as tx:
        level = await tx.get_stock(product_id)
    if level is None:
        raise stock_not_found(product_id)
    return level


async def batch_get_stock(store: InventoryStore, product_ids: list[str]) -> list[Stock]:
    """The stock levels of the products with these ids that have one, in the order asked."""
    async with store.snapshot() as tx:
        found = {level.product_id: level for level in await tx.get_stocks(sorted(set(product_ids)))}
    return [found[pid] for pid in product_ids if pid in found]


async def set_stock(store: InventoryStore, command: SetStock) -> Stock:
    """Create the product's stock or count it anew; a retry returns the first result."""
    async with store.transaction() as tx:
        prior = await tx.find_request("SetStock", command.request_id)
        if prior:
            return _from_log(prior)
        now = utc_now()
        current = await tx.get_stock(command.product_id)
        if current is None:
            level = new_stock(command.product_id, command.on_hand, now)
            await tx.add_stock(level)
        else:
            level = stock_set_to(current, command.on_hand, now)
            if not await tx.set_on_hand(level.product_id, level.on_hand, now):
                raise _concurrent_change(level.product_id)
        await tx.record_request("SetStock", command.request_id, _logged(level))
    return level


async def adjust_stock(store: InventoryStore, command: AdjustStock) -> Stock:
    """Add or remove units of a product that has stock; a retry returns the first result."""
    async with store.transaction() as tx:
        prior = await tx.find_request("AdjustStock", command.request_id)
        if prior:
            return _from_log(prior)
        current = await tx.get_stock(command.product_id)
        if current is None:
            raise stock_not_found(command.product_id)
        now = utc_now()
        level = stock_adjusted_by(current, command.delta, now)
        if not await tx.adjust_on_hand(level.product_id, command.delta, now):
            raise _concurrent_change(level.product_id)
        await tx.record_request("AdjustStock", command.request_id, _logged(level))
    return level


async def reserve_stock(store: InventoryStore, command: ReserveStock) -> Reservation:
    """Hold back every line of an order, or nothing; a second call returns the first."""
    reservation = new_reservation(command.order_id, command.lines, utc_now())
    async with store.transaction() as tx:
        existing = await tx.get_reservation(command.order_id)
        if existing is not None:
            return existing
        product_ids = [line.product_id for line in reservation.lines]
        known = {level.product_id for level in await tx.get_stocks(product_ids)}
        unknown = [pid for pid in product_ids if pid not in known]
        if unknown:
            raise stock_not_found(unknown[0])
        # Rows are locked in one order (by product id) so two orders cannot deadlock.
        short = [
            line.product_id
            for line in sorted(reservation.lines, key=lambda line: line.product_id)
            if not await tx.hold(line.product_id, line.quantity, reservation.create_time)
        ]
        if short:
            raise insufficient_stock(short)  # rolls back the lines already held
        await tx.add_reservation(reservation)
    return reservation


async def _settle(
    tx: InventoryTransaction, reservation: Reservation, after: Reservation, now: datetime
) -> None:
    """Move a RESERVED reservation to `after`'s status, moving its units accordingly."""
    move = tx.let_go if after.status is ReservationStatus.RELEASED else tx.ship
    for line in sorted(reservation.lines, key=lambda line: line.product_id):
        if not await move(line.product_id, line.quantity, now):
            raise _concurrent_change(line.product_id)
    if not await tx.move_reservation(
        reservation.order_id, ReservationStatus.RESERVED, after.status, now
    ):
        raise Aborted(
            f"the reservation of order {reservation.order_id!r} changed meanwhile; retry",
            reason="CONCURRENT_RESERVATION_CHANGE",
            metadata={"order_id": reservation.order_id},
        )


async def release_stock(store: InventoryStore, order_id: str) -> Reservation:
    """Make an order's reserved units available again; releasing twice changes nothing."""
    async with store.transaction() as tx:
        reservation = await tx.get_reservation(order_id)
        if reservation is None:
            raise reservation_not_found(order_id)
        now = utc_now()
        after = released(reservation, now)
        if reservation.status is ReservationStatus.RELEASED:
            return reservation
        await _settle(tx, reservation, after, now)
    return after


async def commit_reservation(store: InventoryStore, order_id: str) -> Reservation:
    """Take an order's reserved units out of the stock; committing twice changes nothing."""
    async with store.transaction() as tx:
        reservation = await tx.get_reservation(order_id)
        if reservation is None:
            raise reservation_not_found(order_id)
        now = utc_now()
        after = committed(reservation, now)
        if reservation.status is ReservationStatus.COMMITTED:
            return reservation
        await _settle(tx, reservation, after, now)
    return after


async def release_for_order(store: InventoryStore, order_id: str) -> Reservation | None:
    """Give back what an order holds (a saga's compensation); the reservation released now.

    None when nothing was held: the order's units were released before, or it never had
    a reservation, in which case it gets an empty released one so that it never will
    (the cancellation overtook the reservation). A committed reservation has left the
    stock, and stays as it is.
    """
    async with store.transaction() as tx:
        reservation = await tx.get_reservation(order_id)
        now = utc_now()
        if reservation is None:
            await tx.add_reservation(never_reserved(order_id, now))
            return None
        if reservation.status is not ReservationStatus.RESERVED:
            return None
        after = released(reservation, now)
        await _settle(tx, reservation, after, now)
    return after
