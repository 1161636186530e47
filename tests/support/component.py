"""Fixtures' building blocks for component tests: real databases, real gRPC servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mesh.runtime.admission import Limits
from mesh.runtime.connection import Connection
from mesh.runtime.runner import Registration, ServiceRunner
from mesh.runtime.storage import Database, Migration
from services.catalog import adapters as catalog_adapters
from services.catalog.bootstrap import registrations as catalog_registrations
from services.inventory import adapters as inventory_adapters
from services.inventory.bootstrap import registration as inventory_registration
from shop.events.v1 import events_pb2


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


class Databases(Protocol):
    """Where a component test keeps its services' databases: SQLite files, or Postgres.

    The component tests take one as the `databases` fixture (tests/services/conftest.py),
    which runs each of them on both backends.
    """

    def open(
        self, directory: Path, component: str, migrations: Sequence[Migration]
    ) -> AbstractAsyncContextManager[Database]:
        """`component`'s migrated database at `directory`, the same one each time."""
        ...

    async def environment(self, directory: Path, component: str) -> dict[str, str]:
        """The variables that point a process run with `--run-dir directory` at it."""
        ...


class SqliteDatabases:
    """Each database a SQLite file under the directory, where the local mesh keeps it."""

    def open(
        self, directory: Path, component: str, migrations: Sequence[Migration]
    ) -> AbstractAsyncContextManager[Database]:
        return sqlite_database(directory, component, migrations)

    async def environment(self, directory: Path, component: str) -> dict[str, str]:
        return {}  # the run directory's file is where a service looks by default


#: Admission limits no component test reaches.
EVERY_CALL = Limits(max_in_flight=10_000, expensive_in_flight=10_000)


@asynccontextmanager
async def serving(*registrations: Registration) -> AsyncIterator[grpc.aio.Channel]:
    """Serve `registrations` through the shared runner on a free port; yield a channel to it.

    The runner admits every call at once: these tests send many calls together to check
    what a service does with them concurrently, not what it admits (that is
    tests/integration/test_admission.py)."""
    runner = ServiceRunner(registrations, port=0, grace=1.0, limits=EVERY_CALL)
    await runner.start()
    try:
        async with grpc.aio.insecure_channel(runner.address) as channel:
            yield channel
    finally:
        await runner.stop(0)


@asynccontextmanager
async def catalog_and_inventory(
    databases: Databases, directory: Path
) -> AsyncIterator[tuple[grpc.aio.Channel, grpc.aio.Channel]]:
    """The real catalog and the real inventory it calls, each on its own database.

    Yields a channel to each (catalog first).
    """
    async with (
        databases.open(directory, "inventory", inventory_adapters.MIGRATIONS) as inventory_db,
        serving(
            inventory_registration(inventory_adapters.SqlInventoryStore(inventory_db))
        ) as inventory_channel,
        databases.open(directory, "catalog", catalog_adapters.MIGRATIONS) as catalog_db,
        serving(
            *catalog_registrations(
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


class OneDelivery:
    """One event handed to a handler, each transaction of its own on `database`."""

    def __init__(self, database: Database, envelope: events_pb2.EventEnvelope) -> None:
        self.envelope = envelope
        self._database = database

    def snapshot(self) -> AbstractAsyncContextManager[Connection]:
        return self._database.snapshot()

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._database.transaction()
