"""The map's numbers (`mesh.control.console.measure`): links from the Envoys' cluster
statistics and the consumers' metrics, nodes from the supervisor's state."""

from __future__ import annotations

import itertools
from pathlib import Path

from mesh.control.console.graph import service_map
from mesh.control.console.measure import (
    Counts,
    envoy_counts,
    event_counts,
    link_rates,
    node_figures,
)
from mesh.control.plan import make_plan
from mesh.control.topology import parse


def envoy_text(cluster: str, total: int, failed: int, buckets: dict[str, int]) -> str:
    """What an Envoy's /stats/prometheus says of one cluster (times in milliseconds)."""
    lines = [
        "# TYPE envoy_cluster_grpc_total counter",
        f'envoy_cluster_grpc_total{{envoy_cluster_name="{cluster}"}} {total}',
        "# TYPE envoy_cluster_grpc_failure counter",
        f'envoy_cluster_grpc_failure{{envoy_cluster_name="{cluster}"}} {failed}',
        "# TYPE envoy_cluster_upstream_rq_time histogram",
    ]
    lines += [
        f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{cluster}",le="{le}"}} {n}'
        for le, n in buckets.items()
    ]
    lines += [
        f'envoy_cluster_upstream_rq_time_sum{{envoy_cluster_name="{cluster}"}} 0',
        f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{cluster}"}} {total}',
    ]
    return "\n".join(lines) + "\n"


def test_an_envoys_clusters_are_counted_apart_with_times_in_seconds() -> None:
    text = envoy_text("catalog", 10, 1, {"5": 8, "10": 10, "+Inf": 10})
    text += envoy_text("inventory", 4, 0, {"5": 4, "+Inf": 4})
    counts = envoy_counts(text)
    assert counts["catalog"].requests == 10
    assert counts["catalog"].errors == 1
    assert counts["catalog"].buckets == {0.005: 8, 0.01: 10, float("inf"): 10}
    assert counts["inventory"].requests == 4


def test_a_consumers_handled_events_leave_retries_out_and_count_dead_ones() -> None:
    text = (
        "# TYPE shop_events_total counter\n"
        'shop_events_total{consumer="inventory",outcome="applied"} 7\n'
        'shop_events_total{consumer="inventory",outcome="duplicate"} 1\n'
        'shop_events_total{consumer="inventory",outcome="retried"} 5\n'
        'shop_events_total{consumer="inventory",outcome="dead"} 2\n'
    )
    counts = event_counts(text)
    assert (counts.requests, counts.errors) == (10, 2)


def test_a_links_rate_errors_and_p99_are_over_the_window_and_its_replicas() -> None:
    before, after = Counts(), Counts()
    for replica in (envoy_text("c", 10, 0, {"5": 10, "50": 10, "+Inf": 10}),
                    envoy_text("c", 0, 0, {"5": 0, "50": 0, "+Inf": 0})):  # fmt: skip
        before.add(envoy_counts(replica)["c"])
    for replica in (envoy_text("c", 30, 1, {"5": 28, "50": 30, "+Inf": 30}),
                    envoy_text("c", 20, 1, {"5": 10, "50": 20, "+Inf": 20})):  # fmt: skip
        after.add(envoy_counts(replica)["c"])
    rates = link_rates({"a->c": before.sample(0.0)}, {"a->c": after.sample(2.0)})
    assert rates["a->c"]["per_second"] == 20.0  # 40 calls in 2 s
    assert rates["a->c"]["error_ratio"] == 0.05
    assert rates["a->c"]["p99_ms"] is not None
    assert 5 < rates["a->c"]["p99_ms"] <= 50


def test_a_link_needs_two_readings_for_its_rates() -> None:
    assert link_rates({}, {"a->c": Counts(1, 0, {}).sample(1.0)}) == {}


def test_a_service_node_is_as_healthy_as_its_worst_replica(tmp_path: Path) -> None:
    topology = parse("services:\n  catalog:\n    replicas: 2\n")
    ports = itertools.count(22000)
    graph = service_map(topology, make_plan(topology, tmp_path, lambda: next(ports)))
    rates = {"requests_per_second": 10.0, "error_ratio": 0.1, "p99_ms": 4.0}
    state = {
        "instances": [
            {"instance": "catalog-0", "health": "SERVING", "restarts": 1, "rates": rates},
            {"instance": "catalog-1", "health": "RESTARTING", "restarts": 2, "rates": {}},
        ],
        "nats": {"pid": 5, "restarts": 0},
    }
    figures = node_figures(graph, state)
    assert figures["catalog"]["health"] == "RESTARTING"
    assert figures["catalog"]["restarts"] == 3
    assert figures["catalog"]["per_second"] == 10.0
    assert figures["catalog"]["error_ratio"] == 0.1
    assert figures["nats"] == {"health": "SERVING", "restarts": 0}
