"""The inventory's domain: stock levels, reservations, and the rules both must follow.

A product's stock never goes negative and never holds back more units than it has:
`0 <= reserved <= on_hand`. The database enforces the same with CHECK constraints and
conditional updates (see `adapters.py`), so the rule holds under concurrency as well.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from mesh.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound


@dataclass(frozen=True)
class Stock:
    """How many units of one product the shop holds, and how many are held back."""

    product_id: str
    on_hand: int
    reserved: int
    update_time: datetime

    @property
    def available(self) -> int:
        """The units that can still be ordered; never negative."""
        return max(0, self.on_hand - self.reserved)


class ReservationStatus(enum.Enum):
    """Where a reservation stands; only RESERVED units are held back."""

    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"


@dataclass(frozen=True)
class ReservationLine:
    """A number of units of one product held back for an order."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    """The stock held back for the lines of one order; an order has at most one."""

    order_id: str
    lines: tuple[ReservationLine, ...]
    status: ReservationStatus
    create_time: datetime
    update_time: datetime


def stock_not_found(product_id: str) -> NotFound:
    return NotFound(
        f"product {product_id!r} has no stock",
        reason="STOCK_NOT_FOUND",
        metadata={"product_id": product_id},
    )


def reservation_not_found(order_id: str) -> NotFound:
    return NotFound(
        f"order {order_id!r} has no reservation",
        reason="RESERVATION_NOT_FOUND",
        metadata={"order_id": order_id},
    )


def insufficient_stock(product_ids: Sequence[str]) -> FailedPrecondition:
    """The error naming every product that has too few units for the request."""
    return FailedPrecondition(
        f"not enough units available of {', '.join(repr(p) for p in product_ids)}",
        reason="INSUFFICIENT_STOCK",
        metadata={"product_ids": ",".join(product_ids)},
    )


def new_stock(product_id: str, on_hand: int, now: datetime) -> Stock:
    """The first stock level of a product, if `on_hand` is allowed."""
    _check_on_hand(on_hand)
    return Stock(product_id=product_id, on_hand=on_hand, reserved=0, update_time=now)


def stock_set_to(stock: Stock, on_hand: int, now: datetime) -> Stock:
    """`stock` counted anew at `on_hand` units; it may not drop below the reserved units."""
    _check_on_hand(on_hand)
    if on_hand < stock.reserved:
        raise FailedPrecondition(
            f"product {stock.product_id!r} has {stock.reserved} units reserved for orders; "
            f"on_hand cannot be set to {on_hand}",
            reason="ON_HAND_BELOW_RESERVED",
            metadata={"product_id": stock.product_id, "reserved": str(stock.reserved)},
        )
    return replace(stock, on_hand=on_hand, update_time=now)


#: The most units of one product on hand, as the contract bounds `Stock.on_hand`.
MAX_ON_HAND = 1_000_000_000


def stock_adjusted_by(stock: Stock, delta: int, now: datetime) -> Stock:
    """`stock` with `delta` units added (or removed); reserved units cannot be removed."""
    if delta == 0:
        raise InvalidArgument.of([FieldViolation("delta", "The delta must not be zero.")])
    if stock.on_hand + delta < stock.reserved:
        raise FailedPrecondition(
            f"product {stock.product_id!r} has {stock.available} units available; "
            f"{-delta} cannot be removed",
            reason="INSUFFICIENT_STOCK",
            metadata={"product_ids": stock.product_id, "available": str(stock.available)},
        )
    if stock.on_hand + delta > MAX_ON_HAND:
        raise InvalidArgument.of(
            [FieldViolation("delta", f"The units on hand cannot exceed {MAX_ON_HAND:,}.")]
        )
    return replace(stock, on_hand=stock.on_hand + delta, update_time=now)


def _check_on_hand(on_hand: int) -> None:
    if on_hand < 0:
        raise InvalidArgument.of(
            [FieldViolation("on_hand", "The units on hand must not be negative.")]
        )


def new_reservation(order_id: str, lines: Sequence[ReservationLine], now: datetime) -> Reservation:
    """A reservation of `lines` for an order, if each line is a positive quantity of a
    product that no other line names."""
    problems = []
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.quantity <= 0:
            problems.append(
                FieldViolation(f"lines[{index}].quantity", "The quantity must be positive.")
            )
        if line.product_id in seen:
            problems.append(
                FieldViolation(
                    f"lines[{index}].product_id",
                    f"Product {line.product_id!r} appears in more than one line.",
                )
            )
        seen.add(line.product_id)
    if not lines:
        problems.append(FieldViolation("lines", "At least one line must be reserved."))
    if problems:
        raise InvalidArgument.of(problems)
    return Reservation(
        order_id=order_id,
        lines=tuple(lines),
        status=ReservationStatus.RESERVED,
        create_time=now,
        update_time=now,
    )


def released(reservation: Reservation, now: datetime) -> Reservation:
    """`reservation` given back; a committed one has left the stock and cannot be."""
    if reservation.status is ReservationStatus.COMMITTED:
        raise FailedPrecondition(
            f"the reservation of order {reservation.order_id!r} is committed",
            reason="RESERVATION_COMMITTED",
            metadata={"order_id": reservation.order_id},
        )
    return replace(reservation, status=ReservationStatus.RELEASED, update_time=now)


def committed(reservation: Reservation, now: datetime) -> Reservation:
    """`reservation` shipped; a released one no longer holds the units and cannot be."""
    if reservation.status is ReservationStatus.RELEASED:
        raise FailedPrecondition(
            f"the reservation of order {reservation.order_id!r} is released",
            reason="RESERVATION_RELEASED",
            metadata={"order_id": reservation.order_id},
        )
    return replace(reservation, status=ReservationStatus.COMMITTED, update_time=now)


def never_reserved(order_id: str, now: datetime) -> Reservation:
    """The reservation of an order cancelled before any stock was held for it.

    Released and empty, it stands for the order so that a late request to reserve for
    it finds a reservation and holds nothing.
    """
    return Reservation(
        order_id=order_id,
        lines=(),
        status=ReservationStatus.RELEASED,
        create_time=now,
        update_time=now,
    )
