"""A real mesh for the end-to-end tests (`meshctl up --detach`), shared by a session.

The topology is the repository's `mesh.yaml` with what the tests need on top: two
inventory replicas (for load balancing and ejection), orders calling payments (for
retries of a transient UNAVAILABLE), and a few more methods granted to the callers whose
sidecars the runtime tests call through. The edge listens on a free port. The mesh is
stopped with `meshctl down`, and every process it ran is checked by pid afterwards. The
helpers the tests use with it are in `tests/support/mesh.py`.

The tests of the event bus each get a nats-server of their own (`bus`, and `js` on it)
and a service's database (`database`); their helpers are in `tests/support/bus.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from nats.js import JetStreamContext

from mesh.control import natsconf
from mesh.runtime import events
from mesh.runtime.storage import Database
from tests.support.bus import LEDGER, Bus, running_bus
from tests.support.component import sqlite_database
from tests.support.mesh import ROOT, RunningMesh, mesh_up


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("mesh")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    services = topology["services"]
    services["inventory"]["replicas"] = 2
    # The runtime tests also call these through the callers' sidecars.
    services["orders"]["calls"]["payments"] = {"methods": ["AuthorizePayment"]}
    services["orders"]["calls"]["catalog"]["methods"] += ["CreateProduct", "ListProducts"]
    services["catalog"]["calls"]["inventory"]["methods"].append("GetStock")
    # No response cache at the edge: these tests read what they just wrote, or load
    # catalog through the edge, and mean every read to reach it. The cache's own tests
    # (test_edge_cache.py) run a mesh with it.
    topology["edge"].pop("cache", None)
    # A plan whose day's allowance a test can spend (tests/integration/test_api_keys.py).
    topology["edge"]["api_keys"]["plans"]["tiny"] = {
        "requests_per_second": 100,
        "requests_per_day": 3,
    }
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    """A nats-server of the test's own, configured as the mesh configures it; stopped by pid."""
    with running_bus(tmp_path) as running:
        yield running


@pytest.fixture
async def js(bus: Bus) -> AsyncIterator[JetStreamContext]:
    """JetStream as the mesh's administrator (meshctl) sees it, streams created."""
    client = await natsconf.admin_settings(bus.pki, bus.port).connect(max_reconnect_attempts=2)
    context = client.jetstream()
    await events.ensure_streams(context)
    try:
        yield context
    finally:
        await client.close()


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A service's SQLite database, with its outbox and a `ledger` for a test's consumer."""
    async with sqlite_database(tmp_path, "svc", LEDGER) as database:
        yield database
