"""The edge companion's health, served on port 0 beside a stand-in for the edge: the edge
itself, public services checked through the edge, any other name unknown."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.control.contracts import DESCRIPTOR_SET
from mesh.control.edge_companion import EdgeHealth, descriptor_pool_of
from mesh.control.envoy.edge_rules import HEALTH_OF_HEADER
from mesh.runtime.reflection import V1_FILE, V1_SERVICE, V1ALPHA_SERVICE
from mesh.runtime.runner import ServiceRunner
from tests.support.mesh import ROOT
from tests.support.reflection import defining_file, listed

pytestmark = pytest.mark.integration

CATALOG = "shop.catalog.v1.CatalogService"
PUBLIC = [CATALOG, "shop.shipping.v1.ShippingService"]
Status = health_pb2.HealthCheckResponse


class StandInEdge(health.aio.HealthServicer):
    """Answers every check NOT_SERVING (no companion would say that of a service on its
    own) and records what it was asked: the service and the header naming it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str | None]] = []

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Status:
        header = dict(context.invocation_metadata()).get(HEALTH_OF_HEADER)
        self.asked.append((request.service, header))
        return Status(status=Status.NOT_SERVING)


@pytest.fixture
async def edge() -> AsyncIterator[tuple[StandInEdge, int]]:
    servicer = StandInEdge()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def companion_on(edge_port: int) -> AsyncIterator[str]:
    """The companion, as `edge_companion.main` serves it, asking the edge on `edge_port`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_port}") as channel:
        runner = ServiceRunner(
            [],
            port=0,
            reflected=PUBLIC,
            pool=descriptor_pool_of(ROOT / DESCRIPTOR_SET, PUBLIC),
            health_servicer=EdgeHealth(PUBLIC, channel),
        )
        await runner.start()
        try:
            yield runner.address
        finally:
            await runner.stop(0)


@pytest.fixture
async def companion(edge: tuple[StandInEdge, int]) -> AsyncIterator[str]:
    async with companion_on(edge[1]) as address:
        yield address


async def check(address: str, service: str) -> Status:
    async with grpc.aio.insecure_channel(address) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        response: Status = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return response


async def test_a_public_service_is_checked_through_the_edge(
    edge: tuple[StandInEdge, int], companion: str
) -> None:
    assert (await check(companion, CATALOG)).status == Status.NOT_SERVING
    assert edge[0].asked == [(CATALOG, CATALOG)]


async def test_no_service_is_the_edge_itself(edge: tuple[StandInEdge, int], companion: str) -> None:
    assert (await check(companion, "")).status == Status.SERVING
    assert edge[0].asked == []


@pytest.mark.parametrize(
    "service", ["shop.processor.v1.ProcessorService", "shop.nope.v1.NopeService"]
)
async def test_an_internal_or_unknown_service_is_not_found_alike(
    edge: tuple[StandInEdge, int], companion: str, service: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(companion, service)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.details() in ("", None)
    assert edge[0].asked == []


async def test_a_public_service_the_edge_cannot_reach_is_not_serving() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    async with companion_on(closed) as address:
        assert (await check(address, CATALOG)).status == Status.NOT_SERVING


async def test_watch_follows_the_edge_itself_only(companion: str) -> None:
    async with grpc.aio.insecure_channel(companion) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        own = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert (await own.read()).status == Status.SERVING
        own.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Watch(health_pb2.HealthCheckRequest(service=CATALOG), timeout=10).read()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "poll Check" in (refused.value.details() or "")


@pytest.mark.parametrize("version", [V1_SERVICE, V1ALPHA_SERVICE])
async def test_reflection_describes_health_and_itself_in_both_versions(
    companion: str, version: str
) -> None:
    assert await listed(companion, version) == {
        *PUBLIC,
        "grpc.health.v1.Health",
        V1_SERVICE,
        V1ALPHA_SERVICE,
    }
    assert await defining_file(companion, "grpc.health.v1.Health", version) == (
        "grpc_health/v1/health.proto"
    )
    assert await defining_file(companion, V1_SERVICE, version) == V1_FILE
    assert await defining_file(companion, "shop.processor.v1.ProcessorService", version) == (
        "not found"
    )
