"""Every component test runs twice: on SQLite files and on a PostgreSQL server.

A service's storage code is the same on both (`mesh.runtime.storage`); these runs are what backs
the claim that `SHOP_<SERVICE>_DATABASE_URL=postgresql+asyncpg://...` changes nothing
else. Select one backend with `-k sqlite` or `-k postgres`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.component import Databases, SqliteDatabases
from tests.support.postgres import PostgresServer


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def databases(request: pytest.FixtureRequest) -> AsyncIterator[Databases]:
    if request.param == "sqlite":
        yield SqliteDatabases()
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    async with server.databases() as databases:
        yield databases
