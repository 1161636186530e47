"""Two versions of catalog side by side in a real mesh: the split changed while it runs
(no process restarted, the new split followed within a second), a version picked by
header or cookie at the edge and at a caller's sidecar, and `meshctl rollout` moving the
calls by steps or all at once, and back."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import yaml

from mesh.control.rollouts.model import PROMOTED
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from tests.support.mesh import ROOT, RunningMesh, bearer, mesh_up
from tests.support.saga import stocked_product
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

VERSION = "x-shop-version"


@pytest.fixture(scope="module")
def versioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("versioned")
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    # Which version answers a read is what these tests look at: none from the edge's cache.
    topology["edge"].pop("cache", None)
    catalog = topology["services"]["catalog"]
    catalog.pop("replicas", None)
    catalog["versions"] = {"v1": {}, "v2": {}}  # v1 takes every call at first
    config = directory / "mesh.yaml"
    config.write_text(yaml.safe_dump(topology))
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


@pytest.fixture(scope="module")
def edge(versioned: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=versioned.edge_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def product(edge: httpx.Client, versioned: RunningMesh) -> str:
    return stocked_product(edge, bearer(versioned.token("releases", "catalog:write")), 5)


@pytest.fixture(autouse=True)
def every_call_to_v1(versioned: RunningMesh) -> Iterator[None]:
    """Each test starts and ends with every call to v1 and no rollout in progress."""
    versioned.meshctl("rollout", "undo", "catalog", check=False)
    versioned.meshctl("rollout", "weights", "catalog", "v1=100", "v2=0")
    yield
    versioned.meshctl("rollout", "undo", "catalog", check=False)


def answered_by(edge: httpx.Client, product: str, headers: dict[str, str] | None = None) -> str:
    response = edge.get(f"/v1/products/{product}", headers=headers)
    assert response.status_code == 200, response.text
    return response.headers[VERSION]


def through_orders_sidecar(mesh: RunningMesh, product: str, metadata: Any = ()) -> str:
    """The version that answers a BatchGetProducts sent as orders sends it."""
    port = mesh.instance("orders-0")["outbound"]["catalog"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = catalog_grpc.CatalogServiceStub(channel)
        request = catalog_pb.BatchGetProductsRequest(ids=[product])
        _, call = stub.BatchGetProducts.with_call(request, metadata=metadata, timeout=10)
    version: str = dict(call.initial_metadata())[VERSION]
    return version


def processes(mesh: RunningMesh) -> dict[str, Any]:
    """Every process's pid and the restarts of each instance, as the supervisor sees them."""
    state = mesh.state()
    return {
        "instances": {
            i["instance"]: (i["app_pid"], i["sidecar_pid"], i["restarts"])
            for i in state["instances"]
        },
        "edge": state["edge"]["pid"],
    }


def test_a_new_split_is_followed_within_a_second_without_restarting_anything(
    versioned: RunningMesh, edge: httpx.Client, product: str
) -> None:
    before = processes(versioned)
    assert {answered_by(edge, product) for _ in range(20)} == {"v1"}
    assert through_orders_sidecar(versioned, product) == "v1"

    versioned.meshctl("rollout", "weights", "catalog", "v1=0", "v2=100")
    changed = time.monotonic()
    wait_until(lambda: answered_by(edge, product) == "v2", "a call answered by v2", 5, 0.01)
    assert time.monotonic() - changed < 1.0
    assert {answered_by(edge, product) for _ in range(20)} == {"v2"}
    assert through_orders_sidecar(versioned, product) == "v2"

    versioned.meshctl("rollout", "weights", "catalog", "v1=50", "v2=50")
    split = Counter(answered_by(edge, product) for _ in range(200))
    assert 60 <= split["v1"] <= 140, split
    assert split["v1"] + split["v2"] == 200
    shown = versioned.meshctl("rollout", "weights", "catalog").stdout
    assert shown.strip() == "catalog: v1 50%, v2 50%"
    assert processes(versioned) == before


def test_a_header_or_a_cookie_picks_a_version(
    versioned: RunningMesh, edge: httpx.Client, product: str
) -> None:
    assert answered_by(edge, product, {VERSION: "v2"}) == "v2"
    assert answered_by(edge, product, {"cookie": "theme=dark; shop-version=v2"}) == "v2"
    assert answered_by(edge, product, {VERSION: "v9"}) == "v1"  # no such version: the split
    assert answered_by(edge, product, {"cookie": "shop-version=v22"}) == "v1"
    # Native gRPC through the edge, and a caller's sidecar, pick by the header too.
    target = versioned.edge_url.removeprefix("http://")
    with grpc.insecure_channel(target) as channel:
        stub = catalog_grpc.CatalogServiceStub(channel)
        request = catalog_pb.GetProductRequest(id=product)
        _, call = stub.GetProduct.with_call(request, metadata=[(VERSION, "v2")], timeout=10)
    assert dict(call.initial_metadata())[VERSION] == "v2"
    assert through_orders_sidecar(versioned, product, [(VERSION, "v2")]) == "v2"
    assert through_orders_sidecar(versioned, product) == "v1"


