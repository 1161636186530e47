"""The shared runner, serving a tiny CatalogService on port 0, checked from outside."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from mesh.control.binaries import find_binary
from mesh.runtime.reflection import SERVICE_NAMES, V1_FILE, V1_SERVICE
from mesh.runtime.runner import ServiceRunner
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from tests.support import tiny_catalog
from tests.support.reflection import defining_file, listed

pytestmark = pytest.mark.integration


@pytest.fixture
async def runner() -> AsyncIterator[ServiceRunner]:
    runner = ServiceRunner([tiny_catalog.registration()], port=0, grace=2.0)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop(0)


@pytest.fixture
async def channel(runner: ServiceRunner) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(runner.address) as channel:
        yield channel


async def grpcurl(*args: str) -> tuple[int, str]:
    """Run the real grpcurl binary without blocking the server's event loop."""
    process = await asyncio.create_subprocess_exec(
        find_binary("grpcurl"), *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


def rich_status(error: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[object]]:
    """The ErrorInfo and the other details of a failed call's google.rpc.Status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the status carries no google.rpc.Status details"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info, list(status.details[1:])


async def test_binds_loopback_on_a_free_port(runner: ServiceRunner) -> None:
    assert runner.port is not None
    assert runner.port > 0
    assert runner.address == f"127.0.0.1:{runner.port}"


async def test_health_reports_serving_for_the_server_and_each_service(
    channel: grpc.aio.Channel,
) -> None:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    for service in ("", "shop.catalog.v1.CatalogService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.Check(health_pb2.HealthCheckRequest(service="shop.nope.v1.NopeService"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_list_is_unimplemented_in_words(channel: grpc.aio.Channel) -> None:
    health_list: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/grpc.health.v1.Health/List"
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health_list(b"", timeout=5)  # an empty HealthListRequest
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Check each service" in (refused.value.details() or "")


async def test_grpcurl_lists_and_describes_through_reflection(runner: ServiceRunner) -> None:
    code, listing = await grpcurl("-plaintext", runner.address, "list")
    assert code == 0, listing
    assert set(listing.split()) >= {
        "shop.catalog.v1.CatalogService",
        "grpc.health.v1.Health",
        *SERVICE_NAMES,
    }
    code, described = await grpcurl(
        "-plaintext", runner.address, "describe", "shop.catalog.v1.CatalogService"
    )
    assert code == 0, described
    assert "rpc CreateProduct ( .shop.catalog.v1.CreateProductRequest )" in described
    code, described = await grpcurl(
        "-plaintext", runner.address, "describe", "shop.catalog.v1.CreateProductRequest"
    )
    assert code == 0, described
    assert ".shop.catalog.v1.Product product = 1" in described


@pytest.mark.parametrize("version", SERVICE_NAMES)
async def test_reflection_answers_in_v1_and_v1alpha_alike(
    runner: ServiceRunner, version: str
) -> None:
    assert await listed(runner.address, version) == {
        "shop.catalog.v1.CatalogService",
        "grpc.health.v1.Health",
        *SERVICE_NAMES,
    }
    assert await defining_file(runner.address, "shop.catalog.v1.CatalogService", version) == (
        "shop/catalog/v1/catalog_service.proto"
    )
    assert await defining_file(runner.address, V1_SERVICE, version) == V1_FILE
    assert await defining_file(runner.address, "shop.nope.v1.NopeService", version) == "not found"


async def test_grpcurl_describes_reflection_v1(runner: ServiceRunner) -> None:
    code, described = await grpcurl("-plaintext", runner.address, "describe", V1_SERVICE)
    assert code == 0, described
    assert (
        "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest ) "
        "returns ( stream .grpc.reflection.v1.ServerReflectionResponse )"
    ) in described


async def test_grpcurl_calls_a_method_through_reflection(runner: ServiceRunner) -> None:
    code, output = await grpcurl(
        "-plaintext",
        "-d",
        '{"id": "p1"}',
        runner.address,
        "shop.catalog.v1.CatalogService/GetProduct",
    )
    assert code == 0, output
    product = json.loads(output)["product"]
    assert product["name"] == "Tea"
    # grpcurl prints proto field names.
    assert product["price"] == {"currency_code": "EUR", "units": "4", "nanos": 500000000}


async def test_missing_required_fields_are_invalid_argument_with_bad_request(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    request = pb.CreateProductRequest(product=pb.Product(description="no name, price or category"))
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.CreateProduct(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, details = rich_status(failure.value)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "shop.catalog.v1")
    bad_request = error_details_pb2.BadRequest()
    assert details[0].Unpack(bad_request)  # type: ignore[attr-defined]
    assert [v.field for v in bad_request.field_violations] == [
        "product.name",
        "product.price",
        "product.category",
        "product.weight_grams",
    ]


async def test_grpcurl_shows_the_bad_request_details(runner: ServiceRunner) -> None:
    code, output = await grpcurl(
        "-plaintext",
        "-format-error",
        "-d",
        "{}",
        runner.address,
        "shop.catalog.v1.CatalogService/CreateProduct",
    )
    assert code != 0
    error = json.loads(output)
    assert error["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    kinds = {detail["@type"] for detail in error["details"]}
    assert kinds == {
        "type.googleapis.com/google.rpc.ErrorInfo",
        "type.googleapis.com/google.rpc.BadRequest",
    }


async def test_domain_errors_keep_their_code_reason_and_metadata(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetProduct(pb.GetProductRequest(id="missing"))
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert failure.value.details() == "product 'missing' does not exist"
    info, _ = rich_status(failure.value)
    assert info.reason == "PRODUCT_NOT_FOUND"
    assert dict(info.metadata) == {"product_id": "missing"}


async def test_unexpected_errors_are_internal_and_leak_nothing(
    channel: grpc.aio.Channel,
) -> None:
    stub = pb_grpc.CatalogServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetProduct(pb.GetProductRequest(id="boom"))
    assert failure.value.code() == grpc.StatusCode.INTERNAL
    assert failure.value.details() == "internal error"
    everything = repr(failure.value.trailing_metadata()) + str(failure.value.debug_error_string())
    assert "hunter2" not in everything
    assert "Traceback" not in everything


#: Bytes no message decodes: a string field (1) holding bytes that are not UTF-8, and a
#: length that runs past the end.
UNDECODABLE = (b"\x0a\x02\xff\xfe", b"\x0a\x7f\x01")


async def _send_raw(channel: grpc.aio.Channel, kind: str, path: str, raw: bytes) -> None:
    """Call `path` (a method of `kind`) with `raw` as its request, reading every answer."""
    generic: Any = channel  # its calls untyped: bytes in, bytes out
    if kind == "unary":
        await generic.unary_unary(path)(raw)
    elif kind == "server-streaming":
        [_ async for _ in generic.unary_stream(path)(raw)]
    else:
        [_ async for _ in generic.stream_stream(path)(iter([raw]))]


@pytest.mark.parametrize("raw", UNDECODABLE)
@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("unary", "/shop.catalog.v1.CatalogService/GetProduct"),
        ("unary", "/grpc.health.v1.Health/Check"),
        ("server-streaming", "/grpc.health.v1.Health/Watch"),
        ("bidi", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
    ],
)
async def test_undecodable_requests_are_invalid_argument_and_leak_nothing(
    channel: grpc.aio.Channel, kind: str, path: str, raw: bytes
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await _send_raw(channel, kind, path, raw)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == (
        "the request could not be decoded: its bytes are not a message of the method's request type"
    )
    info, details = rich_status(failure.value)
    assert info.reason == "MALFORMED_REQUEST"
    assert details == []


async def test_streaming_methods_still_serve_decodable_requests(
    channel: grpc.aio.Channel, runner: ServiceRunner
) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)
    watched = health.Watch(health_pb2.HealthCheckRequest())
    first = await watched.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watched.cancel()
    code, listing = await grpcurl("-plaintext", runner.address, "list")
    assert code == 0, listing
    assert "shop.catalog.v1.CatalogService" in listing.split()


@pytest.fixture
def served_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The tiny catalog in its own process, as a service runs; stopped by pid."""
    with tiny_catalog.served() as served:
        yield served


async def test_sigterm_stops_gracefully_finishing_calls_in_flight(
    served_process: tuple[subprocess.Popen[str], str],
) -> None:
    process, address = served_process
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CatalogServiceStub(channel)
        health: Any = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(stub.GetProduct(pb.GetProductRequest(id="slow")))
        # Time for the slow call to reach the server, which shows no sign of it outside.
        await asyncio.sleep(tiny_catalog.SLOW_SECONDS / 4)
        process.send_signal(signal.SIGTERM)

        # Watchers (load balancers) hear NOT_SERVING as soon as the stop begins.
        changed = await asyncio.wait_for(watch.read(), timeout=5)
        assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Into the drain, still well before the slow call ends.
        await asyncio.sleep(tiny_catalog.SLOW_SECONDS / 4)

        # While it drains, the server takes no new calls.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetProduct(pb.GetProductRequest(id="p1"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        response = await in_flight
        assert response.product.id == "p1"

    assert await asyncio.to_thread(process.wait, 10) == 0
