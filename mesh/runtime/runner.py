"""The one gRPC server runner every shop service is started with.

A service hands the runner its servicers; the runner adds what every service needs and
no service writes again:

* the interceptors of `mesh.runtime.interceptors` (admission control, deadlines, AIP-193 error
  mapping, validation from the proto declarations);
* the standard health service (`grpc.health.v1.Health`): SERVING for each service once
  the server is up, NOT_SERVING as soon as it starts to stop, so load balancers drain it
  (`Check` and `Watch`; `List` is UNIMPLEMENTED);
* server reflection for every registered service, in both versions (`mesh.runtime.reflection`),
  so `grpcurl list/describe` work;
* a loopback-only listener, on a fixed port or on port 0 (the bound port is returned);
* a graceful stop on SIGTERM or SIGINT: new calls are refused, calls in flight get up to
  `grace` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mesh.runtime.admission import Limits
from mesh.runtime.interceptors import MeshInterceptor
from mesh.runtime.reflection import enable_reflection

log = logging.getLogger(__name__)

#: The default time calls in flight get to finish when the server stops.
DEFAULT_GRACE_SECONDS = 10.0

#: Channel options shared by every server: refuse to share a port with another process
#: (gRPC's default SO_REUSEPORT would let two servers bind one port silently).
SERVER_OPTIONS: Sequence[tuple[str, Any]] = (("grpc.so_reuseport", 0),)


class HealthServicer(health.aio.HealthServicer):
    """grpcio-health-checking's health service, which implements `Check` and `Watch` but
    not the newer `List`: that is UNIMPLEMENTED here in words, where the generated base
    class would raise and the error mapping make it INTERNAL."""

    async def List(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Health/List is not served: Check each service by name"
        )


@dataclass(frozen=True)
class Registration:
    """One gRPC service to serve: its servicer, generated add function and descriptor."""

    servicer: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    descriptor: ServiceDescriptor

    @property
    def name(self) -> str:
        """The service's full name, e.g. `shop.catalog.v1.CatalogService`."""
        return self.descriptor.full_name

    @classmethod
    def of(cls, servicer: object, pb2: ModuleType, pb2_grpc: ModuleType) -> Registration:
        """The registration of `servicer`, found by the generated base class it extends."""
        for name, descriptor in pb2.DESCRIPTOR.services_by_name.items():
            if isinstance(servicer, getattr(pb2_grpc, f"{name}Servicer")):
                add = getattr(pb2_grpc, f"add_{name}Servicer_to_server")
                return cls(servicer, add, descriptor)
        raise TypeError(f"{type(servicer).__name__} implements no service of {pb2.__name__}")


class ServiceRunner:
    """Serves `registrations` on one loopback port; see the module docstring."""

    def __init__(
        self,
        registrations: Sequence[Registration],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        grace: float = DEFAULT_GRACE_SECONDS,
        reflected: Sequence[str] = (),
        pool: descriptor_pool.DescriptorPool | None = None,
        limits: Limits | None = None,
        health_servicer: HealthServicer | None = None,
    ) -> None:
        """`reflected` names services reflection describes beside the registered ones,
        from `pool` (default: the generated code's pool); the edge's reflection endpoint
        serves nothing but those. `limits` bound the calls served at once
        (`mesh.runtime.admission`). `health_servicer` answers health in place of the
        standard one (the edge companion's also answers for the services behind the edge)."""
        if not registrations and not reflected:
            raise ValueError("a runner needs at least one service to serve")
        self._registrations = tuple(registrations)
        self._reflected = tuple(reflected)
        self._pool = pool
        self._address = f"{host}:{port}"
        self._grace = grace
        self._interceptor = MeshInterceptor(limits)
        self._server: grpc.aio.Server | None = None
        self._health = health_servicer or HealthServicer()
        self.port: int | None = None

    @property
    def service_names(self) -> list[str]:
        return [r.name for r in self._registrations]

    async def start(self) -> int:
        """Bind, start serving and report SERVING; return the bound port."""
        server = grpc.aio.server(interceptors=[self._interceptor], options=SERVER_OPTIONS)
        for registration in self._registrations:
            registration.add_to_server(registration.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection(
            server,
            [*self.service_names, *self._reflected, health.SERVICE_NAME],
            [health_pb2.DESCRIPTOR.serialized_pb],
            self._pool,
        )
        port = server.add_insecure_port(self._address)
        if port == 0:
            raise OSError(f"cannot listen on {self._address}")
        await server.start()
        self._server, self.port = server, port
        for name in ("", *self.service_names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s", ", ".join(self.service_names or self._reflected), self.address)
        return port

    @property
    def address(self) -> str:
        """The bound `host:port` (after `start`)."""
        host = self._address.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, give calls in flight `grace` seconds."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        grace = self._grace if grace is None else grace
        log.info("stopping %s (grace %.1fs)", ", ".join(self.service_names), grace)
        await self._server.stop(grace)
        self._server = None

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set or SIGTERM/SIGINT arrives, then stop gracefully."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            await self.stop()


def serve(
    registrations: Sequence[Registration],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    grace: float = DEFAULT_GRACE_SECONDS,
) -> None:
    """Run `registrations` in a fresh event loop until a stop signal; the usual entry point."""
    runner = ServiceRunner(registrations, host=host, port=port, grace=grace)
    asyncio.run(runner.serve())
