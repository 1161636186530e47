"""A service's metrics, in Prometheus text on a loopback port (`SHOP_METRICS_PORT`).

RED per RPC, from the runner's `MetricsInterceptor`:

* `shop_rpc_requests_total{method, code}`: RPCs served, by gRPC status code;
* `shop_rpc_duration_seconds{method}`: how long they took (histogram);
* `shop_rpc_refused_total{method}`: RPCs refused unstarted, the app being at its limit of
  calls in flight (`mesh.runtime.admission`; also counted above as UNAVAILABLE).

The saga's health, from the event bus:

* `shop_outbox_pending`: events committed and not yet published, and
  `shop_outbox_oldest_pending_seconds`: how long the first of them has waited (the
  supervisor marks an instance DEGRADED past `OUTBOX_DEGRADED_SECONDS`);
* `shop_outbox_parked_total`: events the bus would not take, parked in the outbox;
* `shop_consumer_pending{consumer}`: events JetStream holds for the consumer, not yet
  delivered (its lag);
* `shop_events_total{consumer, outcome}`: events handled: applied, duplicate, failed,
  retried, dead (set aside as dead letters).

Graceful degradation (`mesh.runtime.degradation`):

* `shop_degraded_answers_total{dependency, method}`: answers given on purpose without
  what a dependency failed to provide;
* `shop_feature_off{feature, reason}`: 1 for a feature the service runs without (search
  without its embedding model ranks by keywords alone): its health details, which the
  supervisor shows as DEGRADED with the reason.

The process collectors of `prometheus-client` add CPU, memory and file descriptors. A
service's name and instance are not labels here: a scraper adds them from the target
(`job`, `instance`), as Prometheus does; the local supervisor knows whose port it is.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

#: The port a service serves its metrics on (0 or unset: none).
PORT_VARIABLE = "SHOP_METRICS_PORT"

#: The path prefix of the platform's own services in every app (health, reflection):
#: not the service's traffic, neither counted nor held back.
PLATFORM_PREFIX = "/grpc."

REQUESTS = Counter(
    "shop_rpc_requests", "RPCs served, by method and status code.", ["method", "code"]
)
DURATION = Histogram(
    "shop_rpc_duration_seconds",
    "How long RPCs took to serve, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REFUSED = Counter(
    "shop_rpc_refused",
    "RPCs refused unstarted: the app was at its limit of calls in flight.",
    ["method"],
)
OUTBOX_PENDING = Gauge("shop_outbox_pending", "Events committed and not yet published.")
OUTBOX_OLDEST_PENDING = Gauge(
    "shop_outbox_oldest_pending_seconds",
    "How long the oldest event committed and not yet published has waited.",
)
#: How long an event may wait in an outbox before its service is DEGRADED: the relay
#: retries for a few seconds at most while the bus is there, so this is a bus away or
#: an event the bus will not take.
OUTBOX_DEGRADED_SECONDS = 30.0
OUTBOX_PARKED = Counter(
    "shop_outbox_parked_total", "Events the bus would not take, parked in the outbox."
)
CONSUMER_PENDING = Gauge(
    "shop_consumer_pending", "Events waiting in JetStream for the consumer.", ["consumer"]
)
EVENTS = Counter(
    "shop_events", "Events handled by the consumer, by outcome.", ["consumer", "outcome"]
)
FEATURE_OFF = Gauge(
    "shop_feature_off",
    "1 for each feature the service runs without, with the reason (its health details).",
    ["feature", "reason"],
)
CIRCUIT_OPEN = Gauge(
    "shop_circuit_open",
    "1 while calls to the dependency are not made, after it left several unanswered.",
    ["dependency"],
)
DEGRADED_ANSWERS = Counter(
    "shop_degraded_answers",
    "Answers given without what a dependency failed to provide, by dependency and method.",
    ["dependency", "method"],
)


def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Count and time one RPC; the platform's own (health, reflection) are not counted."""
    if method.startswith(PLATFORM_PREFIX):
        return
    REQUESTS.labels(method, code).inc()
    DURATION.labels(method).observe(seconds)


