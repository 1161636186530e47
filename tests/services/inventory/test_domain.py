"""The inventory's rules and use cases, on in-memory fakes of its store."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from mesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.inventory import handlers
from services.inventory.domain import (
    MAX_ON_HAND,
    Reservation,
    ReservationLine,
    ReservationStatus,
    Stock,
    stock_adjusted_by,
    stock_set_to,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeInventory:
    """The store's state in dicts; a transaction works on a copy, kept only on success."""

    def __init__(self) -> None:
        self.stock: dict[str, Stock] = {}
        self.reservations: dict[str, Reservation] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeTransaction]:
        tx = FakeTransaction(copy.deepcopy(self))
        yield tx
        self.stock, self.reservations, self.requests = (
            tx.state.stock,
            tx.state.reservations,
            tx.state.requests,
        )

    def snapshot(self) -> Any:
        return self.transaction()


class FakeTransaction:
    def __init__(self, state: FakeInventory) -> None:
        self.state = state

    async def get_stock(self, product_id: str) -> Stock | None:
        return self.state.stock.get(product_id)

    async def get_stocks(self, product_ids: list[str]) -> list[Stock]:
        return [self.state.stock[p] for p in product_ids if p in self.state.stock]

    async def add_stock(self, stock: Stock) -> None:
        self.state.stock[stock.product_id] = stock

    def _change(self, product_id: str, on_hand: int, reserved: int, now: datetime) -> bool:
        if product_id not in self.state.stock or not 0 <= reserved <= on_hand:
            return False
        self.state.stock[product_id] = Stock(product_id, on_hand, reserved, now)
        return True

    async def set_on_hand(self, product_id: str, on_hand: int, now: datetime) -> bool:
        level = self.state.stock.get(product_id)
        return level is not None and self._change(product_id, on_hand, level.reserved, now)

    async def adjust_on_hand(self, product_id: str, delta: int, now: datetime) -> bool:
        level = self.state.stock.get(product_id)
        return level is not None and self._change(
            product_id, level.on_hand + delta, level.reserved, now
        )

    async def hold(self, product_id: str, quantity: int, now: datetime) -> bool:
        level = self.state.stock.get(product_id)
        return level is not None and self._change(
            product_id, level.on_hand, level.reserved + quantity, now
        )

    async def let_go(self, product_id: str, quantity: int, now: datetime) -> bool:
        level = self.state.stock.get(product_id)
        return level is not None and self._change(
            product_id, level.on_hand, level.reserved - quantity, now
        )

    async def ship(self, product_id: str, quantity: int, now: datetime) -> bool:
        level = self.state.stock.get(product_id)
        return level is not None and self._change(
            product_id, level.on_hand - quantity, level.reserved - quantity, now
        )

    async def get_reservation(self, order_id: str) -> Reservation | None:
        return self.state.reservations.get(order_id)

    async def add_reservation(self, reservation: Reservation) -> None:
        self.state.reservations[reservation.order_id] = reservation

    async def move_reservation(
        self, order_id: str, before: ReservationStatus, after: ReservationStatus, now: datetime
    ) -> bool:
        current = self.state.reservations.get(order_id)
        if current is None or current.status is not before:
            return False
        self.state.reservations[order_id] = replace(current, status=after, update_time=now)
        return True

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.state.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.state.requests[(method, request_id)] = result


@pytest.fixture
def store() -> FakeInventory:
    return FakeInventory()


async def stocked(store: FakeInventory, **on_hand: int) -> None:
    for product_id, units in on_hand.items():
        await handlers.set_stock(store, handlers.SetStock(product_id, units, ""))


def reserve(order_id: str, **quantities: int) -> handlers.ReserveStock:
    return handlers.ReserveStock(
        order_id, tuple(ReservationLine(p, q) for p, q in quantities.items())
    )


def units(store: FakeInventory, product_id: str) -> tuple[int, int, int]:
    level = store.stock[product_id]
    return (level.on_hand, level.reserved, level.available)


# --- domain rules ---------------------------------------------------------------------


def test_available_is_on_hand_minus_reserved_and_never_negative() -> None:
    assert Stock("tea", 5, 2, NOW).available == 3
    assert Stock("tea", 1, 2, NOW).available == 0


def test_stock_cannot_be_set_below_its_reserved_units() -> None:
    level = Stock("tea", 5, 3, NOW)
    assert stock_set_to(level, 3, NOW).on_hand == 3
    with pytest.raises(FailedPrecondition) as failure:
        stock_set_to(level, 2, NOW)
    assert failure.value.reason == "ON_HAND_BELOW_RESERVED"


def test_adjusting_cannot_remove_reserved_units() -> None:
    level = Stock("tea", 5, 3, NOW)
    assert stock_adjusted_by(level, -2, NOW).on_hand == 3
    with pytest.raises(FailedPrecondition) as failure:
        stock_adjusted_by(level, -3, NOW)
    assert failure.value.reason == "INSUFFICIENT_STOCK"


def test_adjusting_by_zero_is_refused() -> None:
    with pytest.raises(InvalidArgument) as failure:
        stock_adjusted_by(Stock("tea", 5, 0, NOW), 0, NOW)
    assert [v.field for v in failure.value.violations] == ["delta"]


