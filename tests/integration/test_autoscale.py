"""An autoscaled service in a real local mesh: catalog (`autoscale: {min: 1, max: 3,
target: {in_flight: 1}}`) goes from one replica to two or more while many readers
read through the edge, the new replicas take calls, and after the load falls and the
cooldown passes it drains back to one, with not one call failed meanwhile."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import yaml

from mesh.control.process import pid_alive
from tests.support.mesh import ROOT, RunningMesh, bearer, mesh_up
from tests.support.saga import stocked_product
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: Readers that load catalog, and the bounds of every loop below.
READERS, MAX_CALLS_EACH, MAX_SECONDS = 6, 4000, 120
COOLDOWN_SECONDS = 6


@pytest.fixture(scope="module")
def scaling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("autoscale")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    topology["edge"].pop("cache", None)  # every read reaches catalog
    # Loopback readers, from one address: no rate limit of the edge's stands in the way.
    topology["edge"]["rate_limit"] = {
        part: {"requests_per_second": 100_000} for part in ("total", "per_client", "anonymous")
    }
    catalog = topology["services"]["catalog"]
    catalog.pop("replicas", None)
    catalog["autoscale"] = {
        "min": 1, "max": 3, "target": {"in_flight": 1}, "cooldown": f"{COOLDOWN_SECONDS}s",
    }  # fmt: skip
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


class Readers:
    """`count` threads reading one product through the edge until stopped (bounded); the
    status of every answer, by thread."""

    def __init__(self, edge_url: str, product: str, count: int, pause: float) -> None:
        self.url = f"{edge_url}/v1/products/{product}"
        self.pause = pause
        self.stopped = threading.Event()
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._read) for _ in range(count)]

    def _read(self) -> None:
        ends = time.monotonic() + MAX_SECONDS
        with httpx.Client(timeout=15) as client:
            for _ in range(MAX_CALLS_EACH):
                if self.stopped.is_set() or time.monotonic() > ends:
                    return
                status = client.get(self.url).status_code
                with self.lock:
                    self.statuses[status] += 1
                if self.pause:
                    self.stopped.wait(self.pause)

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


def settled(mesh: RunningMesh) -> bool:
    """Whether no catalog replica is draining or stopping."""
    scale = mesh.state()["autoscale"]["catalog"]
    return scale["draining"] is None and not scale["stopping_pids"]


def catalog_replicas(mesh: RunningMesh) -> int:
    return len([i for i in mesh.state()["instances"] if i["service"] == "catalog"])


def test_load_adds_replicas_and_its_end_drains_them_without_a_failed_call(
    scaling: RunningMesh,
) -> None:
    with httpx.Client(base_url=scaling.edge_url, timeout=30) as edge:
        product = stocked_product(edge, bearer(scaling.token("autoscale", "catalog:write")), 5)
    assert catalog_replicas(scaling) == 1
    with Readers(scaling.edge_url, product, READERS, pause=0) as heavy:
        wait_until(lambda: catalog_replicas(scaling) >= 2, "a second catalog replica", 60)
        wait_until(
            lambda: scaling.state()["autoscale"]["catalog"]["joining"] is None,
            "the new replica taking calls",
            30,
        )
        added = {
            i["instance"]: (i["app_pid"], i["sidecar_pid"])
            for i in scaling.state()["instances"]
            if i["service"] == "catalog" and i["instance"] != "catalog-0"
        }
        status = scaling.meshctl("status").stdout
    assert "autoscale: catalog" in status
    # Under the load, before the new replicas took calls, catalog's admission may refuse
    # a few reads (503): shed, not failed as a replica's removal would fail them.
    assert heavy.statuses[200] > 0
    assert set(heavy.statuses) <= {200, 503}, heavy.statuses
    with Readers(scaling.edge_url, product, 1, pause=0.02) as light:
        wait_until(
            lambda: catalog_replicas(scaling) == 1 and settled(scaling),
            "catalog back to one replica, the others stopped",
            within=COOLDOWN_SECONDS + 60,
        )
        time.sleep(1)  # calls after the last replica left, too
    assert light.statuses[200] > 0
    assert set(light.statuses) == {200}, light.statuses
    # The replicas removed were stopped, app and sidecar.
    assert added
    assert not [pid for pids in added.values() for pid in pids if pid_alive(pid)]
