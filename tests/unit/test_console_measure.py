"""The map's numbers (`mesh.control.console.measure`): links from the Envoys' cluster
statistics and the consumers' metrics, nodes from the supervisor's state and the apps'
metrics."""

from __future__ import annotations

import itertools
from pathlib import Path
from unittest import mock

from mesh.control.console.graph import ServiceMap, service_map
from mesh.control.console.measure import (
    BACKLOG_SATURATED,
    Readings,
    Replicas,
    app_counts,
    link_figures,
    node_figures,
    read_all,
)
from mesh.control.envoy import stats
from mesh.control.envoy.stats import Counts, envoy_counts
from mesh.control.plan import make_plan
from mesh.control.topology import parse


def envoy_text(
    cluster: str, ended: int, failed: int, buckets: dict[str, int], overflow: int = 0
) -> str:
    """What an Envoy's /stats/prometheus says of one cluster (times in milliseconds)."""
    name = f'{{envoy_cluster_name="{cluster}"}}'
    lines = [
        "# TYPE envoy_cluster_upstream_rq_pending_overflow counter",
        f"envoy_cluster_upstream_rq_pending_overflow{name} 0",
        "# TYPE envoy_cluster_upstream_rq_active_overflow counter",
        f"envoy_cluster_upstream_rq_active_overflow{name} {overflow}",
        "# TYPE envoy_cluster_upstream_rq_completed counter",
        f"envoy_cluster_upstream_rq_completed{name} {ended}",
        "# TYPE envoy_cluster_grpc_success counter",
        f"envoy_cluster_grpc_success{name} {ended - failed}",
        "# TYPE envoy_cluster_upstream_rq_time histogram",
    ]
    lines += [
        f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{cluster}",le="{le}"}} {n}'
        for le, n in buckets.items()
    ]
    lines += [
        f"envoy_cluster_upstream_rq_time_sum{name} 0",
        f"envoy_cluster_upstream_rq_time_count{name} {ended}",
    ]
    return "\n".join(lines) + "\n"


def app_text(applied: int, dead: int, refused: int, pending: int) -> str:
    """What an app's /metrics says of its events, refusals and consumer's backlog."""
    return (
        "# TYPE shop_events_total counter\n"
        f'shop_events_total{{consumer="inventory",outcome="applied"}} {applied}\n'
        'shop_events_total{consumer="inventory",outcome="duplicate"} 1\n'
        'shop_events_total{consumer="inventory",outcome="retried"} 5\n'
        f'shop_events_total{{consumer="inventory",outcome="dead"}} {dead}\n'
        "# TYPE shop_rpc_refused_total counter\n"
        f'shop_rpc_refused_total{{method="GetStock"}} {refused}\n'
        "# TYPE shop_consumer_pending gauge\n"
        f'shop_consumer_pending{{consumer="inventory"}} {pending}\n'
    )


def _graph(text: str, tmp_path: Path) -> ServiceMap:
    topology = parse(text)
    ports = itertools.count(23000)
    return service_map(topology, make_plan(topology, tmp_path, lambda: next(ports)))


CALLS = "services:\n  a:\n    calls:\n      c: {methods: all}\n  c: {}\n"
CONSUMES = "services:\n  inventory:\n    consumes: [orders.order_placed]\n  orders: {}\n"


def test_an_envoys_clusters_are_counted_apart_with_times_in_seconds() -> None:
    text = envoy_text("catalog", 10, 1, {"5": 8, "10": 10, "+Inf": 10}, overflow=2)
    text += envoy_text("inventory", 4, 0, {"5": 4, "+Inf": 4})
    counts = envoy_counts(text)
    assert (counts["catalog"].requests, counts["catalog"].errors) == (10, 1)
    assert counts["catalog"].refused == 2
    assert counts["catalog"].buckets == {0.005: 8, 0.01: 10, float("inf"): 10}
    assert counts["inventory"].requests == 4


def test_an_apps_handled_events_leave_retries_out_and_count_dead_ones() -> None:
    counts = app_counts(app_text(applied=7, dead=2, refused=3, pending=12))
    assert (counts.requests, counts.errors) == (10, 2)
    assert (counts.refused, counts.backlog) == (3, 12)


def test_a_links_rate_errors_and_p99_are_over_the_window_and_its_replicas(
    tmp_path: Path,
) -> None:
    before, after = Counts(), Counts()
    for replica in (envoy_text("c", 10, 0, {"5": 10, "50": 10, "+Inf": 10}),
                    envoy_text("c", 0, 0, {"5": 0, "50": 0, "+Inf": 0})):  # fmt: skip
        before.add(envoy_counts(replica)["c"])
    for replica in (envoy_text("c", 30, 1, {"5": 28, "50": 30, "+Inf": 30}),
                    envoy_text("c", 20, 1, {"5": 10, "50": 20, "+Inf": 20})):  # fmt: skip
        after.add(envoy_counts(replica)["c"])
    figures = link_figures(
        _graph(CALLS, tmp_path),
        Readings(0.0, {"a->c": before}, {}),
        Readings(2.0, {"a->c": after}, {}),
    )["a->c"]
    assert figures["per_second"] == 20.0  # 40 calls in 2 s
    assert figures["error_ratio"] == 0.05
    assert figures["p99_ms"] is not None
    assert 5 < figures["p99_ms"] <= 50
    assert figures["saturated"] is False


