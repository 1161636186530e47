"""A service's objectives watched by the local mesh: a release that fails half its calls
makes catalog's fast-burn alert fire, a webhook receiver (Alertmanager's JSON) gets it,
`meshctl alerts` and `meshctl status` show it, and once the calls go back to the healthy
release the alert resolves and the receiver is told.

The objectives' period is one day here, so the fast-burn alert's windows (1h and 5m of a
30-day period) are 2 minutes and 10 seconds: the same alert, in a test's time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import yaml

from tests.support.mesh import ROOT, RunningMesh, bearer, mesh_up
from tests.support.saga import stocked_product
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: The bad release's share of failed calls.
ABORT_PERCENT = 50
#: The most calls the load below sends, and how long it may run.
MAX_CALLS, MAX_SECONDS = 6000, 180


class Receiver:
    """An Alertmanager webhook receiver on loopback: every body it is posted, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def notice(self, status: str, alertname: str, **labels: str) -> dict[str, Any] | None:
        """The first body whose one alert has `status`, `alertname` and `labels`."""
        for body in list(self.bodies):
            alert = body["alerts"][0]
            wanted = {"alertname": alertname, **labels}
            if body["status"] == status and wanted.items() <= alert["labels"].items():
                return body
        return None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    receiving.thread.start()
    try:
        yield receiving
    finally:
        receiving.server.shutdown()
        receiving.server.server_close()


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[RunningMesh]:
    """A mesh whose catalog runs a healthy v1 (every call at first) and a v2 that fails
    half of its calls, objectives kept over a day, alerts sent to `receiver`."""
    directory = tmp_path_factory.mktemp("alerts")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    topology["edge"].pop("cache", None)  # every read reaches catalog
    topology["slo"] = {"period": "1d"}
    topology["alerts"] = {"webhook": receiver.url}
    catalog = topology["services"]["catalog"]
    catalog.pop("replicas", None)
    catalog["versions"] = {
        "v1": {},
        "v2": {"faults": {"abort": {"percent": ABORT_PERCENT, "grpc_status": "UNAVAILABLE"}}},
    }
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


class Reads:
    """Reads of one product through the edge, from a thread, until stopped (bounded)."""

    def __init__(self, edge_url: str, product: str) -> None:
        self.client = httpx.Client(base_url=edge_url, timeout=10)
        self.product = product
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read)

    def _read(self) -> None:
        ends = time.monotonic() + MAX_SECONDS
        for _ in range(MAX_CALLS):
            if self.stopped.wait(0.02) or time.monotonic() > ends:
                return
            self.client.get(f"/v1/products/{self.product}")

    def __enter__(self) -> Reads:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()
        self.client.close()


def test_a_fast_burn_fires_is_sent_and_shown_then_resolves(
    watched: RunningMesh, receiver: Receiver
) -> None:
    with httpx.Client(base_url=watched.edge_url, timeout=30) as edge:
        product = stocked_product(edge, bearer(watched.token("alerts", "catalog:write")), 5)
    wanted = {"service": "catalog", "severity": "page", "long_window": "2m"}
    with Reads(watched.edge_url, product):
        time.sleep(3)  # healthy calls first: nothing fires
        assert receiver.notice("firing", "AvailabilityBudgetBurn", **wanted) is None
        watched.meshctl("rollout", "weights", "catalog", "v1=0", "v2=100")
        firing = wait_until(
            lambda: receiver.notice("firing", "AvailabilityBudgetBurn", **wanted),
            "the fast-burn alert at the webhook",
            within=60,
        )
        shown = watched.meshctl("alerts").stdout
        status = watched.meshctl("status").stdout
        watched.meshctl("rollout", "weights", "catalog", "v1=100", "v2=0")
        resolved = wait_until(
            lambda: receiver.notice("resolved", "AvailabilityBudgetBurn", **wanted),
            "the fast-burn alert's resolution at the webhook",
            within=90,
        )
    alert = firing["alerts"][0]
    assert firing["version"] == "4"
    assert firing["receiver"] == "meshctl"
    assert alert["status"] == "firing"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["labels"]["short_window"] == "10s"
    assert alert["labels"]["slo"] == "availability"
    assert (
        "catalog spends its availability error budget 14.4x too fast"
        in (alert["annotations"]["summary"])
    )
    assert len(alert["fingerprint"]) == 16
    ended = resolved["alerts"][0]
    assert ended["fingerprint"] == alert["fingerprint"]
    assert ended["startsAt"] == alert["startsAt"]
    assert ended["endsAt"] > ended["startsAt"]
    assert "firing" in shown
    assert "AvailabilityBudgetBurn" in shown
    assert "service=catalog" in shown
    assert "alert firing: AvailabilityBudgetBurn" in status
    listed = json.loads(watched.meshctl("alerts", "--json").stdout)
    assert not [a for a in listed if wanted.items() <= a["labels"].items()], listed