def test_adjusting_past_the_largest_stock_level_is_refused() -> None:
    """The contract bounds `Stock.on_hand`; a level past it could not be answered."""
    level = Stock("tea", 5, 0, NOW)
    with pytest.raises(InvalidArgument) as failure:
        stock_adjusted_by(level, MAX_ON_HAND - 4, NOW)
    assert [v.field for v in failure.value.violations] == ["delta"]
    assert stock_adjusted_by(level, MAX_ON_HAND - 5, NOW).on_hand == MAX_ON_HAND


# --- use cases ------------------------------------------------------------------------


async def test_set_stock_creates_then_replaces(store: FakeInventory) -> None:
    await stocked(store, tea=4)
    assert units(store, "tea") == (4, 0, 4)
    await stocked(store, tea=9)
    assert units(store, "tea") == (9, 0, 9)


async def test_set_stock_refuses_a_negative_count(store: FakeInventory) -> None:
    with pytest.raises(InvalidArgument):
        await stocked(store, tea=-1)
    assert store.stock == {}


async def test_get_stock_of_an_unknown_product_is_not_found(store: FakeInventory) -> None:
    with pytest.raises(NotFound) as failure:
        await handlers.get_stock(store, "tea")
    assert failure.value.reason == "STOCK_NOT_FOUND"


async def test_set_stock_retry_returns_the_first_result(store: FakeInventory) -> None:
    first = await handlers.set_stock(store, handlers.SetStock("tea", 4, "r1"))
    await stocked(store, tea=7)
    assert await handlers.set_stock(store, handlers.SetStock("tea", 4, "r1")) == first
    assert units(store, "tea") == (7, 0, 7)


async def test_adjust_stock_retry_adjusts_once(store: FakeInventory) -> None:
    await stocked(store, tea=4)
    command = handlers.AdjustStock("tea", 3, "r1")
    first = await handlers.adjust_stock(store, command)
    assert await handlers.adjust_stock(store, command) == first
    assert units(store, "tea") == (7, 0, 7)


async def test_reserve_is_all_or_nothing(store: FakeInventory) -> None:
    await stocked(store, tea=5, mug=1)
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.reserve_stock(store, reserve("o1", tea=2, mug=2))
    assert failure.value.reason == "INSUFFICIENT_STOCK"
    assert failure.value.metadata["product_ids"] == "mug"
    assert units(store, "tea") == (5, 0, 5)
    assert store.reservations == {}


async def test_reserve_of_an_unknown_product_is_not_found(store: FakeInventory) -> None:
    await stocked(store, tea=5)
    with pytest.raises(NotFound) as failure:
        await handlers.reserve_stock(store, reserve("o1", tea=1, pen=1))
    assert failure.value.metadata["product_id"] == "pen"
    assert units(store, "tea") == (5, 0, 5)


@pytest.mark.parametrize(
    ("lines", "fields"),
    [
        ((ReservationLine("tea", 0),), ["lines[0].quantity"]),
        ((ReservationLine("tea", 1), ReservationLine("tea", 2)), ["lines[1].product_id"]),
        ((), ["lines"]),
    ],
    ids=["zero-quantity", "duplicate-product", "no-lines"],
)
async def test_reserve_refuses_malformed_lines(
    store: FakeInventory, lines: tuple[ReservationLine, ...], fields: list[str]
) -> None:
    await stocked(store, tea=5)
    with pytest.raises(InvalidArgument) as failure:
        await handlers.reserve_stock(store, handlers.ReserveStock("o1", lines))
    assert [v.field for v in failure.value.violations] == fields
    assert units(store, "tea") == (5, 0, 5)


async def test_reserve_twice_returns_the_first_reservation(store: FakeInventory) -> None:
    await stocked(store, tea=5)
    first = await handlers.reserve_stock(store, reserve("o1", tea=2))
    assert await handlers.reserve_stock(store, reserve("o1", tea=3)) == first
    assert units(store, "tea") == (5, 2, 3)


async def test_release_then_commit_is_refused(store: FakeInventory) -> None:
    await stocked(store, tea=5)
    await handlers.reserve_stock(store, reserve("o1", tea=2))
    released = await handlers.release_stock(store, "o1")
    assert released.status is ReservationStatus.RELEASED
    assert await handlers.release_stock(store, "o1") == released
    assert units(store, "tea") == (5, 0, 5)
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.commit_reservation(store, "o1")
    assert failure.value.reason == "RESERVATION_RELEASED"


async def test_commit_then_release_is_refused(store: FakeInventory) -> None:
    await stocked(store, tea=5)
    await handlers.reserve_stock(store, reserve("o1", tea=2))
    committed = await handlers.commit_reservation(store, "o1")
    assert committed.status is ReservationStatus.COMMITTED
    assert await handlers.commit_reservation(store, "o1") == committed
    assert units(store, "tea") == (3, 0, 3)
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.release_stock(store, "o1")
    assert failure.value.reason == "RESERVATION_COMMITTED"


async def test_release_of_an_unknown_order_is_not_found(store: FakeInventory) -> None:
    with pytest.raises(NotFound) as failure:
        await handlers.release_stock(store, "o1")
    assert failure.value.reason == "RESERVATION_NOT_FOUND"
