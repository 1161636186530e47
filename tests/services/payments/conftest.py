"""What payments' saga tests share: its database, on either backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mesh.runtime.storage import Database
from services.payments.adapters import MIGRATIONS
from tests.support.component import Databases


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "payments", MIGRATIONS) as database:
        yield database
