"""A tiny in-memory CatalogService served by the shared runner, for the runner's tests.

Run as `python -m tests.support.tiny_catalog`; it logs the address it serves on.
Product ids with special behaviour: `slow` answers after one second (to observe a
graceful stop), `boom` fails with an unexpected exception (to observe that no detail of
it leaks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from google.type import money_pb2

from mesh.runtime.errors import NotFound
from mesh.runtime.runner import Registration, serve
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc

SLOW_SECONDS = 1.0


class TinyCatalog(pb_grpc.CatalogServiceServicer):
    """Keeps products in a dict; no validation of its own (the runner does it)."""

    def __init__(self) -> None:
        self.products: dict[str, pb.Product] = {
            "p1": pb.Product(
                id="p1",
                name="Tea",
                category="food",
                price=money_pb2.Money(currency_code="EUR", units=4, nanos=500_000_000),
            )
        }

    async def GetProduct(
        self, request: pb.GetProductRequest, context: Any
    ) -> pb.GetProductResponse:
        if request.id == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            return pb.GetProductResponse(product=self.products["p1"])
        if request.id == "boom":
            raise RuntimeError("database password is hunter2")
        product = self.products.get(request.id)
        if product is None:
            raise NotFound(
                f"product {request.id!r} does not exist",
                reason="PRODUCT_NOT_FOUND",
                metadata={"product_id": request.id},
            )
        return pb.GetProductResponse(product=product)

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: Any
    ) -> pb.CreateProductResponse:
        product = pb.Product()
        product.CopyFrom(request.product)
        product.id = f"p{len(self.products) + 1}"
        self.products[product.id] = product
        return pb.CreateProductResponse(product=product)


def registration() -> Registration:
    return Registration.of(TinyCatalog(), pb, pb_grpc)


@contextlib.contextmanager
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The tiny catalog in its own process, as a service runs, and its address; stopped
    by pid (killed if it is still running) however the caller ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.tiny_catalog"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"serving .* on (127\.0\.0\.1:\d+)", line)
            if found:
                yield process, found.group(1)
                break
        else:
            raise RuntimeError(f"the tiny catalog exited before serving (exit {process.wait()})")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    serve([registration()], port=0, grace=5.0)
