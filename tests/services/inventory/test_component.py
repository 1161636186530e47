"""The inventory over real gRPC, on a real database (SQLite, Postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.runtime.storage import Database
from services.inventory.adapters import MIGRATIONS, SqlInventoryStore
from services.inventory.bootstrap import registration
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, error_reason, field_violations, serving

pytestmark = pytest.mark.integration

TEA, MUG, PEN = "product-tea", "product-mug", "product-pen"


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "inventory", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def inventory(database: Database) -> AsyncIterator[Any]:
    async with serving(registration(SqlInventoryStore(database))) as channel:
        yield pb_grpc.InventoryServiceStub(channel)


async def set_stock(inventory: Any, product_id: str, on_hand: int, request_id: str = "") -> Any:
    response = await inventory.SetStock(
        pb.SetStockRequest(product_id=product_id, on_hand=on_hand, request_id=request_id)
    )
    return response.stock


async def get_stock(inventory: Any, product_id: str) -> Any:
    return (await inventory.GetStock(pb.GetStockRequest(product_id=product_id))).stock


async def reserve(inventory: Any, order_id: str, **quantities: int) -> Any:
    lines = [pb.ReservationLine(product_id=p, quantity=q) for p, q in quantities.items()]
    response = await inventory.ReserveStock(pb.ReserveStockRequest(order_id=order_id, lines=lines))
    return response.reservation


def levels(level: Any) -> tuple[int, int, int]:
    return (level.on_hand, level.reserved, level.available)


def error_metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return dict(info.metadata)


async def failure_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


# --- stock levels ---------------------------------------------------------------------


async def test_set_then_get_returns_the_stock_level(inventory: Any) -> None:
    created = await set_stock(inventory, TEA, 7)
    assert created.product_id == TEA
    assert levels(created) == (7, 0, 7)
    assert await get_stock(inventory, TEA) == created


async def test_stock_of_a_product_without_stock_is_not_found(inventory: Any) -> None:
    error = await failure_of(inventory.GetStock(pb.GetStockRequest(product_id=TEA)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "STOCK_NOT_FOUND"


async def test_set_replaces_the_units_on_hand_and_keeps_reservations(inventory: Any) -> None:
    await set_stock(inventory, TEA, 10)
    await reserve(inventory, "order-1", **{TEA: 4})
    assert levels(await set_stock(inventory, TEA, 6)) == (6, 4, 2)
    assert levels(await set_stock(inventory, TEA, 4)) == (4, 4, 0)


async def test_set_below_the_reserved_units_is_refused(inventory: Any) -> None:
    await set_stock(inventory, TEA, 10)
    await reserve(inventory, "order-1", **{TEA: 4})
    error = await failure_of(set_stock(inventory, TEA, 3))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "ON_HAND_BELOW_RESERVED"
    assert levels(await get_stock(inventory, TEA)) == (10, 4, 6)


async def test_set_to_a_negative_number_is_refused(inventory: Any) -> None:
    error = await failure_of(set_stock(inventory, TEA, -1))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["on_hand"]


async def test_set_without_on_hand_is_refused_rather_than_emptying_the_stock(
    inventory: Any,
) -> None:
    await set_stock(inventory, TEA, 5)
    error = await failure_of(inventory.SetStock(pb.SetStockRequest(product_id=TEA)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["on_hand"]
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)


async def test_set_to_zero_is_allowed(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    assert levels(await set_stock(inventory, TEA, 0)) == (0, 0, 0)


async def test_retried_set_with_the_same_request_id_returns_the_first_result(
    inventory: Any,
) -> None:
    request_id = "5d0b7c1e-0000-4000-8000-000000000001"
    first = await set_stock(inventory, TEA, 5, request_id)
    await set_stock(inventory, TEA, 9)
    again = await set_stock(inventory, TEA, 5, request_id)
    assert again == first
    assert levels(await get_stock(inventory, TEA)) == (9, 0, 9)


async def test_adjust_adds_and_removes_units(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    added = await inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=3))
    assert levels(added.stock) == (8, 0, 8)
    removed = await inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=-8))
    assert levels(removed.stock) == (0, 0, 0)


async def test_adjust_below_zero_is_refused_and_changes_nothing(inventory: Any) -> None:
    await set_stock(inventory, TEA, 2)
    error = await failure_of(inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=-3)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INSUFFICIENT_STOCK"
    assert levels(await get_stock(inventory, TEA)) == (2, 0, 2)


async def test_adjust_cannot_remove_reserved_units(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await reserve(inventory, "order-1", **{TEA: 3})
    error = await failure_of(inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=-3)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INSUFFICIENT_STOCK"
    assert levels(await get_stock(inventory, TEA)) == (5, 3, 2)


async def test_adjust_by_zero_is_refused(inventory: Any) -> None:
    await set_stock(inventory, TEA, 2)
    error = await failure_of(inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["delta"]


async def test_adjust_of_a_product_without_stock_is_not_found(inventory: Any) -> None:
    error = await failure_of(inventory.AdjustStock(pb.AdjustStockRequest(product_id=TEA, delta=1)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "STOCK_NOT_FOUND"


async def test_retried_adjust_with_the_same_request_id_adjusts_once(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    request = pb.AdjustStockRequest(
        product_id=TEA, delta=2, request_id="5d0b7c1e-0000-4000-8000-000000000002"
    )
    first = (await inventory.AdjustStock(request)).stock
    again = (await inventory.AdjustStock(request)).stock
    assert again == first
    assert levels(await get_stock(inventory, TEA)) == (7, 0, 7)


# --- reservations ---------------------------------------------------------------------


async def test_reserve_holds_back_every_line(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await set_stock(inventory, MUG, 2)
    reservation = await reserve(inventory, "order-1", **{TEA: 3, MUG: 2})
    assert reservation.order_id == "order-1"
    assert reservation.status == pb.RESERVATION_STATUS_RESERVED
    assert [(line.product_id, line.quantity) for line in reservation.lines] == [
        (TEA, 3),
        (MUG, 2),
    ]
    assert levels(await get_stock(inventory, TEA)) == (5, 3, 2)
    assert levels(await get_stock(inventory, MUG)) == (2, 2, 0)


async def test_reserve_with_one_short_line_reserves_nothing(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await set_stock(inventory, MUG, 1)
    await set_stock(inventory, PEN, 9)
    error = await failure_of(reserve(inventory, "order-1", **{TEA: 3, MUG: 2, PEN: 1}))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "INSUFFICIENT_STOCK"
    assert error_metadata(error)["product_ids"] == MUG
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)
    assert levels(await get_stock(inventory, MUG)) == (1, 0, 1)
    assert levels(await get_stock(inventory, PEN)) == (9, 0, 9)
    release = inventory.ReleaseStock(pb.ReleaseStockRequest(order_id="order-1"))
    assert (await failure_of(release)).code() == grpc.StatusCode.NOT_FOUND


async def test_insufficient_stock_names_every_short_product(inventory: Any) -> None:
    await set_stock(inventory, TEA, 1)
    await set_stock(inventory, MUG, 1)
    error = await failure_of(reserve(inventory, "order-1", **{TEA: 2, MUG: 2}))
    assert sorted(error_metadata(error)["product_ids"].split(",")) == sorted([TEA, MUG])


async def test_reserve_of_an_unknown_product_is_not_found_and_reserves_nothing(
    inventory: Any,
) -> None:
    await set_stock(inventory, TEA, 5)
    error = await failure_of(reserve(inventory, "order-1", **{TEA: 1, PEN: 1}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "STOCK_NOT_FOUND"
    assert error_metadata(error)["product_id"] == PEN
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)


async def test_reserve_of_a_negative_quantity_is_refused(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    error = await failure_of(reserve(inventory, "order-1", **{TEA: -1}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["lines[0].quantity"]


async def test_reserve_of_a_zero_quantity_is_refused(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    error = await failure_of(reserve(inventory, "order-1", **{TEA: 0}))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["lines[0].quantity"]


async def test_reserve_with_a_product_twice_is_refused(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    lines = [pb.ReservationLine(product_id=TEA, quantity=1)] * 2
    error = await failure_of(
        inventory.ReserveStock(pb.ReserveStockRequest(order_id="order-1", lines=lines))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["lines[1].product_id"]
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)


async def test_second_reserve_for_an_order_returns_the_first_reservation(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    first = await reserve(inventory, "order-1", **{TEA: 2})
    again = await reserve(inventory, "order-1", **{TEA: 2})
    assert again == first
    assert levels(await get_stock(inventory, TEA)) == (5, 2, 3)


async def test_concurrent_reservations_of_the_last_units_never_oversell(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    outcomes = await asyncio.gather(
        *(reserve(inventory, f"order-{i}", **{TEA: 1}) for i in range(10)),
        return_exceptions=True,
    )
    reserved = [o for o in outcomes if isinstance(o, pb.Reservation)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(reserved) == 5
    assert len(refused) == 5
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert {error_reason(error) for error in refused} == {"INSUFFICIENT_STOCK"}
    assert levels(await get_stock(inventory, TEA)) == (5, 5, 0)


async def test_concurrent_multi_line_reservations_never_oversell(inventory: Any) -> None:
    await set_stock(inventory, TEA, 4)
    await set_stock(inventory, MUG, 4)
    outcomes = await asyncio.gather(
        *(reserve(inventory, f"order-{i}", **{TEA: 1, MUG: 1}) for i in range(3)),
        *(reserve(inventory, f"order-r{i}", **{MUG: 1, TEA: 1}) for i in range(3)),
        return_exceptions=True,
    )
    assert sum(isinstance(o, pb.Reservation) for o in outcomes) == 4
    assert levels(await get_stock(inventory, TEA)) == (4, 4, 0)
    assert levels(await get_stock(inventory, MUG)) == (4, 4, 0)


async def test_release_makes_units_available_again_and_is_idempotent(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await reserve(inventory, "order-1", **{TEA: 3})
    request = pb.ReleaseStockRequest(order_id="order-1")
    first = (await inventory.ReleaseStock(request)).reservation
    assert first.status == pb.RESERVATION_STATUS_RELEASED
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)
    again = (await inventory.ReleaseStock(request)).reservation
    assert again == first
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)


async def test_commit_takes_units_out_of_the_stock_and_is_idempotent(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await reserve(inventory, "order-1", **{TEA: 3})
    request = pb.CommitReservationRequest(order_id="order-1")
    first = (await inventory.CommitReservation(request)).reservation
    assert first.status == pb.RESERVATION_STATUS_COMMITTED
    assert levels(await get_stock(inventory, TEA)) == (2, 0, 2)
    again = (await inventory.CommitReservation(request)).reservation
    assert again == first
    assert levels(await get_stock(inventory, TEA)) == (2, 0, 2)


async def test_a_committed_reservation_cannot_be_released(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await reserve(inventory, "order-1", **{TEA: 3})
    await inventory.CommitReservation(pb.CommitReservationRequest(order_id="order-1"))
    error = await failure_of(inventory.ReleaseStock(pb.ReleaseStockRequest(order_id="order-1")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "RESERVATION_COMMITTED"
    assert levels(await get_stock(inventory, TEA)) == (2, 0, 2)


async def test_a_released_reservation_cannot_be_committed(inventory: Any) -> None:
    await set_stock(inventory, TEA, 5)
    await reserve(inventory, "order-1", **{TEA: 3})
    await inventory.ReleaseStock(pb.ReleaseStockRequest(order_id="order-1"))
    error = await failure_of(
        inventory.CommitReservation(pb.CommitReservationRequest(order_id="order-1"))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(error) == "RESERVATION_RELEASED"
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)


async def test_release_or_commit_of_an_order_without_reservation_is_not_found(
    inventory: Any,
) -> None:
    released = await failure_of(inventory.ReleaseStock(pb.ReleaseStockRequest(order_id="nope")))
    committed = await failure_of(
        inventory.CommitReservation(pb.CommitReservationRequest(order_id="nope"))
    )
    for error in (released, committed):
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error_reason(error) == "RESERVATION_NOT_FOUND"


async def test_data_survives_a_restart(databases: Databases, tmp_path: Path) -> None:
    async with (
        databases.open(tmp_path, "inventory", MIGRATIONS) as database,
        serving(registration(SqlInventoryStore(database))) as channel,
    ):
        inventory = pb_grpc.InventoryServiceStub(channel)
        await set_stock(inventory, TEA, 5)
        reservation = await reserve(inventory, "order-1", **{TEA: 2})
    async with databases.open(tmp_path, "inventory", MIGRATIONS) as database:
        assert await database.applied_versions() == [1]
        async with serving(registration(SqlInventoryStore(database))) as channel:
            inventory = pb_grpc.InventoryServiceStub(channel)
            assert levels(await get_stock(inventory, TEA)) == (5, 2, 3)
            assert await reserve(inventory, "order-1", **{TEA: 2}) == reservation


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE stock SET on_hand = -1",
        "UPDATE stock SET reserved = -1",
        "UPDATE stock SET reserved = on_hand + 1",
    ],
    ids=["negative-on-hand", "negative-reserved", "reserved-above-on-hand"],
)
async def test_the_database_refuses_a_broken_stock_level(
    inventory: Any, database: Database, statement: str
) -> None:
    await set_stock(inventory, TEA, 5)
    with pytest.raises(sa.exc.IntegrityError):
        async with database.transaction() as connection:
            await connection.exec_driver_sql(statement)
    assert levels(await get_stock(inventory, TEA)) == (5, 0, 5)
