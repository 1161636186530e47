"""Catalog's reads with stock levels, and their fallback when inventory does not answer.

Inventory is a fake channel here: its BatchGetStock answers levels, or fails with the
status a test gives it, so every status the mesh can give is tried without a mesh. The
catalog's servicer runs in the real runner (its interceptors decide the cache headers);
the degradation tests with the real inventory stopped are in
tests/integration/test_degradation.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import grpc
import pytest
from prometheus_client import REGISTRY

from mesh.runtime import deadlines, degradation
from mesh.runtime.cacheable import CACHE_HEADER
from mesh.runtime.circuit import OPEN_SECONDS, TRIP_AFTER, Circuit
from mesh.runtime.errors import Unavailable
from mesh.runtime.money import Money
from mesh.runtime.runner import Registration
from services.catalog import handlers
from services.catalog.adapters import (
    ANSWER_RESERVE_SECONDS,
    STOCK_READ_SECONDS,
    GrpcStockLevels,
    stock_read_outcome,
)
from services.catalog.domain import Product
from services.catalog.servicer import CatalogServicer
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from tests.support.clock import Clock
from tests.support.component import error_reason, serving
from tests.support.memory_catalog import MemoryCatalog

NOW = datetime.fromisoformat("2026-12-07T10:00:00+00:00")
GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
#: What the mesh gives when inventory is stopped, unreachable, at its limit or too slow.
UNANSWERED = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
#: Failures that are inventory's (or the mesh's) mistakes, not its absence: never degraded.
FAILED = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.UNAUTHENTICATED,
]


class FakeInventoryChannel:
    """A channel to an inventory whose BatchGetStock answers `levels` (units available by
    product id), or fails with `failure`; it records each call's ids and timeout."""

    def __init__(
        self, levels: dict[str, int] | None = None, failure: grpc.StatusCode | None = None
    ) -> None:
        self.levels = levels or {}
        self.failure = failure
        self.calls: list[tuple[list[str], float | None]] = []

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, **options: Any) -> Any:
            assert method.endswith("/BatchGetStock"), method
            self.calls.append((list(request.product_ids), options.get("timeout")))
            if self.failure is not None:
                empty = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(self.failure, empty, empty, details="fake inventory")
            return inventory_pb.BatchGetStockResponse(
                stocks=[
                    inventory_pb.Stock(product_id=pid, available=self.levels[pid])
                    for pid in request.product_ids
                    if pid in self.levels
                ]
            )

        return call


def inventory_over(channel: FakeInventoryChannel) -> GrpcStockLevels:
    return GrpcStockLevels(cast(grpc.aio.Channel, channel))


def product(product_id: str) -> Product:
    return Product(product_id, product_id.title(), "", Money("EUR", 450), "food", 250, NOW, NOW)


def degraded_count(method: str) -> float:
    labels = {"dependency": "inventory", "method": method}
    return REGISTRY.get_sample_value("shop_degraded_answers_total", labels) or 0.0


# The fallback's decision ----------------------------------------------------------------


async def test_stock_levels_are_read_in_one_call_for_the_distinct_products() -> None:
    channel = FakeInventoryChannel({"tea": 4, "mug": 0})
    products = [product("tea"), product("mug"), product("tea"), product("pen")]
    stock = await handlers.read_stock(inventory_over(channel), products, GET_PRODUCT)
    assert channel.calls == [(["tea", "mug", "pen"], STOCK_READ_SECONDS)]
    assert not stock.unreachable
    # A product inventory holds no stock for (its creation never reached it) has none.
    assert [stock.available_of(p) for p in ("tea", "mug", "pen")] == [4, 0, 0]


async def test_no_products_no_call() -> None:
    channel = FakeInventoryChannel()
    stock = await handlers.read_stock(inventory_over(channel), [], GET_PRODUCT)
    assert (channel.calls, stock.unreachable) == ([], False)


@pytest.fixture(autouse=True)
def nothing_said_lately() -> None:
    """Each test starts with no degraded answer logged lately (`degradation` throttles)."""
    degradation._said.clear()


