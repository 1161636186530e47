"""Metrics: each app's Prometheus text (RED per RPC, saga gauges), Envoy's, and the rates
`meshctl status` shows from them."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.control import envoy
from tests.support.mesh import RunningMesh, bearer, customer
from tests.support.saga import (
    CONFIRMED,
    place,
    stocked_product,
    wait_until_terminal,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as client:
        yield client


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at `url`, parsed by prometheus-client: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of Prometheus `text`: (name, labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def app_metrics(
    mesh: RunningMesh, instance: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return scrape(f"http://127.0.0.1:{mesh.instance(instance)['metrics_port']}/metrics")


def requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], code: str) -> float:
    return samples.get(("shop_rpc_requests_total", (("code", code), ("method", GET_PRODUCT))), 0.0)


def test_an_error_of_one_rpc_shows_in_that_services_error_count(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    before = app_metrics(mesh, "catalog-0")
    missing = edge.get("/v1/products/no-such-product")
    assert missing.status_code == 404
    after = app_metrics(mesh, "catalog-0")
    assert requests(after, "NOT_FOUND") == requests(before, "NOT_FOUND") + 1
    assert requests(after, "OK") == requests(before, "OK")
    # ...timed too: the histogram counted it.
    count = ("shop_rpc_duration_seconds_count", (("method", GET_PRODUCT),))
    assert after[count] == before.get(count, 0.0) + 1
    # Health checks are the platform's, not the service's traffic.
    assert not any("grpc.health" in dict(labels).get("method", "") for _, labels in after)


def test_the_saga_is_visible_in_the_event_metrics(edge: httpx.Client, mesh: RunningMesh) -> None:
    admin = bearer(mesh.token("metrics-admin", "catalog:write"))
    product_id = stocked_product(edge, admin, 3)
    _, token = customer(edge)
    assert wait_until_terminal(edge, token, place(edge, token, product_id))["status"] == CONFIRMED
    applied = ("shop_events_total", (("consumer", "orders"), ("outcome", "applied")))
    # Reserved, captured, scheduled: three steps applied by orders (the count follows
    # each commit, so it may trail the order's status by a moment).
    orders = wait_until(
        lambda: found if (found := app_metrics(mesh, "orders-0")).get(applied, 0) >= 3 else None,
        "the applied events counted",
    )
    assert ("shop_outbox_pending", ()) in orders
    assert ("shop_consumer_pending", (("consumer", "orders"),)) in orders
    assert orders[("process_resident_memory_bytes", ())] > 0


def test_envoy_stats_are_prometheus_text_too(mesh: RunningMesh) -> None:
    admin = mesh.instance("orders-0")["admin_socket"]
    samples = parse(envoy.admin_get(admin, "/stats/prometheus").decode())
    assert any(name.startswith("envoy_cluster_upstream_rq") for name, _ in samples)


def test_status_shows_requests_per_second_errors_and_p99(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    def rates_of_failing_calls() -> dict[str, Any] | None:
        for _ in range(20):
            edge.get("/v1/products/no-such-product")
        rates: dict[str, Any] | None = mesh.instance("catalog-0")["rates"]
        # The supervisor's last interval held our (failing) calls.
        return rates if rates and rates["error_ratio"] > 0 else None

    # Traffic without a pause, over at least two of the supervisor's 2 s samples.
    rates = wait_until(rates_of_failing_calls, "rates of the failing calls", 20, interval=0)
    assert rates["requests_per_second"] > 0
    assert rates["p99_ms"] > 0
    table = mesh.meshctl("status").stdout.splitlines()
    assert table[0].split()[-3:] == ["REQ/S", "ERR%", "P99"] or "P99 MS" in table[0]
    [catalog] = [line for line in table if line.startswith("catalog ")]
    assert catalog.split()[-3] != "-"
