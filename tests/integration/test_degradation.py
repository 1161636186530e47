"""Graceful degradation, on purpose: where a dependency's failure gives a reduced answer
instead of an error, each path tested in a real mesh with the dependency stopped.

* Catalog's reads in the view with stock levels, inventory stopped: the products come
  anyway, each marked `STOCK_STATE_UNREACHABLE` without a level, over gRPC and REST
  through the edge, with `cache-control: no-store`, a WARNING in catalog's log and a
  count in `shop_degraded_answers_total`; started again, the same read has the levels,
  as no cache kept the degraded answer. The basic view never asks inventory.
* An order placed while notifications is stopped is CONFIRMED all the same (nothing
  waits on notifications); its notification comes once notifications runs again, from
  the events its durable consumer kept.
* An order placed while the card processor is stopped waits PENDING, neither declined
  nor cancelled, and is CONFIRMED once the processor runs again.

An instance is stopped in one of two ways, each undone whatever the test's outcome:
frozen, its app and sidecar stopped with SIGSTOP by their pids (a host gone dark: calls
to it hang until their timeout; SIGCONT starts it again), or killed, its app and sidecar
killed by their pids while the supervisor, which would restart them within a second, is
held with SIGSTOP (calls to it are refused at once; released, the supervisor starts it
again). The mesh is this module's own (`mesh.yaml` as it is, the edge's cache included),
stopped with `meshctl down` and checked by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from nats.js.api import ConsumerInfo
from prometheus_client.parser import text_string_to_metric_families

from mesh.runtime import events
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from tests.support.mesh import ROOT, RunningMesh, bearer, customer, mesh_up
from tests.support.saga import (
    CONFIRMED,
    HAPPY_PATH,
    get_order,
    notifications_for,
    place,
    query,
    steps,
    stocked_product,
    wait_until_terminal,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

WITH_STOCK = "PRODUCT_VIEW_WITH_STOCK"
UNREACHABLE, CURRENT = "STOCK_STATE_UNREACHABLE", "STOCK_STATE_CURRENT"
PENDING = "ORDER_STATUS_PENDING"
GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
LIST_PRODUCTS = "/shop.catalog.v1.CatalogService/ListProducts"
BATCH_GET_PRODUCTS = "/shop.catalog.v1.CatalogService/BatchGetProducts"
#: How long an order is watched while the processor is stopped: past the consumer's last
#: redelivery of its charge (1, 2, 5 and 10 s apart, each try waiting up to 6 s for the
#: processor), so it shows what becomes of an order once redelivery alone has given up.
PROCESSOR_DOWN_SECONDS = 60.0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("degradation")
    with mesh_up(RunningMesh(directory / "run", ROOT / "mesh.yaml")) as running:
        yield running


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mesh: RunningMesh) -> dict[str, str]:
    return bearer(mesh.token("degradation-admin", "catalog:write", "inventory:write"))


@pytest.fixture(scope="module")
def catalog(mesh: RunningMesh) -> Iterator[Any]:
    """Catalog's API v1 over native gRPC, through the edge."""
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        yield catalog_grpc.CatalogServiceStub(channel)


@contextlib.contextmanager
def frozen(mesh: RunningMesh, instance: str) -> Iterator[None]:
    """`instance`'s app and sidecar stopped (SIGSTOP) for the block; then they go on."""
    found = mesh.instance(instance)
    pids = [found["app_pid"], found["sidecar_pid"]]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def killed(mesh: RunningMesh, instance: str) -> Iterator[None]:
    """`instance`'s app and sidecar killed, and kept down for the block by holding the
    supervisor (SIGSTOP); released after it, the supervisor starts them again."""
    supervisor = mesh.state()["supervisor_pid"]
    found = mesh.instance(instance)
    os.kill(supervisor, signal.SIGSTOP)
    try:
        for pid in (found["app_pid"], found["sidecar_pid"]):
            os.kill(pid, signal.SIGKILL)
        yield
    finally:
        os.kill(supervisor, signal.SIGCONT)


Stop = Callable[[RunningMesh, str], contextlib.AbstractContextManager[None]]


# Catalog without inventory --------------------------------------------------------------


def rest_product(edge: httpx.Client, product_id: str, **params: str) -> httpx.Response:
    response = edge.get(f"/v1/products/{product_id}", params=params)
    assert response.status_code == 200, response.text
    return response


def grpc_product(
    catalog: Any, product_id: str, view: catalog_pb.ProductView
) -> tuple[Any, dict[str, str]]:
    """GetProduct over gRPC through the edge: the product and the answer's metadata."""
    request = catalog_pb.GetProductRequest(id=product_id, view=view)
    response, call = catalog.GetProduct.with_call(request, timeout=15)
    return response.product, dict(call.initial_metadata())


