"""The process around a service: settings, its database, its composition root, the runner.

Every service's `__main__` is one line, `main("<name>", bootstrap)`. Settings are read
once, here, from the command line and environment variables:

| setting | flag | environment | default |
| --- | --- | --- | --- |
| listen port | `--port` | `SHOP_<NAME>_PORT` | 0 (a free port, logged) |
| run directory | `--run-dir` | `SHOP_RUN_DIR` | `./run` |
| database URL | `--database-url` | `SHOP_<NAME>_DATABASE_URL` | `<run-dir>/<name>/<name>.db` |
| a dependency's address | | `SHOP_<DEP>_ADDRESS` | none: required when the service calls it |
| the event bus | | `SHOP_NATS_URL` | none: events wait in the outbox |
| where spans go (OTLP/gRPC host:port) | | `OTEL_EXPORTER_OTLP_ENDPOINT` | none: not exported |
| the Prometheus metrics port (loopback) | | `SHOP_METRICS_PORT` | none: not served |
| TLS to NATS: CA, own certificate, own key | | `SHOP_NATS_{CA,CERT,KEY}_FILE` | none: no TLS |
| the name NATS's certificate carries | | `SHOP_NATS_SERVER_NAME` | the URL's host |
| calls served at once | | `SHOP_MAX_IN_FLIGHT` | 32 (`mesh.runtime.admission`) |
| of those, calls to expensive methods | | `SHOP_EXPENSIVE_IN_FLIGHT` | 2 |
| the expensive methods | | `SHOP_EXPENSIVE_METHODS` | none |

A service's `bootstrap(settings, stack)` builds its adapters (entering them on the
`AsyncExitStack`, which closes them after the server stops) and returns the servicers to
serve. Nothing connects before `bootstrap` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mesh.runtime import deadlines, metrics, telemetry
from mesh.runtime.admission import Limits
from mesh.runtime.events import NatsSettings
from mesh.runtime.runner import DEFAULT_GRACE_SECONDS, Registration, ServiceRunner
from mesh.runtime.storage import Database, Migration


def sqlite_path(run_dir: Path, service: str) -> Path:
    """Where `service` keeps its SQLite file under a run directory (without a database URL)."""
    return run_dir / service / f"{service}.db"


class SettingsError(RuntimeError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class ServiceSettings:
    """Everything a service reads from its environment, read once at start-up."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    run_dir: Path = Path("run")
    database_url: str | None = None
    grace: float = DEFAULT_GRACE_SECONDS
    nats: NatsSettings | None = None
    limits: Limits = field(default_factory=Limits)

    def database(self, migrations: Sequence[Migration]) -> Database:
        """This service's own database: the configured URL, or its SQLite file."""
        if self.database_url:
            return Database(self.database_url, self.name, migrations)
        return Database.sqlite(sqlite_path(self.run_dir, self.name), self.name, migrations)

    def address_of(self, dependency: str) -> str:
        """Where to reach `dependency` (host:port); fails fast when it is not configured."""
        variable = f"SHOP_{dependency.upper()}_ADDRESS"
        address = os.environ.get(variable, "").strip()
        if not address:
            raise SettingsError(f"{self.name} calls {dependency}: set {variable}=host:port")
        return address


def channel_to(
    settings: ServiceSettings, dependency: str, stack: AsyncExitStack
) -> grpc.aio.Channel:
    """A channel to `dependency` (through the sidecar) whose calls are traced and keep the
    deadline of the call being served (`mesh.runtime.deadlines`); closed when `stack` unwinds."""
    channel = grpc.aio.insecure_channel(
        settings.address_of(dependency),
        interceptors=[*telemetry.client_interceptors(), deadlines.Propagation()],
    )
    stack.push_async_callback(channel.close)
    return channel


async def open_database(
    settings: ServiceSettings, migrations: Sequence[Migration], stack: AsyncExitStack
) -> Database:
    """Open (and migrate) the service's database; it is closed when `stack` unwinds."""
    database = settings.database(migrations)
    await database.open()
    stack.push_async_callback(database.close)
    return database


def keep_startup_out_of_collections() -> None:
    """What the process built to start (modules, descriptors, adapters) lives as long as
    the process: moved out of the garbage collector's sight, a full collection scans only
    what was made since, a few milliseconds instead of tens with the event loop stopped."""
    gc.collect()
    gc.freeze()


Bootstrap = Callable[[ServiceSettings, AsyncExitStack], Awaitable[Sequence[Registration]]]


async def run(settings: ServiceSettings, bootstrap: Bootstrap) -> None:
    """Build the service, serve it until a stop signal, then close its adapters."""
    async with AsyncExitStack() as stack:
        registrations = await bootstrap(settings, stack)
        keep_startup_out_of_collections()
        runner = ServiceRunner(
            registrations,
            host=settings.host,
            port=settings.port,
            grace=settings.grace,
            limits=settings.limits,
        )
        await runner.serve()


def settings_from_environment(name: str, argv: Sequence[str] | None = None) -> ServiceSettings:
    prefix = f"SHOP_{name.upper()}"
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--port", type=int, default=int(os.environ.get(f"{prefix}_PORT", "0")))
    parser.add_argument("--run-dir", type=Path, default=Path(os.environ.get("SHOP_RUN_DIR", "run")))
    parser.add_argument("--database-url", default=os.environ.get(f"{prefix}_DATABASE_URL"))
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS)
    args = parser.parse_args(argv)
    return ServiceSettings(
        name=name,
        port=args.port,
        run_dir=args.run_dir,
        database_url=args.database_url,
        grace=args.grace,
        nats=nats_from_environment(name),
        limits=Limits.from_environment(os.environ),
    )


def nats_from_environment(name: str) -> NatsSettings | None:
    """How the service `name` reaches NATS, from `SHOP_NATS_*`; None without a URL."""
    if not os.environ.get("SHOP_NATS_URL", "").strip():
        return None
    return NatsSettings.from_environment(name, dict(os.environ))


def main(name: str, bootstrap: Bootstrap, argv: Sequence[str] | None = None) -> None:
    """The entry point of `python -m services.<name>`: JSON logs, traces, the service."""
    instance = os.environ.get("SHOP_INSTANCE", name)
    telemetry.setup_logging(name, instance)
    provider = telemetry.setup_tracing(name, instance)
    metrics.serve_from_environment()
    try:
        asyncio.run(run(settings_from_environment(name, argv), bootstrap))
    except SettingsError as error:
        raise SystemExit(f"{name}: {error}") from None
    finally:
        provider.shutdown()
