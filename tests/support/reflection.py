"""Server reflection asked directly, one version at a time, as a client asks it that has
no fallback from one version to the other (grpcurl 1.8 asks v1alpha only)."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from mesh.runtime.reflection import V1_SERVICE

Request = reflection_pb2.ServerReflectionRequest
Response = reflection_pb2.ServerReflectionResponse


async def reflect(address: str, request: Request, service: str = V1_SERVICE) -> Response:
    """The one answer of reflection `service` (v1 by default) at `address` to `request`.
    The two versions' messages are the same bytes, so v1alpha's classes encode v1's."""
    async with grpc.aio.insecure_channel(address) as channel:
        info = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=Request.SerializeToString,
            response_deserializer=Response.FromString,
        )
        responses = [response async for response in info(iter([request]), timeout=10)]
    assert len(responses) == 1, responses
    return responses[0]


async def listed(address: str, service: str = V1_SERVICE) -> set[str]:
    """The services reflection `service` at `address` lists."""
    response = await reflect(address, Request(list_services=""), service)
    return {listed.name for listed in response.list_services_response.service}


async def defining_file(address: str, symbol: str, service: str = V1_SERVICE) -> str:
    """The name of the file that reflection `service` at `address` says defines `symbol`,
    or `not found`."""
    response = await reflect(address, Request(file_containing_symbol=symbol), service)
    if response.HasField("error_response"):
        assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        return "not found"
    first = response.file_descriptor_response.file_descriptor_proto[0]
    return descriptor_pb2.FileDescriptorProto.FromString(first).name
