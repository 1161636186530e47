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
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool

from mesh.runner import ServiceRunner


def descriptor_pool_of(path: Path) -> descriptor_pool.DescriptorPool:
    """A pool holding every file of the descriptor set (which lists imports first)."""
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file:
        pool.Add(file)
    return pool


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mesh.edge_companion")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--descriptor-set", type=Path, required=True)
    parser.add_argument("--service", action="append", default=[], dest="services")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s edge %(message)s")
    runner = ServiceRunner(
        [],
        port=args.port,
        grace=2.0,
        reflected=args.services,
        pool=descriptor_pool_of(args.descriptor_set),
    )
    asyncio.run(runner.serve())


if __name__ == "__main__":
    main()
