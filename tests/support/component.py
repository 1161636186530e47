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