def listed_stock(edge: httpx.Client, product_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stock of each of `product_ids` in a page listed with stock over REST."""
    listed = edge.get("/v1/products", params={"view": WITH_STOCK, "pageSize": 100})
    assert listed.status_code == 200, listed.text
    products = listed.json()["products"]
    return {p["id"]: p["stock"] for p in products if p["id"] in product_ids}


def catalog_sidecar_calls_to_inventory(mesh: RunningMesh) -> int:
    """The calls catalog's sidecar has sent to inventory, every try counted."""
    return mesh.stats("catalog-0").get("cluster.inventory.upstream_rq_total", 0)


def catalog_metric(mesh: RunningMesh, name: str, labels: dict[str, str]) -> float:
    """The sample `name` with `labels` of catalog's metrics, 0 when it has none."""
    port = mesh.instance("catalog-0")["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def degraded_answers(mesh: RunningMesh, method: str) -> float:
    """`shop_degraded_answers_total` of catalog's `method`, without inventory."""
    labels = {"dependency": "inventory", "method": method}
    return catalog_metric(mesh, "shop_degraded_answers_total", labels)


def inventory_circuit_open(mesh: RunningMesh) -> bool:
    """Whether catalog has stopped asking inventory (`mesh.runtime.circuit`)."""
    return catalog_metric(mesh, "shop_circuit_open", {"dependency": "inventory"}) == 1


def degradation_warnings(mesh: RunningMesh) -> list[dict[str, Any]]:
    """The WARNING lines of catalog's log that say it answered without inventory."""
    lines = (mesh.run_dir / "logs" / "catalog-0.log").read_text().splitlines()
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") == "WARNING" and "inventory did not answer" in entry["message"]:
                found.append(entry)
    return found


def reads_with_stock(edge: httpx.Client, catalog: Any, tea: str, mug: str) -> None:
    """With inventory running: the levels, no marker; the basic view has no stock."""
    product, _ = grpc_product(catalog, tea, catalog_pb.PRODUCT_VIEW_WITH_STOCK)
    assert (product.stock.state, product.stock.available) == (catalog_pb.STOCK_STATE_CURRENT, 5)
    assert listed_stock(edge, [tea, mug]) == {
        tea: {"state": CURRENT, "available": 5},
        mug: {"state": CURRENT, "available": 2},
    }
    assert "stock" not in rest_product(edge, tea).json()["product"]


def degraded_reads(edge: httpx.Client, catalog: Any, tea: str, mug: str) -> None:
    """With inventory stopped, four reads with stock: OK, the products marked, no-store."""
    # REST through the edge, the edge's cache on the way.
    started = time.monotonic()
    degraded = rest_product(edge, tea, view=WITH_STOCK)
    assert time.monotonic() - started < 5
    body = degraded.json()["product"]
    assert (body["id"], body["name"]) == (tea, "Kettle")
    assert body["stock"] == {"state": UNREACHABLE}
    assert degraded.headers["cache-control"] == "no-store"
    assert "etag" not in degraded.headers
    assert listed_stock(edge, [tea, mug]) == {
        tea: {"state": UNREACHABLE},
        mug: {"state": UNREACHABLE},
    }
    batch = edge.get("/v1/products:batchGet", params={"ids": [mug, tea], "view": WITH_STOCK})
    assert batch.status_code == 200, batch.text
    assert [p["stock"] for p in batch.json()["products"]] == [{"state": UNREACHABLE}] * 2
    # Native gRPC through the edge.
    product, metadata = grpc_product(catalog, mug, catalog_pb.PRODUCT_VIEW_WITH_STOCK)
    assert product.stock.state == catalog_pb.STOCK_STATE_UNREACHABLE
    assert not product.stock.HasField("available")
    assert metadata["cache-control"] == "no-store"


def basic_reads(mesh: RunningMesh, edge: httpx.Client, catalog: Any, tea: str, mug: str) -> None:
    """With inventory stopped, the basic view as ever, over either protocol: it does not
    ask inventory."""
    calls = catalog_sidecar_calls_to_inventory(mesh)
    basic = rest_product(edge, mug)
    assert "stock" not in basic.json()["product"]
    assert "no-store" not in basic.headers.get("cache-control", "")
    product, _ = grpc_product(catalog, tea, catalog_pb.PRODUCT_VIEW_BASIC)
    assert not product.HasField("stock")
    assert catalog_sidecar_calls_to_inventory(mesh) == calls


@pytest.mark.parametrize("stop", [frozen, killed], ids=["frozen", "killed"])
def test_catalog_answers_without_stock_levels_while_inventory_is_stopped(
    stop: Stop, mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str], catalog: Any
) -> None:
    tea, mug = stocked_product(edge, admin, 5), stocked_product(edge, admin, 2)
    reads_with_stock(edge, catalog, tea, mug)
    warnings_before = len(degradation_warnings(mesh))
    counted_before = degraded_answers(mesh, GET_PRODUCT)

    with stop(mesh, "inventory-0"):
        degraded_at = time.monotonic()
        degraded_reads(edge, catalog, tea, mug)
        basic_reads(mesh, edge, catalog, tea, mug)

    # Each of the four degraded answers counted; each method said so in catalog's log,
    # at most once per `degradation.LOG_EVERY_SECONDS` (the unit tests count the lines):
    # a run just after the other variant's finds its lines written already.
    warnings = degradation_warnings(mesh)
    methods = [w["message"].split(":")[0] for w in warnings[warnings_before:]]
    assert len(methods) == len(set(methods)), warnings
    said = {w["message"].split(":")[0] for w in warnings}
    assert said >= {GET_PRODUCT, LIST_PRODUCTS, BATCH_GET_PRODUCTS}, warnings
    assert degraded_answers(mesh, GET_PRODUCT) == counted_before + 2

    # Inventory running again: the read the edge may cache for 10 s has its level within
    # that time, so the degraded answer was not kept.
    def whole() -> httpx.Response | None:
        response = rest_product(edge, tea, view=WITH_STOCK)
        return response if "available" in response.json()["product"]["stock"] else None

    answered = wait_until(whole, "the stock level back", within=5)
    assert time.monotonic() - degraded_at < 10
    assert answered.json()["product"]["stock"] == {"state": CURRENT, "available": 5}
    assert "max-age" in answered.headers["cache-control"]


def test_a_hung_inventory_is_asked_again_only_once_a_while_and_reads_go_on_at_once(
    mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str], catalog: Any
) -> None:
    """Each read with stock that asks a hung inventory holds one of catalog's places in
    flight for the stock read's timeout: after a few unanswered, catalog's circuit stops
    asking, and the reads answer without stock at once, until a trial read finds it back."""
    tea = stocked_product(edge, admin, 5)
    reads = 12
    with frozen(mesh, "inventory-0"):
        calls_before = catalog_sidecar_calls_to_inventory(mesh)
        for _ in range(reads):
            product, _ = grpc_product(catalog, tea, catalog_pb.PRODUCT_VIEW_WITH_STOCK)
            assert product.stock.state == catalog_pb.STOCK_STATE_UNREACHABLE
        asked = catalog_sidecar_calls_to_inventory(mesh) - calls_before
        assert inventory_circuit_open(mesh)
    # The first reads asked and waited; the rest, but a trial now and then, did not ask.
    assert 1 <= asked <= reads // 2, f"{asked} calls to inventory for {reads} reads"

    def whole() -> catalog_pb.Product | None:
        product, _ = grpc_product(catalog, tea, catalog_pb.PRODUCT_VIEW_WITH_STOCK)
        return product if product.stock.state == catalog_pb.STOCK_STATE_CURRENT else None

    assert wait_until(whole, "the stock level back", within=10).stock.available == 5
    assert not inventory_circuit_open(mesh)


