"""Identity served over a real database (SQLite, Postgres), as its component tests use it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh.runtime.storage import Database
from services.identity.adapters import MIGRATIONS, SqlIdentityStore, SqlSigningKeyStore
from services.identity.bootstrap import open_api_key_issuer, registration
from services.identity.handlers import open_signer
from services.identity.tokens import TokenSettings
from shop.identity.v1 import identity_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, serving


@asynccontextmanager
async def identity_on(database: Database) -> AsyncIterator[Any]:
    """Identity served over `database`, as bootstrap builds it with default settings."""
    settings = TokenSettings()
    signer = await open_signer(SqlSigningKeyStore(database), settings)
    api_keys = await open_api_key_issuer(database, settings)
    servicer = registration(SqlIdentityStore(database), signer, settings.ttl_seconds, api_keys)
    async with serving(servicer) as channel:
        yield pb_grpc.IdentityServiceStub(channel)


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "identity", MIGRATIONS) as database:
        yield database


@pytest.fixture
async def identity(database: Database) -> AsyncIterator[Any]:
    async with identity_on(database) as stub:
        yield stub


@pytest.fixture
async def environment(
    databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The variables that point identity's commands at the database, set: none for the
    run directory's file (where they look first), SHOP_IDENTITY_DATABASE_URL for another."""
    variables = await databases.environment(tmp_path, "identity")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables
