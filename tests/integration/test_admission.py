"""Admission control and deadlines in the shared runner, against real gRPC servers.

A servicer whose calls wait until the test releases them shows what an app admits at
once, what it refuses and how (`mesh.runtime.admission`); a second runner that calls the first
while serving shows the deadline it passes on (`mesh.runtime.deadlines`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from mesh.runtime import admission, deadlines, metrics
from mesh.runtime.runner import Registration, ServiceRunner
from mesh.tools.chaos.frame import poll
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"


class Held(pb_grpc.CatalogServiceServicer):
    """GetProduct and ListProducts wait for `release`; each call's deadline (seconds
    left, or None) is noted as it starts, and calls cancelled under it are counted."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[float | None] = []
        self.cancelled = 0

    async def _held(self, context: Any) -> None:
        self.started.append(context.time_remaining())
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def GetProduct(self, request: pb.GetProductRequest, context: Any) -> Any:
        await self._held(context)
        return pb.GetProductResponse(product=pb.Product(id=request.id))

    async def ListProducts(self, request: pb.ListProductsRequest, context: Any) -> Any:
        await self._held(context)
        return pb.ListProductsResponse()


class Forwarding(pb_grpc.CatalogServiceServicer):
    """BatchGetProducts asks another catalog for the first id, as a service calls its
    dependency while serving, on a channel made as `mesh.runtime.service.channel_to` makes it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub: Any = pb_grpc.CatalogServiceStub(channel)

    async def BatchGetProducts(self, request: pb.BatchGetProductsRequest, context: Any) -> Any:
        found = await self._stub.GetProduct(pb.GetProductRequest(id=request.ids[0]))
        return pb.BatchGetProductsResponse(products=[found.product])


@pytest.fixture
async def held() -> Held:
    return Held()


async def started(servicer: object, limits: admission.Limits | None = None) -> ServiceRunner:
    runner = ServiceRunner(
        [Registration.of(servicer, pb, pb_grpc)], port=0, grace=0.5, limits=limits
    )
    await runner.start()
    return runner


@pytest.fixture
async def stub(held: Held) -> AsyncIterator[Any]:
    """A client of a runner serving `held` that admits 2 calls, 1 of them expensive."""
    limits = admission.Limits(2, 1, frozenset({"ListProducts"}))
    runner = await started(held, limits)
    try:
        async with grpc.aio.insecure_channel(runner.address) as channel:
            yield pb_grpc.CatalogServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    finally:
        held.release.set()
        await runner.stop(0)


async def until(condition: Any) -> None:
    assert await poll(condition, 10), "not within 10 s"


def refused_count() -> float:
    value = metrics.REFUSED.labels(GET_PRODUCT)._value.get()
    return float(value)


async def test_calls_beyond_the_limit_are_refused_unstarted_and_marked_not_applied(
    held: Held, stub: Any
) -> None:
    catalog, health = stub
    running = [asyncio.ensure_future(catalog.GetProduct(pb.GetProductRequest(id=str(n))))
               for n in range(2)]  # fmt: skip
    await until(lambda: len(held.started) == 2)
    before = refused_count()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await catalog.GetProduct(pb.GetProductRequest(id="third"), timeout=5)
    error = refused.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert (admission.NOT_APPLIED_HEADER, "1") in tuple(error.trailing_metadata() or ())
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(retry)
    assert (info.reason, info.domain) == ("OVERLOADED", "shop.catalog.v1")
    assert retry.retry_delay.ToMilliseconds() == admission.RETRY_DELAY_MS
    assert len(held.started) == 2  # the refused call never reached the servicer
    assert refused_count() == before + 1
    # However busy, the app answers its health checks.
    check = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    held.release.set()
    assert [r.product.id for r in await asyncio.gather(*running)] == ["0", "1"]
    again = await catalog.GetProduct(pb.GetProductRequest(id="again"), timeout=5)
    assert again.product.id == "again"  # the slots were given back


async def test_expensive_methods_have_a_limit_of_their_own(held: Held, stub: Any) -> None:
    catalog, _ = stub
    expensive = asyncio.ensure_future(catalog.ListProducts(pb.ListProductsRequest()))
    await until(lambda: len(held.started) == 1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await catalog.ListProducts(pb.ListProductsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # A cheap call still fits under the limit of every call (2).
    cheap = asyncio.ensure_future(catalog.GetProduct(pb.GetProductRequest(id="c")))
    await until(lambda: len(held.started) == 2)
    held.release.set()
    await asyncio.gather(expensive, cheap)


async def test_a_call_whose_caller_gave_up_stops_its_work(held: Held, stub: Any) -> None:
    catalog, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await catalog.GetProduct(pb.GetProductRequest(id="x"), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: held.cancelled == 1)
    call = catalog.GetProduct(pb.GetProductRequest(id="y"))
    await until(lambda: len(held.started) == 2)
    call.cancel()
    await until(lambda: held.cancelled == 2)


@pytest.fixture
async def forwarding(held: Held) -> AsyncIterator[Any]:
    """A runner whose BatchGetProducts calls GetProduct of a runner serving `held`."""
    back = await started(held)
    channel = grpc.aio.insecure_channel(back.address, interceptors=[deadlines.Propagation()])
    front = await started(Forwarding(channel))
    try:
        async with grpc.aio.insecure_channel(front.address) as client:
            yield pb_grpc.CatalogServiceStub(client)
    finally:
        held.release.set()
        await front.stop(0)
        await channel.close()
        await back.stop(0)


async def test_a_call_made_while_serving_gets_only_the_time_its_caller_has_left(
    held: Held, forwarding: Any
) -> None:
    held.release.set()
    await forwarding.BatchGetProducts(pb.BatchGetProductsRequest(ids=["a"]), timeout=3)
    await forwarding.BatchGetProducts(pb.BatchGetProductsRequest(ids=["b"]))
    with_deadline, without = held.started
    assert with_deadline is not None
    # gRPC writes a timeout rounded up to a few significant digits: up to 1% more.
    assert 2.0 < with_deadline < 3.0 * 1.01
    assert without is None  # no deadline is made up where the caller gave none


async def test_once_the_first_caller_gives_up_nobody_downstream_works_on(
    held: Held, forwarding: Any
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await forwarding.BatchGetProducts(pb.BatchGetProductsRequest(ids=["a"]), timeout=0.5)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: held.cancelled == 1)