@pytest.mark.parametrize("code", UNANSWERED, ids=lambda code: code.name)
async def test_inventory_not_answering_gives_a_degraded_reading_logged_and_counted(
    code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    channel = FakeInventoryChannel({"tea": 4}, failure=code)
    before = degraded_count(GET_PRODUCT)
    with caplog.at_level(logging.WARNING, logger=degradation.__name__):
        stock = await handlers.read_stock(inventory_over(channel), [product("tea")], GET_PRODUCT)
    assert stock.unreachable
    assert stock.available == {}
    assert degraded_count(GET_PRODUCT) == before + 1
    [warning] = [r for r in caplog.records if r.name == degradation.__name__]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"{GET_PRODUCT}: inventory did not answer ({code.name})")
    assert "without stock levels" in warning.getMessage()


@pytest.mark.parametrize("code", FAILED, ids=lambda code: code.name)
async def test_any_other_failure_of_inventory_stays_an_error(code: grpc.StatusCode) -> None:
    channel = FakeInventoryChannel({"tea": 4}, failure=code)
    before = degraded_count(GET_PRODUCT)
    with pytest.raises(Unavailable) as failed:
        await handlers.read_stock(inventory_over(channel), [product("tea")], GET_PRODUCT)
    assert failed.value.reason == "INVENTORY_UNAVAILABLE"
    assert isinstance(failed.value.__cause__, grpc.aio.AioRpcError)  # logged by the runner
    assert degraded_count(GET_PRODUCT) == before


def inventory_with_circuit(channel: FakeInventoryChannel, clock: Clock[float]) -> GrpcStockLevels:
    """Stock levels over `channel` whose circuit runs on `clock`."""
    stock_reads = Circuit("inventory", stock_read_outcome, clock=clock)
    return GrpcStockLevels(cast(grpc.aio.Channel, channel), stock_reads)


async def test_an_inventory_that_stops_answering_is_asked_again_only_once_a_while() -> None:
    channel, clock = FakeInventoryChannel({"tea": 4}, grpc.StatusCode.DEADLINE_EXCEEDED), Clock(0.0)
    inventory = inventory_with_circuit(channel, clock)
    before = degraded_count(GET_PRODUCT)
    readings = [
        await handlers.read_stock(inventory, [product("tea")], GET_PRODUCT) for _ in range(8)
    ]
    assert all(reading.unreachable for reading in readings)
    assert len(channel.calls) == TRIP_AFTER  # then no call: each read answers at once
    assert degraded_count(GET_PRODUCT) == before + 8
    # Once a while one read tries; the others still do without while it is out.
    clock.now += OPEN_SECONDS
    channel.failure = None
    assert not (await handlers.read_stock(inventory, [product("tea")], GET_PRODUCT)).unreachable
    assert len(channel.calls) == TRIP_AFTER + 1
    # Answered: every read asks again.
    for _ in range(3):
        reading = await handlers.read_stock(inventory, [product("tea")], GET_PRODUCT)
        assert reading.available_of("tea") == 4
    assert len(channel.calls) == TRIP_AFTER + 4


@pytest.mark.parametrize("code", FAILED[:3], ids=lambda code: code.name)
async def test_an_inventory_that_answers_with_an_error_is_always_asked(
    code: grpc.StatusCode,
) -> None:
    channel = FakeInventoryChannel({"tea": 4}, failure=code)
    inventory = inventory_with_circuit(channel, Clock(0.0))
    for _ in range(2 * TRIP_AFTER):
        with pytest.raises(Unavailable):
            await handlers.read_stock(inventory, [product("tea")], GET_PRODUCT)
    assert len(channel.calls) == 2 * TRIP_AFTER


class ServedContext:
    """What `deadlines.served` reads of a served call: the time it has left."""

    def __init__(self, left: float) -> None:
        self.left = left

    def time_remaining(self) -> float:
        return self.left


async def read_while_serving(
    channel: FakeInventoryChannel, left: float, inventory: GrpcStockLevels | None = None
) -> Any:
    """`read_stock` inside a served call that has `left` seconds of its deadline, from
    `inventory` (else new stock levels over `channel`)."""
    levels = inventory or inventory_over(channel)

    async def behavior(request: Any, context: Any) -> handlers.StockReading:
        return await handlers.read_stock(levels, [product("tea")], GET_PRODUCT)

    return await deadlines.served(behavior, GET_PRODUCT)(None, ServedContext(left))


