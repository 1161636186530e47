"""What an Envoy counted of the calls through it, read from its admin socket in
Prometheus's text format.

`envoy_counts`, for the console's map (`mesh.control.console`): of the calls it sent each
cluster, those that ended (`upstream_rq_completed`, each try, the replies Envoy made
itself included: a 503 of its circuit breaker, a 504 of a timeout), those that succeeded
(`grpc.success`, from Envoy's gRPC statistics filter), their times (`upstream_rq_time`, a
histogram in milliseconds) and the calls its circuit breaker turned away.

`served_counts`, for the rollouts' analysis (`mesh.control.rollouts`): of the calls a
version's sidecar received, every one and those that ended in a server error (gRPC's
UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED and the like), with the app's times.

`cache_events`, for `meshctl bench` and the tests: how the edge's response cache
(`mesh.control.envoy.edge_cache`) answered its lookups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mesh.control.envoy.admin import AdminError, admin_get, admin_stats
from mesh.runtime import metrics

#: The stats `envoy_counts` reads (Envoy's `filter` matches stat names).
STATS_PATH = (
    "/stats/prometheus?usedonly&filter="
    r"^(cluster\.[^.]+\.(grpc\.success|upstream_rq_(completed|time|pending_overflow|active_overflow))"
    r"|[^.]+\.http_local_rate_limit\.rate_limited)$"
)
#: The stats `served_counts` reads: the gRPC statistics of a sidecar's app clusters.
SERVED_PATH = (
    "/stats/prometheus?usedonly&filter="
    r"^cluster\.local_app[^.]*\.(grpc\.(total|[0-9]+)|upstream_rq_time)$"
)
#: The samples of Envoy's histogram of its upstream times.
_TIME_BUCKET = "envoy_cluster_upstream_rq_time_bucket"
_TIME_SUM = "envoy_cluster_upstream_rq_time_sum"
#: The clusters of a sidecar in front of its app (`mesh.control.envoy.clusters`).
LOCAL_APP_PREFIX = "local_app"
#: The gRPC statuses that say the server failed, not the client: UNKNOWN,
#: DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
SERVER_ERRORS = frozenset({"2", "4", "12", "13", "14", "15"})
#: The counters of the calls a cluster's circuit breaker turned away.
OVERFLOWS = frozenset(
    {"envoy_cluster_upstream_rq_pending_overflow", "envoy_cluster_upstream_rq_active_overflow"}
)
#: The counters of the edge cache's lookups, one per event (`cache_events`).
CACHE_EVENTS = r"^cache\.event\..*\.event_type\.([a-z_]+)$"
#: Where `envoy_counts` keeps what the Envoy itself turned away (the edge's rate limits).
ITSELF = ""


@dataclass
class Counts:
    """One reading of a link or a service: calls (or events handled), failed calls (or
    dead letters; of a version's sidecar, calls that ended in a server error), the
    cumulative latency buckets in seconds, calls turned away, and events waiting (a
    gauge)."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    refused: float = 0.0
    backlog: float = 0.0
    busy: float = 0.0
    """Of an instance's sidecar (`served_counts`): the seconds its app took over every
    call, added up."""

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.refused += other.refused
        self.backlog += other.backlog
        self.busy += other.busy
        for bound, count in other.buckets.items():
            self.buckets[bound] = self.buckets.get(bound, 0.0) + count

    def sample(self, at: float) -> metrics.Sample:
        return metrics.Sample(at, self.requests, self.errors, dict(self.buckets))

    def add_bucket(self, point: Sample) -> None:
        """One bucket of Envoy's `upstream_rq_time` histogram (in milliseconds)."""
        bound = float(point.labels["le"]) / 1000
        self.buckets[bound] = self.buckets.get(bound, 0.0) + point.value


def envoy_counts(text: str) -> dict[str, Counts]:
    """Each cluster's counts, by cluster name, from an Envoy's Prometheus text; under
    `ITSELF`, the requests its rate limits turned away."""
    counts: dict[str, Counts] = {}
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            if point.name.startswith("envoy_http_local_rate_limit_rate_limited"):
                counts.setdefault(ITSELF, Counts()).refused += point.value
                continue
            cluster = point.labels.get("envoy_cluster_name")
            if cluster is None:
                continue
            entry = counts.setdefault(cluster, Counts())
            # The parser names every counter's sample `<name>_total`.
            name = point.name.removesuffix("_total")
            if name == "envoy_cluster_upstream_rq_completed":
                entry.requests += point.value
                entry.errors += point.value
            elif name == "envoy_cluster_grpc_success":
                entry.errors -= point.value
            elif name in OVERFLOWS:
                entry.refused += point.value
            elif point.name == _TIME_BUCKET:
                entry.add_bucket(point)
    for entry in counts.values():
        entry.errors = max(0.0, entry.errors)  # calls ended but not yet counted: none failed
    return counts


def read_envoy(admin_socket: str) -> dict[str, Counts]:
    """An Envoy's cluster counts now; none when it does not answer."""
    try:
        return envoy_counts(admin_get(admin_socket, STATS_PATH, timeout=1.0).decode())
    except (AdminError, OSError):
        return {}


def summed(parts: Iterable[Counts | None]) -> Counts:
    total = Counts()
    for part in parts:
        if part is not None:
            total.add(part)
    return total


def served_counts(text: str) -> Counts:
    """What a sidecar's app clusters counted of the calls it received (its gRPC statistics
    filter comes before its fault filter, so injected failures count): every call, as
    failed those that ended in a server error (`SERVER_ERRORS`), and the app's times."""
    counts = Counts()
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            name = point.name.removesuffix("_total")
            if not point.labels.get("envoy_cluster_name", "").startswith(LOCAL_APP_PREFIX):
                continue
            if name == "envoy_cluster_grpc":  # the parser's name for `grpc.total`
                counts.requests += point.value
            elif name.removeprefix("envoy_cluster_grpc_") in SERVER_ERRORS:
                counts.errors += point.value
            elif point.name == _TIME_BUCKET:
                counts.add_bucket(point)
            elif point.name == _TIME_SUM:
                counts.busy += point.value / 1000
    return counts


def read_served(admin_socket: str) -> Counts | None:
    """What the sidecar at `admin_socket` counted of the calls it received; None when it
    does not answer."""
    try:
        return served_counts(admin_get(admin_socket, SERVED_PATH, timeout=1.0).decode())
    except (AdminError, OSError):
        return None


def cache_events(admin_socket: str) -> dict[str, int]:
    """How the edge's cache answered so far, by event: `hit` (from its memory), `miss`
    (fetched through its fill listener), `validate` (a stale entry fetched anew),
    `uncacheable` (an answer it may not keep), and errors; none without a cache."""
    counted = admin_stats(admin_socket, CACHE_EVENTS)
    events: dict[str, int] = {}
    for name, count in counted.items():
        found = re.fullmatch(CACHE_EVENTS, name)
        if found:
            events[found[1]] = events.get(found[1], 0) + count
    return events
