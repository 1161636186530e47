"""The edge's companion: reflection of the whole public API, and gRPC health of the edge
and of each public service, answered beside the edge.

Reflection: clients reach it through the edge (`grpcurl -plaintext 127.0.0.1:8080 list`),
in both versions (`mesh.runtime.reflection`), so they can list and describe the whole
public API in one place, from the same descriptor set the edge transcodes with. It knows
nothing else: its descriptors are the public part of the set (`public_files`), so neither
`list` nor `describe` shows a service the edge does not expose, a method marked INTERNAL,
or a message or enum only those use (the events among them); health and reflection are
described from their own contracts.

Health (`EdgeHealth`): `Check` of no service is the edge itself. `Check` of a public
service is asked of the edge in turn, on loopback (in a container the companion shares
the edge's network namespace), with `HEALTH_OF_HEADER` naming the service; the edge
routes that check to the service's instances as it routes the service's calls (over mTLS
as the edge, which their sidecars admit to health checks as to public methods; another
instance tried where one never got it). So SERVING means what a client needs: through
the edge, an instance serves the service. Why so: the name is in the request body, which
Envoy cannot route on, so the companion reads it; and the edge's own view of its
clusters (its admin, a unix socket no other container sees) cannot tell a serving app
from a live sidecar, so the check goes to the apps. Any other name, an internal
service's or an unknown one, is NOT_FOUND like a name no server knows, so nothing
internal is revealed; a client that sets the header itself reaches the same check of a
public service's app, which knows no other service's name. `Watch` follows the edge
itself only: the edge relays single checks, not streams of them, so for a public service
it is UNIMPLEMENTED and clients poll `Check`.

The edge's HTTPS certificate, when it is the user's own (`--tls-cert`, `--tls-key`): the
companion copies the pair into the directory the edge's Envoy watches (`--tls-dir`) each
time the files change and belong together (`mesh.control.edge_tls`), so a replaced
certificate is served within about a second, with no restart.

The deny list of API keys (`--deny-list-port`, `--deny-list-dir`): the companion keeps
the file the edge refuses revoked keys from what identity says (`mesh.control.deny_list`).

Run as `python -m mesh.control.edge_companion --port P --edge-port E --descriptor-set FILE
--service NAME... [--tls-cert FILE --tls-key FILE --tls-dir DIR]
[--deny-list-port P --deny-list-dir DIR]`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.api import visibility_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.control import deny_list, edge_tls
from mesh.control.envoy.edge_rules import HEALTH_CHECK_TIMEOUT, HEALTH_OF_HEADER
from mesh.runtime.runner import HealthServicer, ServiceRunner

log = logging.getLogger(__name__)

_File = descriptor_pb2.FileDescriptorProto
_Message = descriptor_pb2.DescriptorProto
#: The packages of the shop's own contracts, which `public_files` prunes.
_OWNED = "shop."

if TYPE_CHECKING:
    _Context = grpc.aio.ServicerContext[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ]


def _internal(method: descriptor_pb2.MethodDescriptorProto) -> bool:
    visibility = method.options.Extensions[visibility_pb2.method_visibility]
    return bool(visibility.restriction == "INTERNAL")


def _nested(prefix: str, message: _Message) -> Iterator[tuple[str, _Message]]:
    """`message` (named `prefix`) and every message nested in it, with full names."""
    yield prefix, message
    for inner in message.nested_type:
        yield from _nested(f"{prefix}.{inner.name}", inner)


def _tops(files: Sequence[_File]) -> dict[str, str]:
    """The top-level message or enum each full name (nested ones included) lies in."""
    tops: dict[str, str] = {}
    for file in files:
        for message in file.message_type:
            top = f".{file.package}.{message.name}"
            for name, inner in _nested(top, message):
                tops[name] = top
                tops.update({f"{name}.{enum.name}": top for enum in inner.enum_type})
        tops.update(
            {f".{file.package}.{e.name}": f".{file.package}.{e.name}" for e in file.enum_type}
        )
    return tops


def _referenced(files: Sequence[_File]) -> dict[str, set[str]]:
    """The type names the fields of each top-level message (nested ones included) use."""
    uses: dict[str, set[str]] = {}
    for file in files:
        for message in file.message_type:
            top = f".{file.package}.{message.name}"
            uses[top] = {
                field.type_name
                for _, inner in _nested(top, message)
                for field in inner.field
                if field.type_name
            }
    return uses


def _reachable(starts: set[str], files: Sequence[_File]) -> set[str]:
    """The top-level types `starts` reach through fields, transitively."""
    tops, uses = _tops(files), _referenced(files)
    found: set[str] = set()
    pending = [tops[name] for name in starts if name in tops]
    while pending:
        top = pending.pop()
        if top not in found:
            found.add(top)
            pending += [tops[name] for name in uses.get(top, ()) if name in tops]
    return found


def public_files(files: Sequence[_File], services: Collection[str]) -> list[_File]:
    """The descriptor set as the edge's clients may see it: of the shop's packages, only
    `services` (full names), without their INTERNAL methods, and the messages and enums
    those methods reach; other packages (google's) as they are."""
    public = [descriptor_pb2.FileDescriptorProto.FromString(f.SerializeToString()) for f in files]
    for file in public:
        if not file.package.startswith(_OWNED):
            continue
        kept = [s for s in file.service if f"{file.package}.{s.name}" in services]
        del file.service[:]
        file.service.extend(kept)
        for service in file.service:
            methods = [m for m in service.method if not _internal(m)]
            del service.method[:]
            service.method.extend(methods)
    starts = {
        name
        for file in public
        for service in file.service
        for method in service.method
        for name in (method.input_type, method.output_type)
    } | {extension.type_name for file in public for extension in file.extension}
    reached = _reachable(starts, public)
    for file in public:
        if file.package.startswith(_OWNED):
            _keep(file, reached)
    return public


def _keep(file: _File, reached: set[str]) -> None:
    """Drop the top-level messages and enums of `file` that are not in `reached`."""
    messages = [m for m in file.message_type if f".{file.package}.{m.name}" in reached]
    enums = [e for e in file.enum_type if f".{file.package}.{e.name}" in reached]
    del file.message_type[:]
    file.message_type.extend(messages)
    del file.enum_type[:]
    file.enum_type.extend(enums)


def descriptor_pool_of(path: Path, services: Collection[str]) -> descriptor_pool.DescriptorPool:
    """A pool holding the public part of the descriptor set (which lists imports first)."""
    pool = descriptor_pool.DescriptorPool()
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
    for file in public_files(files, services):
        pool.Add(file)
    return pool


class EdgeHealth(HealthServicer):
    """The health of the edge (service "") and of each of the `public` services, asked of
    the edge on `edge` (a channel to its port); see the module docstring."""

    def __init__(self, public: Collection[str], edge: grpc.aio.Channel) -> None:
        super().__init__()
        self._public = frozenset(public)
        # The stub's typing declares no methods.
        self._edge: Any = health_pb2_grpc.HealthStub(edge)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: _Context
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._public:
            return await super().Check(request, context)
        remaining = context.time_remaining()
        # A client's sooner deadline wins.
        timeout = min(HEALTH_CHECK_TIMEOUT, remaining or HEALTH_CHECK_TIMEOUT)
        try:
            response: health_pb2.HealthCheckResponse = await self._edge.Check(
                request, metadata=((HEALTH_OF_HEADER, request.service),), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "%s through the edge: %s %s", request.service, error.code().name, error.details()
            )
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: _Context) -> None:
        if request.service in self._public:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                'the edge watches its own health only (service ""); poll Check for '
                f"{request.service}",
            )
        await super().Watch(request, context)