def test_a_link_whose_circuit_breaker_turned_calls_away_is_saturated(tmp_path: Path) -> None:
    before = envoy_counts(envoy_text("c", 10, 0, {"+Inf": 10}, overflow=0))["c"]
    after = envoy_counts(envoy_text("c", 20, 0, {"+Inf": 20}, overflow=4))["c"]
    figures = link_figures(
        _graph(CALLS, tmp_path),
        Readings(0.0, {"a->c": before}, {}),
        Readings(2.0, {"a->c": after}, {}),
    )["a->c"]
    assert figures["refused_per_second"] == 2.0
    assert figures["saturated"] is True


def test_a_link_needs_two_readings_for_its_figures(tmp_path: Path) -> None:
    later = Readings(2.0, {"a->c": Counts(1, 0, {})}, {})
    assert link_figures(_graph(CALLS, tmp_path), Readings(0.0, {}, {}), later) == {}


def test_an_event_link_counts_what_its_consumer_handled(tmp_path: Path) -> None:
    graph = _graph(CONSUMES, tmp_path)
    before = Readings(0.0, {}, {"inventory": app_counts(app_text(10, 0, 0, 0))})
    after = Readings(2.0, {}, {"inventory": app_counts(app_text(18, 1, 0, 0))})
    figures = link_figures(graph, before, after)
    assert figures["nats->inventory"]["per_second"] == 4.5  # 8 applied + 1 dead in 2 s
    assert figures["nats->inventory"]["error_ratio"] == round(1 / 9, 4)
    assert "orders->nats" not in figures  # a producer's events are counted where consumed


def test_a_service_node_is_as_healthy_as_its_worst_replica(tmp_path: Path) -> None:
    graph = _graph("services:\n  catalog:\n    replicas: 2\n", tmp_path)
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
    assert figures["catalog"]["replicas"] == {"catalog-0": "SERVING", "catalog-1": "RESTARTING"}
    assert figures["catalog"]["restarts"] == 3
    assert figures["catalog"]["per_second"] == 10.0
    assert figures["catalog"]["error_ratio"] == 0.1
    assert figures["catalog"]["saturated"] is False
    assert figures["nats"] == {"health": "SERVING", "restarts": 0, "saturated": False}


def test_a_service_that_refuses_calls_or_falls_behind_is_saturated(tmp_path: Path) -> None:
    graph = _graph(CONSUMES, tmp_path)

    def reading(at: float, refused: int, pending: int) -> Readings:
        return Readings(at, {}, {"inventory": app_counts(app_text(10, 0, refused, pending))})

    calm = node_figures(graph, {}, reading(0.0, 0, 0), reading(2.0, 0, 3))["inventory"]
    assert (calm["saturated"], calm["backlog"]) == (False, 3)
    refusing = node_figures(graph, {}, reading(0.0, 0, 0), reading(2.0, 6, 0))["inventory"]
    assert (refusing["saturated"], refusing["refused_per_second"]) == (True, 3.0)
    behind = node_figures(graph, {}, reading(0.0, 0, 0), reading(2.0, 0, BACKLOG_SATURATED))
    assert behind["inventory"]["saturated"] is True


def test_a_service_whose_sidecar_turned_calls_away_is_saturated(tmp_path: Path) -> None:
    graph = _graph(CONSUMES, tmp_path)
    socket = str(tmp_path / "inventory-0.sock")
    replicas = {"inventory": Replicas((), (socket,))}
    texts = [
        envoy_text("local_app", 10, 0, {"+Inf": 10}, overflow=0).encode(),
        envoy_text("local_app", 20, 4, {"+Inf": 16}, overflow=4).encode(),
    ]
    with mock.patch.object(stats, "admin_get", side_effect=texts):
        before, after = read_all(graph, replicas, 0.0), read_all(graph, replicas, 2.0)
    figures = node_figures(graph, {}, before, after)["inventory"]
    assert (figures["refused_per_second"], figures["saturated"]) == (2.0, True)


def test_the_edge_is_saturated_when_its_rate_limits_turn_requests_away(tmp_path: Path) -> None:
    topology = parse("services:\n  catalog: {}\nedge:\n  expose: [catalog]\n")
    ports = itertools.count(25000)
    plan = make_plan(topology, tmp_path, lambda: next(ports))
    graph = service_map(topology, plan)
    assert plan.edge is not None
    replicas = {"edge": Replicas((), (plan.edge.admin_socket,))}  # the link's sender too
    limited = "# TYPE envoy_http_local_rate_limit_rate_limited counter\n"
    limited += (
        'envoy_http_local_rate_limit_rate_limited{{envoy_local_http_ratelimit_prefix="t"}} {}\n'
    )
    texts = [limited.format(5).encode(), limited.format(45).encode()]
    with mock.patch.object(stats, "admin_get", side_effect=texts):
        before, after = read_all(graph, replicas, 0.0), read_all(graph, replicas, 2.0)
    figures = node_figures(graph, {"edge": {"pid": 3, "restarts": 0}}, before, after)["edge"]
    assert (figures["refused_per_second"], figures["saturated"]) == (20.0, True)
