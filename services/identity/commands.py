"""What identity's commands share (`meshctl token`, `meshctl keys`): identity's database
in a run directory, found and opened as the service finds and opens it.

The commands work on the database itself, whether the mesh is running or not: SQLite
takes their writes in turn with the service's (`mesh.runtime.storage`), as Postgres
does with `SHOP_IDENTITY_DATABASE_URL`. They never make a signing key: the service makes
its keys when it starts, and anything signed with another key would be refused.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NoReturn

from mesh.runtime.service import ServiceSettings, sqlite_path
from mesh.runtime.storage import Database
from services.identity.adapters import MIGRATIONS

NAME = "identity"


class NotStarted(RuntimeError):
    """Identity has not started from this run directory: it has no database or no key."""


def refuse_new_key() -> NoReturn:
    """The `create` a command hands a key store: a key is the service's to make."""
    raise NotStarted


def add_run_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SHOP_RUN_DIR", "run")),
        help=f"the run directory of the mesh whose identity {what} (meshctl: default .mesh)",
    )


def settings_of(run_dir: Path) -> ServiceSettings:
    """Identity's settings for a run directory, its database URL from the environment."""
    url = os.environ.get("SHOP_IDENTITY_DATABASE_URL")
    return ServiceSettings(name=NAME, run_dir=run_dir, database_url=url)


def not_started(prog: str, settings: ServiceSettings, problem: str) -> SystemExit:
    """The exit of a command that found `problem` where identity should have started: it
    names the run directory, or the variable of a database URL, which may hold a password."""
    where = "SHOP_IDENTITY_DATABASE_URL" if settings.database_url else settings.run_dir
    return SystemExit(
        f"{prog}: {problem} in {where}: start the mesh (`meshctl up`), or pass the --run-dir "
        "of a running one"
    )


@asynccontextmanager
async def identity_database(settings: ServiceSettings) -> AsyncIterator[Database]:
    """Identity's database, open; NotStarted when the run directory has none."""
    # Opening a SQLite database creates it: look for identity's file first.
    if not settings.database_url and not sqlite_path(settings.run_dir, NAME).is_file():
        raise NotStarted
    database = settings.database(MIGRATIONS)
    await database.open()
    try:
        yield database
    finally:
        await database.close()