# Orders without notifications -----------------------------------------------------------


def consumer_info(mesh: RunningMesh, name: str) -> ConsumerInfo:
    async def read() -> ConsumerInfo:
        async with mesh.jetstream() as js:
            info: ConsumerInfo = await js.consumer_info(events.EVENTS_STREAM, name)
            return info

    return asyncio.run(read())


def unsettled(info: ConsumerInfo) -> int:
    """The events a consumer has not acknowledged: waiting, or delivered and unsettled."""
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


def test_an_order_is_confirmed_while_notifications_is_stopped_and_notified_after(
    mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str]
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)

    with frozen(mesh, "notifications-0"):
        order_id = place(edge, token, product_id, 1)
        order = wait_until_terminal(edge, token, order_id)
        assert order["status"] == CONFIRMED, order
        assert steps(order) == HAPPY_PATH
        # The confirmation waits for notifications in its durable consumer.
        wait_until(lambda: unsettled(consumer_info(mesh, "notifications")), "an event kept")
        sql = "SELECT id FROM notifications WHERE order_id = ?"
        assert query(mesh, "notifications", sql, order_id) == []

    told = wait_until(
        lambda: notifications_for(edge, token, order_id), "the notification once notifications ran"
    )
    assert [n["kind"] for n in told] == ["NOTIFICATION_KIND_ORDER_CONFIRMED"]


# Orders without the card processor ------------------------------------------------------


def test_an_order_waits_while_the_processor_is_stopped_and_is_confirmed_after(
    mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str]
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)

    with frozen(mesh, "processor-0"):
        order_id = place(edge, token, product_id, 1)
        wait_until(lambda: "StockReserved" in steps(get_order(edge, token, order_id)), "reserved")
        until = time.monotonic() + PROCESSOR_DOWN_SECONDS
        while time.monotonic() < until:
            order = get_order(edge, token, order_id)
            assert order["status"] == PENDING, order
            assert steps(order) == ["OrderPlaced", "StockReserved"], order
            time.sleep(2)

    order = wait_until_terminal(edge, token, order_id, timeout=60)
    assert order["status"] == CONFIRMED, order
    assert steps(order) == HAPPY_PATH