async def test_a_read_keeps_time_to_answer_without_stock() -> None:
    channel = FakeInventoryChannel({"tea": 4})
    await read_while_serving(channel, 10.0)  # time enough: the stock read's own limit
    await read_while_serving(channel, 0.6)  # less: what is left, less the reserve
    [(_, enough), (_, short)] = channel.calls
    assert enough == STOCK_READ_SECONDS
    assert short is not None
    assert 0.25 < short <= 0.6 - ANSWER_RESERVE_SECONDS


async def test_a_read_whose_own_deadline_ran_out_is_not_degraded() -> None:
    """Inventory ran out of the time the served read had left: the read's caller is gone,
    so it gets DEADLINE_EXCEEDED as before (the runner maps it: `deadlines.ran_out`). It
    says nothing of inventory: however many such reads, the next one still asks."""
    channel = FakeInventoryChannel(failure=grpc.StatusCode.DEADLINE_EXCEEDED)
    inventory = inventory_over(channel)
    before = degraded_count(GET_PRODUCT)
    for _ in range(2 * TRIP_AFTER):
        with pytest.raises(Unavailable) as failed:
            await read_while_serving(channel, 0.01, inventory)
        assert isinstance(failed.value.__cause__, grpc.aio.AioRpcError)
    assert [timeout for _, timeout in channel.calls] == [0.0] * 2 * TRIP_AFTER
    assert degraded_count(GET_PRODUCT) == before


# The servicer in the runner: the answer, its marker and its cache headers ---------------


@pytest.fixture
def store() -> MemoryCatalog:
    catalog = MemoryCatalog()
    for product_id in ("mug", "tea"):
        catalog.products[product_id] = product(product_id)
    return catalog


@asynccontextmanager
async def catalog_served(store: MemoryCatalog, channel: FakeInventoryChannel) -> AsyncIterator[Any]:
    """A stub of the catalog (API v1) on `store`, its inventory behind `channel`."""
    registration = Registration.of(CatalogServicer(store, inventory_over(channel)), pb, pb_grpc)
    async with serving(registration) as served:
        yield pb_grpc.CatalogServiceStub(served)


@pytest.fixture
async def healthy(store: MemoryCatalog) -> AsyncIterator[tuple[Any, FakeInventoryChannel]]:
    channel = FakeInventoryChannel({"tea": 4, "mug": 1})
    async with catalog_served(store, channel) as catalog:
        yield catalog, channel


@pytest.fixture
async def stopped(store: MemoryCatalog) -> AsyncIterator[tuple[Any, FakeInventoryChannel]]:
    channel = FakeInventoryChannel(failure=grpc.StatusCode.UNAVAILABLE)
    async with catalog_served(store, channel) as catalog:
        yield catalog, channel


async def get_product(
    catalog: Any, view: pb.ProductView, cached: bool = False
) -> tuple[pb.Product, dict[str, str]]:
    """GetProduct("tea") in `view`, as the edge's cache asks for it when `cached`; the
    product and the answer's initial metadata."""
    metadata = ((CACHE_HEADER, "max-age=10"),) if cached else ()
    call = catalog.GetProduct(pb.GetProductRequest(id="tea", view=view), metadata=metadata)
    response = await call
    return response.product, dict(await call.initial_metadata())


async def test_with_stock_each_product_has_its_current_level(
    healthy: tuple[Any, FakeInventoryChannel],
) -> None:
    catalog, channel = healthy
    got, headers = await get_product(catalog, pb.PRODUCT_VIEW_WITH_STOCK, cached=True)
    assert (got.stock.state, got.stock.available) == (pb.STOCK_STATE_CURRENT, 4)
    assert headers["cache-control"] == "public, max-age=10"  # a whole answer may be kept
    listed = await catalog.ListProducts(pb.ListProductsRequest(view=pb.PRODUCT_VIEW_WITH_STOCK))
    assert [(p.id, p.stock.available) for p in listed.products] == [("mug", 1), ("tea", 4)]
    batch = await catalog.BatchGetProducts(
        pb.BatchGetProductsRequest(ids=["tea", "mug"], view=pb.PRODUCT_VIEW_WITH_STOCK)
    )
    assert [p.stock.state for p in batch.products] == [pb.STOCK_STATE_CURRENT] * 2
    assert [ids for ids, _ in channel.calls] == [["tea"], ["mug", "tea"], ["tea", "mug"]]


