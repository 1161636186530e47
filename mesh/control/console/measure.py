"""The map's live numbers: rate, errors and p99 of every link, health of every node.

An RPC link's numbers come from the Envoys that send its calls: each one's cluster named
after the callee counts the calls that ended (`upstream_rq_completed`, the replies Envoy
made itself included: a 503 of its circuit breaker, a 504 of a timeout) and those that
succeeded (`grpc.success`, a gRPC status OK, from Envoy's gRPC statistics filter; every
other call failed), times them (`upstream_rq_time`, a histogram in milliseconds) and
counts the calls its circuit breaker turned away (`upstream_rq_pending_overflow` and
`upstream_rq_active_overflow`), read from the Envoy's admin socket in Prometheus's text
format. Two readings a window apart give the window's rates, as for
the apps' own metrics (`mesh.runtime.metrics.rates`): the replicas' counts are summed
and the p99 is read from the summed histogram, so it is the link's, not a replica's.

An event link's numbers come from the consuming service's own metrics
(`shop_events_total{outcome}`): events handled per second (applied, duplicates and dead
letters; not retries), and the share set aside as dead letters.

A node's come from `state.json`, which the supervisor keeps: health, restarts, and the
app's own request rate, error ratio and p99; and how saturated it is: the calls turned
away at its admission limits, by its sidecars (their circuit breakers in front of the
app, clusters `local_app*`) or by its apps (`shop_rpc_refused_total`), and the events
waiting for its consumer (`shop_consumer_pending`). A link is saturated
when its caller's circuit breaker turned calls away in the window, a service when it
refused calls or `BACKLOG_SATURATED` events wait for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mesh.control.console.graph import ServiceMap
from mesh.control.envoy.stats import ITSELF, LOCAL_APP_PREFIX, Counts, read_envoy, summed
from mesh.runtime import metrics

#: The outcomes of `shop_events_total` that end an event's handling (a retry does not),
#: and the one that means it was set aside as a dead letter.
FINAL_OUTCOMES = frozenset({"applied", "duplicate", "dead"})
DEAD = "dead"
#: A service this many events behind its producers is saturated.
BACKLOG_SATURATED = 100


@dataclass(frozen=True)
class Readings:
    """Everything the map's figures come from, read at one moment: each call link's
    counts (by link id) and each service's (by service)."""

    at: float
    links: dict[str, Counts]
    services: dict[str, Counts]


def app_counts(text: str) -> Counts:
    """From an app's metrics: events it handled (`requests`) and dead-lettered
    (`errors`), calls it refused unstarted, events waiting for its consumer."""
    counts = Counts()
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            outcome = point.labels.get("outcome")
            if point.name == "shop_events_total" and outcome in FINAL_OUTCOMES:
                counts.requests += point.value
                if outcome == DEAD:
                    counts.errors += point.value
            elif point.name == "shop_rpc_refused_total":
                counts.refused += point.value
            elif point.name == "shop_consumer_pending":
                counts.backlog += point.value
    return counts


def read_app(metrics_port: int) -> Counts | None:
    text = metrics.exposition(metrics_port, timeout=1.0)
    return None if text is None else app_counts(text)


@dataclass(frozen=True)
class Replicas:
    """Where a service's replicas are read: their apps' metrics ports, their sidecars'
    admin sockets."""

    metrics_ports: tuple[int, ...]
    admin_sockets: tuple[str, ...]


def read_all(
    graph: ServiceMap, services: Mapping[str, Replicas], at: float | None = None
) -> Readings:
    """Every call link's counts from its senders' Envoys, every service's from its
    replicas' metrics and the admission clusters of their sidecars, now."""
    at = time.monotonic() if at is None else at
    sockets = {s for link in graph.links for s in link.measured_at}
    sockets |= {s for replicas in services.values() for s in replicas.admin_sockets}
    envoys = {socket: read_envoy(socket) for socket in sorted(sockets)}
    links = {
        link.id: summed(envoys[s].get(c) for s in link.measured_at for c in link.clusters)
        for link in graph.links
        if link.kind == "rpc"
    }
    counts = {}
    for service, replicas in services.items():
        total = summed(read_app(port) for port in replicas.metrics_ports)
        for socket in replicas.admin_sockets:
            for name, cluster in envoys[socket].items():
                if name == ITSELF or name.startswith(LOCAL_APP_PREFIX):
                    total.refused += cluster.refused
        counts[service] = total
    return Readings(at, links, counts)


def rates(before: Counts, after: Counts, seconds: float) -> dict[str, Any]:
    """Per second, the share that failed, the p99, and per second turned away, between
    two readings `seconds` apart; the backlog as `after` found it."""
    found = metrics.rates(before.sample(0.0), after.sample(seconds))
    turned_away = max(0.0, after.refused - before.refused) / max(seconds, 1e-9)
    return {
        "per_second": round(found.requests_per_second, 2),
        "error_ratio": round(found.error_ratio, 4),
        "p99_ms": None if found.p99_ms is None else round(found.p99_ms, 1),
        "refused_per_second": round(turned_away, 2),
        "backlog": after.backlog,
    }


def link_figures(graph: ServiceMap, before: Readings, after: Readings) -> dict[str, Any]:
    """Each link's figures between two readings: a call link's from its own counts, an
    event link into a consumer from the consumer's; saturated when calls were turned
    away."""
    seconds = after.at - before.at
    figures: dict[str, Any] = {}
    for link in graph.links:
        if link.kind == "rpc":
            pair = before.links.get(link.id), after.links.get(link.id)
        else:
            pair = before.services.get(link.target), after.services.get(link.target)
        if pair[0] is not None and pair[1] is not None:
            found = rates(pair[0], pair[1], seconds)
            found["saturated"] = link.kind == "rpc" and found["refused_per_second"] > 0
            figures[link.id] = found
    return figures


def node_figures(
    graph: ServiceMap,
    state: Mapping[str, Any],
    before: Readings | None = None,
    after: Readings | None = None,
) -> dict[str, dict[str, Any]]:
    """Each node's health and restarts (a service's: its worst replica's health, all
    their restarts), and a service's request rate, error ratio and p99 as its replicas'
    apps count them, with how saturated it is between the two readings."""
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
        figures[node.id] |= _saturation(node.id, before, after)
    return figures


def _saturation(service: str, before: Readings | None, after: Readings | None) -> dict[str, Any]:
    if before is None or after is None:
        return {"saturated": False}
    then, now = before.services.get(service), after.services.get(service)
    if then is None or now is None:
        return {"saturated": False}
    found = rates(then, now, after.at - before.at)
    refused, backlog = found["refused_per_second"], found["backlog"]
    return {
        "refused_per_second": refused,
        "backlog": backlog,
        "saturated": refused > 0 or backlog >= BACKLOG_SATURATED,
    }


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
