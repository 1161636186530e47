"""The edge's companion: one gRPC reflection endpoint that knows every public service.

Clients reach it through the edge (`grpcurl -plaintext 127.0.0.1:8080 list`), so they can
list and describe the whole public API in one place, from the same descriptor set the
edge transcodes with. It also answers gRPC health for the edge as a whole.

Run as `python -m mesh.edge_companion --port P --descriptor-set FILE --service NAME...`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.runner import SERVER_OPTIONS

log = logging.getLogger(__name__)


def descriptor_pool_of(path: Path) -> descriptor_pool.DescriptorPool:
    """A pool holding every file of the descriptor set (which lists imports first)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        pool.Add(file)
    return pool


async def serve(port: int, descriptor_set: Path, services: Sequence[str]) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        [*services, reflection.SERVICE_NAME], server, pool=descriptor_pool_of(descriptor_set)
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("edge reflection for %d services on 127.0.0.1:%d", len(services), port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await checker.enter_graceful_shutdown()
    await server.stop(2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh.edge_companion")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--descriptor-set", type=Path, required=True)
    parser.add_argument("--service", action="append", default=[], dest="services")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s edge %(message)s")
    asyncio.run(serve(args.port, args.descriptor_set, args.services))


if __name__ == "__main__":
    main()