@pytest.mark.parametrize("view", [pb.PRODUCT_VIEW_UNSPECIFIED, pb.PRODUCT_VIEW_BASIC])
async def test_the_basic_view_asks_inventory_nothing(
    view: pb.ProductView, stopped: tuple[Any, FakeInventoryChannel]
) -> None:
    catalog, channel = stopped
    got, headers = await get_product(catalog, view, cached=True)
    assert not got.HasField("stock")
    assert headers["cache-control"] == "public, max-age=10"
    await catalog.ListProducts(pb.ListProductsRequest(view=view))
    await catalog.BatchGetProducts(pb.BatchGetProductsRequest(ids=["tea"], view=view))
    assert channel.calls == []


async def test_without_inventory_the_products_come_marked_and_never_cached(
    stopped: tuple[Any, FakeInventoryChannel],
) -> None:
    catalog, _ = stopped
    for cached in (True, False):
        got, headers = await get_product(catalog, pb.PRODUCT_VIEW_WITH_STOCK, cached)
        assert (got.id, got.name) == ("tea", "Tea")
        assert got.stock.state == pb.STOCK_STATE_UNREACHABLE
        assert not got.stock.HasField("available")
        assert headers["cache-control"] == "no-store"
        assert "etag" not in headers
    listed = await catalog.ListProducts(pb.ListProductsRequest(view=pb.PRODUCT_VIEW_WITH_STOCK))
    assert [(p.id, p.stock.state) for p in listed.products] == [
        ("mug", pb.STOCK_STATE_UNREACHABLE),
        ("tea", pb.STOCK_STATE_UNREACHABLE),
    ]
    # What marks one answer marks no other: the next basic read may be kept.
    _, headers = await get_product(catalog, pb.PRODUCT_VIEW_BASIC, cached=True)
    assert headers["cache-control"] == "public, max-age=10"


async def test_a_failing_inventory_fails_the_read(store: MemoryCatalog) -> None:
    channel = FakeInventoryChannel(failure=grpc.StatusCode.PERMISSION_DENIED)
    async with catalog_served(store, channel) as catalog:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await get_product(catalog, pb.PRODUCT_VIEW_WITH_STOCK, cached=True)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(failed.value) == "INVENTORY_UNAVAILABLE"
        # The basic view does not need inventory, and does not fail.
        got, _ = await get_product(catalog, pb.PRODUCT_VIEW_BASIC)
        assert got.id == "tea"


async def test_a_dependency_that_stays_away_is_logged_once_per_interval_and_counted_always(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = FakeInventoryChannel({"tea": 4}, failure=grpc.StatusCode.UNAVAILABLE)
    before = degraded_count(GET_PRODUCT)
    with caplog.at_level(logging.WARNING, logger=degradation.__name__):
        for _ in range(5):
            await handlers.read_stock(inventory_over(channel), [product("tea")], GET_PRODUCT)
        lines = [r for r in caplog.records if r.name == degradation.__name__]
        assert len(lines) == 1  # the first at once; the next within LOG_EVERY_SECONDS wait
        degradation._said[("inventory", GET_PRODUCT)] = (
            degradation._said[("inventory", GET_PRODUCT)][0] - degradation.LOG_EVERY_SECONDS,
            degradation._said[("inventory", GET_PRODUCT)][1],
        )
        await handlers.read_stock(inventory_over(channel), [product("tea")], GET_PRODUCT)
    assert degraded_count(GET_PRODUCT) == before + 6
    lines = [r for r in caplog.records if r.name == degradation.__name__]
    assert len(lines) == 2
    assert lines[1].getMessage().endswith("(5 such answers since the last line)")