def _keepers(args: argparse.Namespace) -> list[asyncio.Task[None]]:
    """What the companion keeps current for the edge beside serving: the user's HTTPS
    certificate, copied; the deny list of API keys."""
    tasks = []
    if args.tls_dir is not None:
        pair = edge_tls.CopiedPair(args.tls_cert, args.tls_key, args.tls_dir)
        tasks.append(asyncio.create_task(edge_tls.keep_copied(pair)))
    if args.deny_list_dir is not None:
        tasks.append(asyncio.create_task(deny_list.follow(args.deny_list_port, args.deny_list_dir)))
    return tasks


async def _serve(args: argparse.Namespace) -> None:
    keepers = _keepers(args)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.edge_port}") as channel:
        runner = ServiceRunner(
            [],
            port=args.port,
            grace=2.0,
            reflected=args.services,
            pool=descriptor_pool_of(args.descriptor_set, args.services),
            health_servicer=EdgeHealth(args.services, channel),
        )
        try:
            await runner.serve()
        finally:
            for task in keepers:
                task.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh.control.edge_companion")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--edge-port", type=int, required=True)
    parser.add_argument("--descriptor-set", type=Path, required=True)
    parser.add_argument("--service", action="append", default=[], dest="services")
    parser.add_argument("--tls-cert", type=Path, help="the user's certificate for HTTPS")
    parser.add_argument("--tls-key", type=Path, help="...and its key")
    parser.add_argument("--tls-dir", type=Path, help="where the edge reads them from")
    parser.add_argument("--deny-list-port", type=int, help="the edge's deny-list listener")
    parser.add_argument("--deny-list-dir", type=Path, help="where the edge reads the deny list")
    args = parser.parse_args(argv)
    given = [args.tls_cert, args.tls_key, args.tls_dir]
    if any(given) and not all(given):
        parser.error("--tls-cert, --tls-key and --tls-dir go together")
    if (args.deny_list_port is None) != (args.deny_list_dir is None):
        parser.error("--deny-list-port and --deny-list-dir go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s edge %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
