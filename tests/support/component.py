"""Fixtures' building blocks for component tests: real databases, real gRPC servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.runner import Registration, ServiceRunner
from mesh.storage import Database, Migration
from services.catalog import adapters as catalog_adapters
from services.catalog.bootstrap import registration as catalog_registration
from services.inventory import adapters as inventory_adapters
from services.inventory.bootstrap import registration as inventory_registration


@asynccontextmanager
async def sqlite_database(
    directory: Path, component: str, migrations: Sequence[Migration]
) -> AsyncIterator[Database]:
    """A migrated database in a real SQLite file under `directory`."""
    database = Database.sqlite(directory / component / f"{component}.db", component, migrations)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def serving(*registrations: Registration) -> AsyncIterator[grpc.aio.Channel]:
    """Serve `registrations` through the shared runner on a free port; yield a channel to it."""
    runner = ServiceRunner(registrations, port=0, grace=1.0)
    await runner.start()
    try:
        async with grpc.aio.insecure_channel(runner.address) as channel:
            yield channel
    finally:
        await runner.stop(0)


@asynccontextmanager
async def catalog_and_inventory(
    directory: Path,
) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    """The real catalog and the real inventory it calls, each on its own database file.

    Yields a channel to each (catalog first).
    """
    async with (
        sqlite_database(directory, "inventory", inventory_adapters.MIGRATIONS) as inventory_db,
        serving(
            inventory_registration(inventory_adapters.SqlInventoryStore(inventory_db))
        ) as inventory_channel,
        sqlite_database(directory, "catalog", catalog_adapters.MIGRATIONS) as catalog_db,
        serving(
            catalog_registration(
                catalog_adapters.SqlCatalogStore(catalog_db),
                catalog_adapters.GrpcStockLevels(inventory_channel),
            )
        ) as catalog_channel,
    ):
        yield catalog_channel, inventory_channel


def error_reason(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call (AIP-193)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status in {error}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by a failed call's BadRequest details."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no google.rpc.Status in {error}"
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            return [v.field for v in bad_request.field_violations]
    raise AssertionError(f"no BadRequest details in {error}")
