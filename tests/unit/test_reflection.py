"""Reflection v1's contract, derived from v1alpha's, and its place in a server's pool."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

from mesh.runtime.reflection import (
    SERVICE_NAMES,
    V1_FILE,
    V1_SERVICE,
    enable_reflection,
    v1_file,
)


def _fields(file: descriptor_pb2.FileDescriptorProto) -> list[tuple[str, str, int, int]]:
    return [
        (message.name, field.name, field.number, field.type)
        for message in file.message_type
        for field in message.field
    ]


def test_v1_is_v1alpha_field_for_field_in_its_own_package() -> None:
    v1 = v1_file()
    alpha = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    assert (v1.name, v1.package) == (V1_FILE, "grpc.reflection.v1")
    assert _fields(v1) == _fields(alpha)
    method = v1.service[0].method[0]
    referenced = {f.type_name for m in v1.message_type for f in m.field if f.type_name}
    referenced |= {method.input_type, method.output_type}
    assert all(name.startswith(".grpc.reflection.v1.") for name in referenced), referenced
    assert not v1.options.deprecated


class RecordingServer:
    """Records the services a server would answer for."""

    def __init__(self) -> None:
        self.services: list[str] = []

    def add_generic_rpc_handlers(self, handlers: list[Any]) -> None:
        self.services += [handler.service_name() for handler in handlers]


def test_both_versions_are_served_and_v1_described_however_many_servers_share_a_pool() -> None:
    pool = descriptor_pool.DescriptorPool()
    servers = [RecordingServer(), RecordingServer()]
    for server in servers:
        enable_reflection(server, [], pool=pool)  # type: ignore[arg-type]
    assert [server.services for server in servers] == [list(SERVICE_NAMES)] * 2
    info = pool.FindServiceByName(V1_SERVICE).methods_by_name["ServerReflectionInfo"]
    assert info.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
