"""A throwaway PostgreSQL server for the tests of the Postgres storage path.

The binaries are PostgreSQL 16's from the `pgserver` wheel (`pgserver/pginstall/bin`).
Only the binaries are used, not pgserver's Python API: run as root, that API creates a
system user with `useradd` and leaves servers running for other processes to share.

PostgreSQL refuses to run as root. Where the tests run as root (containers, CI), initdb
and postgres run as `nobody`, which every Linux system has, with a data directory
`nobody` owns in a fresh temporary directory (pytest's own tmp directories are 0700
root's, so `nobody` could not reach them). The server listens on 127.0.0.1 only, on a
free port, with no Unix socket, takes password logins only, keeps `fsync` on, and is
stopped by its pid, its directory removed, when the test session ends.

Its time zone is deliberately not UTC, so a timestamp stored without its zone (or read
back in the server's local time) shows up as a wrong time instead of passing by luck.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from mesh.runtime.storage import Database, Migration
from tests.support.wait import wait_until

#: The server's time zone: +12:45/+13:45, far from UTC and not a whole hour from it.
SERVER_TIME_ZONE = "Pacific/Chatham"
#: The login the tests use (the cluster's superuser).
USER = "shop"
#: How long initdb plus start-up may take before the helper gives up.
START_TIMEOUT_S = 60.0


def postgres_bin() -> Path:
    """The directory of pgserver's PostgreSQL binaries (without importing pgserver)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed; run `pip install -e '.[dev]'`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _unprivileged() -> dict[str, Any]:
    """`subprocess` arguments that drop root to `nobody` (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running server: its process, where it listens, how to log in."""

    directory: Path
    process: subprocess.Popen[bytes]
    port: int
    password: str
    #: Migrated, emptied databases of each component, for the next test to take.
    _idle: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _created: int = 0

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database`, as a service reads it from its environment."""
        return f"postgresql+asyncpg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    async def create_database(self, prefix: str = "db") -> str:
        """Create a new, empty database; return its URL."""
        self._created += 1
        name = f"{prefix}_{self._created}"
        async with _connection(self.url("postgres"), isolation_level="AUTOCOMMIT") as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    @asynccontextmanager
    async def databases(self) -> AsyncIterator[PostgresDatabases]:
        """A test's databases (see `PostgresDatabases`), given back emptied after it."""
        databases = PostgresDatabases(self)
        try:
            yield databases
        finally:
            for component, url in databases.used():
                await _empty(url)  # fails (lock_timeout) if the test left a writer behind
                self._idle[component].append(url)

    async def lend(self, component: str) -> str:
        """An empty database for `component`: one a test gave back, or a new one."""
        idle = self._idle[component]
        return idle.pop() if idle else await self.create_database(component)

    def stop(self) -> None:
        """Stop the server by its pid (SIGKILL if it hangs), then remove its directory.

        An immediate shutdown (SIGQUIT): the postmaster stops its children and exits
        without the shutdown checkpoint, which would only write data about to be deleted.
        """
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGQUIT)
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=15)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class PostgresDatabases:
    """One test's databases on the server: one per (directory, component), like SQLite files.

    The same directory and component open the same database again, so a test can restart
    a service on its data. Creating a database takes a tenth of a second or more, so a
    database a test used is emptied afterwards and taken by the next test of the same
    component, still migrated (its `schema_migrations` are kept); the component's tests
    all use its `MIGRATIONS`. Fresh databases are what tests/integration/test_postgres.py
    migrates.
    """

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._urls: dict[tuple[Path, str], str] = {}

    async def url(self, directory: Path, component: str) -> str:
        key = (directory, component)
        if key not in self._urls:
            self._urls[key] = await self._server.lend(component)
        return self._urls[key]

    @asynccontextmanager
    async def open(
        self, directory: Path, component: str, migrations: Sequence[Migration]
    ) -> AsyncIterator[Database]:
        database = Database(await self.url(directory, component), component, migrations)
        await database.open()
        try:
            yield database
        finally:
            await database.close()

    async def environment(self, directory: Path, component: str) -> dict[str, str]:
        return {f"SHOP_{component.upper()}_DATABASE_URL": await self.url(directory, component)}

    def used(self) -> list[tuple[str, str]]:
        return [(component, url) for (_, component), url in self._urls.items()]


@asynccontextmanager
async def _connection(url: str, **options: Any) -> AsyncIterator[AsyncConnection]:
    """One connection to `url` (engine `options`), closed after the block."""
    engine = create_async_engine(url, poolclass=NullPool, **options)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


#: Deletes every row but the record of the migrations, in one round trip. Foreign keys
#: are not checked meanwhile (`replica` fires no triggers), so any order will do; the
#: commit need not wait for its fsync (nothing is lost if the server dies: it is emptied).
_EMPTY = """
DO $$
DECLARE
    name text;
BEGIN
    SET LOCAL session_replication_role = replica;
    SET LOCAL synchronous_commit = off;
    SET LOCAL lock_timeout = '5s';
    FOR name IN
        SELECT tablename FROM pg_tables
        WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
    LOOP
        EXECUTE format('DELETE FROM %I', name);
    END LOOP;
END
$$
"""


async def _empty(url: str) -> None:
    """Delete every row of the database at `url` but the record of its migrations."""
    async with _connection(url) as connection, connection.begin():
        await connection.exec_driver_sql(_EMPTY)


def _initdb(binaries: Path, data: Path, password: str) -> None:
    password_file = data.parent / "password"
    descriptor = os.open(password_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(password)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(password_file, nobody.pw_uid, nobody.pw_gid)
    try:
        subprocess.run(
            [binaries / "initdb", "--pgdata", str(data), "--username", USER,
             "--pwfile", str(password_file), "--auth", "scram-sha-256",
             "--encoding", "UTF8", "--locale", "C", "--no-instructions"],
            check=True, capture_output=True, timeout=START_TIMEOUT_S, cwd=data.parent,
            **_unprivileged(),
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"initdb failed: {error.stderr.decode(errors='replace')}") from error
    finally:
        password_file.unlink()


def _start(binaries: Path, directory: Path, password: str) -> PostgresServer:
    """Start postgres on a free loopback port and wait until it takes connections."""
    port = _free_port()
    with (directory / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [binaries / "postgres", "-D", str(directory / "data"),
             "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
             "-c", "unix_socket_directories=", "-c", "fsync=on",
             "-c", f"timezone={SERVER_TIME_ZONE}", "-c", "max_connections=200"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            **_unprivileged(),
        )  # fmt: skip
    server = PostgresServer(directory, process, port, password)

    def accepting() -> bool:
        assert process.poll() is None, "postgres exited"
        ready = subprocess.run(
            [binaries / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", USER,
             "-d", "postgres", "-q"],
            check=False, stdin=subprocess.DEVNULL, timeout=10,
        )  # fmt: skip
        return ready.returncode == 0

    # Whether it exited or never answered, the caller is told why, from its log.
    with contextlib.suppress(AssertionError):
        wait_until(accepting, "postgres taking connections", START_TIMEOUT_S, 0.05)
        return server
    log_text = server.log.read_text(errors="replace")
    with contextlib.suppress(Exception):
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)
    raise RuntimeError(f"postgres did not start on 127.0.0.1:{port}:\n{log_text}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server for the duration of the block, stopped by pid after it."""
    binaries = postgres_bin()
    directory = Path(tempfile.mkdtemp(prefix="shop-postgres-"))
    try:
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        password = secrets.token_hex(16)
        # The data directory is created by initdb itself, as the server's user, 0700.
        _initdb(binaries, directory / "data", password)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    # A port taken between our probe and postgres' bind makes it exit: try another.
    for attempt in range(3):
        try:
            server = _start(binaries, directory, password)
            break
        except RuntimeError:
            if attempt == 2:
                shutil.rmtree(directory, ignore_errors=True)
                raise
    try:
        yield server
    finally:
        server.stop()
