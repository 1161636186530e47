"""The map's live numbers: rate, errors and p99 of every link, health of every node.

An RPC link's numbers come from the Envoys that send its calls: each one's cluster named
after the callee counts the calls (`grpc.total`) and those that failed (`grpc.failure`,
a gRPC status other than OK, from Envoy's gRPC statistics filter) and times them
(`upstream_rq_time`, a histogram in milliseconds), read from the Envoy's admin socket in
Prometheus's text format. Two readings a window apart give the window's rates, as for
the apps' own metrics (`mesh.runtime.metrics.rates`): the replicas' counts are summed
and the p99 is read from the summed histogram, so it is the link's, not a replica's.

An event link's numbers come from the consuming service's own metrics
(`shop_events_total{outcome}`): events handled per second (applied, duplicates and dead
letters; not retries), and the share set aside as dead letters.
A node's come from `state.json`, which the supervisor keeps: health, restarts, and the
app's own request rate, error ratio and p99.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mesh.control.console.graph import ServiceMap
from mesh.control.envoy.admin import AdminError, admin_get
from mesh.runtime import metrics

#: The stats of Envoy's clusters the links need (Envoy's `filter` matches stat names).
STATS_PATH = (
    "/stats/prometheus?usedonly&filter="
    r"^cluster\.[^.]+\.(grpc\.(total|failure)|upstream_rq_time)$"
)
#: The outcomes of `shop_events_total` that end an event's handling (a retry does not),
#: and the one that means it was set aside as a dead letter.
FINAL_OUTCOMES = frozenset({"applied", "duplicate", "dead"})
DEAD = "dead"


@dataclass
class Counts:
    """One reading of a link: calls, failed calls, and the cumulative latency buckets
    in seconds; or, for events, events handled and dead-lettered."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        for bound, count in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + count

    def sample(self, at: float) -> metrics.Sample:
        return metrics.Sample(at, self.requests, self.errors, dict(self.buckets))


def envoy_counts(text: str) -> dict[str, Counts]:
    """Each cluster's counts, by cluster name, from an Envoy's Prometheus text."""
    counts: dict[str, Counts] = {}
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            cluster = point.labels.get("envoy_cluster_name")
            if cluster is None:
                continue
            entry = counts.setdefault(cluster, Counts())
            # The parser names every counter's sample `<name>_total`.
            name = point.name.removesuffix("_total")
            if name == "envoy_cluster_grpc":
                entry.requests += point.value
            elif name == "envoy_cluster_grpc_failure":
                entry.errors += point.value
            elif point.name == "envoy_cluster_upstream_rq_time_bucket":
                bound = float(point.labels["le"]) / 1000  # Envoy's are in milliseconds
                entry.buckets[bound] = entry.buckets.get(bound, 0.0) + point.value
    return counts


def event_counts(text: str) -> Counts:
    """Events a service handled (`requests`) and dead-lettered (`errors`), from its
    metrics."""
    counts = Counts()
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            outcome = point.labels.get("outcome")
            if point.name == "shop_events_total" and outcome in FINAL_OUTCOMES:
                counts.requests += point.value
                if outcome == DEAD:
                    counts.errors += point.value
    return counts


def read_envoy(admin_socket: str) -> dict[str, Counts]:
    """An Envoy's cluster counts now; none when it does not answer."""
    try:
        return envoy_counts(admin_get(admin_socket, STATS_PATH, timeout=1.0).decode())
    except (AdminError, OSError):
        return {}


def read_app(metrics_port: int) -> Counts | None:
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return event_counts(response.read().decode())
    except OSError:
        return None


def link_readings(
    graph: ServiceMap, metrics_ports: Mapping[str, Sequence[int]], at: float | None = None
) -> dict[str, metrics.Sample]:
    """Every measurable link's reading now, by link id: RPC links from their senders'
    Envoys, event links into a consumer from its replicas' metrics."""
    at = time.monotonic() if at is None else at
    envoys = {socket: read_envoy(socket) for link in graph.links for socket in link.measured_at}
    readings: dict[str, metrics.Sample] = {}
    for link in graph.links:
        total = Counts()
        if link.kind == "rpc":
            _add_all(total, (envoys[s].get(link.target) for s in link.measured_at))
        elif link.target in metrics_ports:
            _add_all(total, (read_app(port) for port in metrics_ports[link.target]))
        else:
            continue
        readings[link.id] = total.sample(at)
    return readings


def _add_all(total: Counts, parts: Iterable[Counts | None]) -> None:
    for part in parts:
        if part is not None:
            total.add(part)


def link_rates(
    before: Mapping[str, metrics.Sample], after: Mapping[str, metrics.Sample]
) -> dict[str, dict[str, Any]]:
    """Each link's rate, error ratio and p99 between two readings."""
    figures = {}
    for link_id, sample in after.items():
        if link_id in before:
            rates = metrics.rates(before[link_id], sample)
            figures[link_id] = {
                "per_second": round(rates.requests_per_second, 2),
                "error_ratio": round(rates.error_ratio, 4),
                "p99_ms": None if rates.p99_ms is None else round(rates.p99_ms, 1),
            }
    return figures


def node_figures(graph: ServiceMap, state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each node's health and restarts (a service's: its worst replica's health, all
    their restarts), and a service's request rate, error ratio and p99 as its replicas'
    apps count them."""
    figures: dict[str, dict[str, Any]] = {}
    instances = {i["instance"]: i for i in state.get("instances", [])}
    for node in graph.nodes:
        if node.kind == "service":
            replicas = [instances[name] for name in node.instances if name in instances]
            figures[node.id] = _service_figures(replicas)
        else:
            part = state.get(node.id) or {}
            figures[node.id] = {
                "health": "SERVING" if part.get("pid") else "UNKNOWN",
                "restarts": part.get("restarts", 0),
            }
    return figures


_HEALTH_ORDER = ("NOT_SERVING", "UNKNOWN", "RESTARTING", "SERVING")


def _service_figures(replicas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    healths = [r.get("health", "UNKNOWN") for r in replicas] or ["UNKNOWN"]
    worst = min(healths, key=lambda h: _HEALTH_ORDER.index(h) if h in _HEALTH_ORDER else 0)
    rates = [r.get("rates") or {} for r in replicas]
    per_second = sum(r.get("requests_per_second", 0.0) for r in rates)
    errors = sum(r.get("requests_per_second", 0.0) * r.get("error_ratio", 0.0) for r in rates)
    p99s = [r["p99_ms"] for r in rates if r.get("p99_ms") is not None]
    return {
        "health": worst,
        "restarts": sum(r.get("restarts", 0) for r in replicas),
        "degraded": [reason for r in replicas for reason in r.get("degraded", [])],
        "per_second": round(per_second, 2),
        "error_ratio": round(errors / per_second, 4) if per_second else 0.0,
        "p99_ms": max(p99s) if p99s else None,
        "replicas": {r["instance"]: r.get("health", "UNKNOWN") for r in replicas},
    }