class Reader:
    """Reads a product through the edge in a thread until stopped, counting who answered
    and what failed."""

    def __init__(self, edge: httpx.Client, product: str) -> None:
        self.answered: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(edge, product), daemon=True)

    def _read(self, edge: httpx.Client, product: str) -> None:
        # About 50 reads a second: well within the edge's bucket of one client.
        while not self._stop.wait(0.02):
            response = edge.get(f"/v1/products/{product}")
            key = response.headers.get(VERSION, "") if response.status_code == 200 else "failed"
            self.answered[key] += 1

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def rollout_of(mesh: RunningMesh) -> dict[str, Any]:
    [rollout] = json.loads(mesh.meshctl("rollout", "status", "--json").stdout)
    found: dict[str, Any] = rollout
    return found


def test_a_canary_rollout_promotes_step_by_step_and_undo_returns_at_once(
    versioned: RunningMesh, edge: httpx.Client, product: str
) -> None:
    with Reader(edge, product) as reader:
        started = versioned.meshctl(
            "rollout", "start", "catalog", "--canary", "v2", "--steps", "20,100",
            "--interval", "3s", "--min-requests", "5", "--max-p99", "2s",
        )  # fmt: skip
        assert "start: v2 20% (20% of the calls to v2, the rest to v1)" in started.stdout
        assert "catalog: v1 80%, v2 20%" in versioned.meshctl("rollout", "status").stdout
        status = wait_until(
            lambda: (r := rollout_of(versioned))["status"] == PROMOTED and r,
            lambda: f"the rollout promoted: {rollout_of(versioned)}", 60, 0.5,
        )  # fmt: skip
    assert [d["action"] for d in status["decisions"]] == ["start", "promote", "promote"]
    promote = status["decisions"][1]
    assert promote["canary"]["requests"] >= 5
    assert promote["canary"]["error_ratio"] == 0
    assert promote["stable"]["requests"] > promote["canary"]["requests"]
    assert reader.answered["failed"] == 0
    assert reader.answered["v2"] > 0
    assert "rollout to v2 (canary, from v1): promoted" in versioned.meshctl("status").stdout
    assert {answered_by(edge, product) for _ in range(10)} == {"v2"}

    undone = versioned.meshctl("rollout", "undo", "catalog").stdout
    assert "undo: v2 0% (back to v1 100%, v2 0%)" in undone
    assert answered_by(edge, product) == "v1"


def test_blue_green_switches_every_call_at_once(
    versioned: RunningMesh, edge: httpx.Client, product: str
) -> None:
    versioned.meshctl(
        "rollout", "start", "catalog", "--canary", "v2", "--blue-green", "--interval", "2s",
        "--min-requests", "1",
    )  # fmt: skip
    assert {answered_by(edge, product) for _ in range(10)} == {"v2"}
    with Reader(edge, product) as reader:
        watched = versioned.meshctl("rollout", "status", "catalog", "--watch").stdout.splitlines()
    assert "start: v2 100% (every call to v2, the rest to v1)" in watched[0]
    assert "promote: v2 100% (within every limit); v2: " in watched[1]
    assert watched[2:] == ["catalog: promoted"]
    assert reader.answered["failed"] == 0
    assert set(reader.answered) == {"v2"}
    versioned.meshctl("rollout", "undo", "catalog")
    assert {answered_by(edge, product) for _ in range(10)} == {"v1"}


def test_rollouts_that_cannot_be_say_why(versioned: RunningMesh) -> None:
    unknown = versioned.meshctl("rollout", "start", "catalog", "--canary", "v3", check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "meshctl: catalog has no version 'v3' (its versions: v1, v2)"
    plain = versioned.meshctl("rollout", "start", "orders", "--canary", "v2", check=False)
    assert "orders has no versions" in plain.stderr
    steps = versioned.meshctl(
        "rollout", "start", "catalog", "--canary", "v2", "--steps", "50,20", check=False
    )
    assert steps.returncode == 2
    assert "the last step must be 100" in steps.stderr
    shares = versioned.meshctl("rollout", "weights", "catalog", "v1=60", "v2=60", check=False)
    assert "the weights add up to 120, not 100" in shares.stderr