def serve_from_environment() -> int | None:
    """Serve the metrics on 127.0.0.1:`SHOP_METRICS_PORT` (a daemon thread), if set."""
    port = int(os.environ.get(PORT_VARIABLE, "0") or 0)
    if port:
        start_http_server(port, addr="127.0.0.1")
        return port
    return None


@dataclass(frozen=True)
class Sample:
    """One scrape of a service's RPC counters, summed over its methods."""

    time: float
    requests: float
    errors: float
    #: Cumulative counts of the duration histogram, by upper bound (seconds).
    buckets: dict[float, float]
    #: How long the oldest event of the service's outbox has waited, in seconds.
    outbox_oldest_seconds: float = 0.0
    #: Events its outbox parked since the process started.
    outbox_parked: float = 0.0
    #: Events waiting in JetStream for each of its consumers.
    consumer_pending: Mapping[str, float] = field(default_factory=dict)
    #: The features it runs without, and why (`FEATURE_OFF`).
    features_off: Mapping[str, str] = field(default_factory=dict)

    def degraded(self) -> list[str]:
        """Why the service, serving as it may be, needs an operator: its outbox is stuck
        past `OUTBOX_DEGRADED_SECONDS`, or parked events."""
        reasons = []
        if self.outbox_oldest_seconds > OUTBOX_DEGRADED_SECONDS:
            reasons.append(
                f"the oldest event in its outbox has waited {self.outbox_oldest_seconds:.0f} s"
            )
        if self.outbox_parked:
            reasons.append(
                f"its outbox parked {self.outbox_parked:.0f} events (`meshctl dlq list`)"
            )
        reasons += [f"runs without {name}: {why}" for name, why in self.features_off.items()]
        return reasons


@dataclass(frozen=True)
class Rates:
    """What a service did between two samples."""

    requests_per_second: float
    error_ratio: float
    p99_ms: float | None


def exposition(port: int, timeout: float = 0.5) -> str | None:
    """The Prometheus text an app serves on its loopback metrics `port` now; None if it
    does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return str(r.read().decode())
    except OSError:
        return None


def scrape(port: int, timeout: float = 0.5) -> Sample | None:
    """The service's counters now, from its metrics port; None if it does not answer."""
    text = exposition(port, timeout)
    return None if text is None else sample_of(text, time.monotonic())


def sample_of(text: str, at: float) -> Sample:
    requests = errors = oldest = parked = 0.0
    buckets: dict[float, float] = {}
    pending: dict[str, float] = {}
    off: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            if point.name == "shop_rpc_requests_total":
                requests += point.value
                if point.labels.get("code") != "OK":
                    errors += point.value
            elif point.name == "shop_rpc_duration_seconds_bucket":
                bound = float(point.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + point.value
            elif point.name == "shop_outbox_oldest_pending_seconds":
                oldest = point.value
            elif point.name == "shop_outbox_parked_total":
                parked = point.value
            elif point.name == "shop_consumer_pending":
                pending[point.labels["consumer"]] = point.value
            elif point.name == "shop_feature_off" and point.value:
                off[point.labels["feature"]] = point.labels["reason"]
    return Sample(at, requests, errors, buckets, oldest, parked, pending, off)


def rates(before: Sample, after: Sample) -> Rates:
    """Requests per second, the share that failed, and the p99 latency in between.

    Counters that went down mean the process restarted in between: as Prometheus's
    `rate` does, everything `after` counts is then taken as new.
    """
    if after.requests < before.requests:
        before = Sample(before.time, 0.0, 0.0, {})
    seconds = max(after.time - before.time, 1e-9)
    requests = after.requests - before.requests
    errors = after.errors - before.errors
    delta = {b: after.buckets.get(b, 0.0) - before.buckets.get(b, 0.0) for b in after.buckets}
    return Rates(
        requests_per_second=requests / seconds,
        error_ratio=errors / requests if requests else 0.0,
        p99_ms=_quantile(delta, 0.99) * 1000 if requests and delta else None,
    )


def _quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile of a cumulative histogram, interpolated within its bucket (as
    Prometheus's `histogram_quantile` does)."""
    ordered = sorted(buckets.items())
    target = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= target:
            if bound == float("inf"):
                return lower
            share = (target - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower
