"""The alerts of a topology, defined once: Prometheus renders them (`prometheus`), the
local mesh evaluates them on its own readings (`local`).

Objectives. Each service's two indicators are measured where its calls arrive, by its
sidecars' gRPC statistics (the faults a sidecar injects and the failures of an app that
is down included): the share of calls that ended in a server error, and the share that
took the app longer than the latency threshold. An alert fires when, over both a long
and a short window, an indicator spends the error budget (1 - objective) faster than the
tier's burn rate: the long window says the spending matters, the short one that it is
still going on, so the alert resolves soon after the fault ends. The tiers are the SRE
workbook's for a 30-day period (2% of the budget spent in 1 hour, 5% in 6 hours: page;
10% in 1 day or 3 days: ticket), their windows scaled to the objectives' period.

An alert also needs `MIN_BAD_CALLS` bad calls in its long window, so a mesh that serves
a handful of calls does not page on one slow call.

Plain alerts watch what no objective measures: an instance down or crash-looping, an
outbox whose oldest event waits, a consumer falling behind, a certificate left unrenewed.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.control.envoy.stats import LOCAL_APP_PREFIX, SERVER_ERRORS
from mesh.control.topology import Topology
from mesh.control.topology.model import Objectives

PAGE, TICKET = "page", "ticket"
AVAILABILITY, LATENCY = "availability", "latency"
#: The scrape jobs the rendered Prometheus configurations name: each instance's app
#: metrics, and its sidecar's Envoy statistics. Both carry `service` and `instance`.
APPS_JOB, SIDECARS_JOB = "shop-apps", "shop-sidecars"

#: The gRPC status codes (numbers, as Envoy names its counters) of server errors.
SERVER_ERROR_CODES = tuple(sorted(SERVER_ERRORS, key=int))
#: The sidecars' clusters of their apps, whose calls the indicators count.
_APP_CLUSTERS = f'envoy_cluster_name=~"{LOCAL_APP_PREFIX}.*"'


@dataclass(frozen=True)
class Tier:
    """One of the workbook's alerts: its windows as shares of the period, and the burn
    rate (how many times faster than the budget allows) both must exceed."""

    severity: str
    long: float
    short: float
    burn_rate: float


#: The SRE workbook's tiers (its table 5-8), windows as shares of a 30-day period.
TIERS = (
    Tier(PAGE, 1 / 720, 1 / 8640, 14.4),  # 1h and 5m
    Tier(PAGE, 1 / 120, 1 / 1440, 6.0),  # 6h and 30m
    Tier(TICKET, 1 / 30, 1 / 360, 3.0),  # 1d and 2h
    Tier(TICKET, 1 / 10, 1 / 120, 1.0),  # 3d and 6h
)
#: The tier that pages soonest, on a fast burn.
FAST_BURN = TIERS[0]
#: The fewest bad calls in its long window for which a burn-rate alert fires: with little
#: traffic one slow call is a large share of the calls, not a budget burning (the
#: workbook's caveat on low-traffic services).
MIN_BAD_CALLS = 5


def prometheus_duration(seconds: float) -> str:
    """`seconds` as a Prometheus duration in its largest exact unit (1h, 90s, 144m)."""
    whole = round(seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if whole >= size and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{max(whole, 1)}s"


@dataclass(frozen=True)
class BurnAlert:
    """One tier's alert on one indicator of one service."""

    service: str
    indicator: str
    tier: Tier
    objectives: Objectives

    @property
    def name(self) -> str:
        return f"{self.indicator.capitalize()}BudgetBurn"

    @property
    def budget(self) -> float:
        """The share of calls the objective lets go bad."""
        if self.indicator == AVAILABILITY:
            return self.objectives.error_budget
        return self.objectives.latency_budget

    @property
    def threshold(self) -> float:
        """The bad share of calls above which, in both windows, the alert fires."""
        return self.tier.burn_rate * self.budget

    def windows(self) -> tuple[float, float]:
        """The long and the short window, in seconds."""
        period = self.objectives.period
        return self.tier.long * period, self.tier.short * period

    def labels(self) -> dict[str, str]:
        long, short = self.windows()
        return {
            "alertname": self.name,
            "service": self.service,
            "slo": self.indicator,
            "severity": self.tier.severity,
            "long_window": prometheus_duration(long),
            "short_window": prometheus_duration(short),
        }

    def annotations(self) -> dict[str, str]:
        long, short = self.windows()
        bad = "server errors" if self.indicator == AVAILABILITY else "slow calls"
        return {
            "summary": (
                f"{self.service} spends its {self.indicator} error budget "
                f"{self.tier.burn_rate:g}x too fast"
            ),
            "description": (
                f"Over the last {prometheus_duration(long)} and {prometheus_duration(short)}, "
                f"more than {100 * self.threshold:.3g}% of {self.service}'s calls were {bad} "
                f"(objective {self.objective_text()})."
            ),
        }

    def objective_text(self) -> str:
        objectives = self.objectives
        if self.indicator == AVAILABILITY:
            return f"{objectives.availability:g}% without a server error"
        threshold = prometheus_duration(objectives.latency_threshold)
        if objectives.latency_threshold < 1:
            threshold = f"{objectives.latency_threshold * 1000:g}ms"
        return f"{objectives.latency:g}% within {threshold}"


def burn_alerts(topology: Topology) -> list[BurnAlert]:
    """Every service's alerts on both its indicators, in every tier."""
    return [
        BurnAlert(name, indicator, tier, service.slo)
        for name, service in sorted(topology.services.items())
        for indicator in (AVAILABILITY, LATENCY)
        for tier in TIERS
    ]


# -- the indicators in PromQL ---------------------------------------------------------------


def recorded(indicator: str, window: float) -> str:
    """The name of the recording rule of `indicator`'s bad share over `window`."""
    kind = "server_errors" if indicator == AVAILABILITY else "slow_calls"
    return f"service:shop_{kind}:ratio_rate{prometheus_duration(window)}"


def _counted(
    indicator: str, objectives: Objectives, service: str, window: float, function: str
) -> tuple[str, str]:
    """PromQL of `service`'s bad calls by `indicator` and of all its calls over `window`,
    each through `function` (`rate`, `increase`)."""
    span = prometheus_duration(window)
    match = f'service="{service}", {_APP_CLUSTERS}'

    def summed(selector: str) -> str:
        return f"sum by (service) ({function}({selector}[{span}]))"

    if indicator == AVAILABILITY:
        codes = "|".join(SERVER_ERROR_CODES)
        bad = summed(f'{{__name__=~"envoy_cluster_grpc_({codes})", {match}}}')
        return bad, summed(f"envoy_cluster_grpc_total{{{match}}}")
    bound = f"{objectives.latency_threshold * 1000:g}"
    timed = summed(f"envoy_cluster_upstream_rq_time_count{{{match}}}")
    fast = summed(f'envoy_cluster_upstream_rq_time_bucket{{{match}, le="{bound}"}}')
    return f"(\n  {timed}\n  -\n  {fast}\n)", timed


def bad_share(indicator: str, objectives: Objectives, service: str, window: float) -> str:
    """PromQL of the share of `service`'s calls over `window` that were bad by
    `indicator`."""
    bad, calls = _counted(indicator, objectives, service, window, "rate")
    return f"{bad}\n/\n{calls}"


def bad_calls(indicator: str, objectives: Objectives, service: str, window: float) -> str:
    """PromQL of how many of `service`'s calls over `window` were bad by `indicator`."""
    return _counted(indicator, objectives, service, window, "increase")[0]


def burn_expression(alert: BurnAlert) -> str:
    """PromQL that is non-empty while `alert` fires: both windows' recorded shares over
    its threshold, with at least `MIN_BAD_CALLS` bad calls in the long window."""
    long, short = alert.windows()
    match = f'{{service="{alert.service}"}}'
    threshold = f"{alert.threshold:.6g}"
    enough = bad_calls(alert.indicator, alert.objectives, alert.service, long)
    return (
        f"{recorded(alert.indicator, long)}{match} > {threshold}\n"
        f"and\n{recorded(alert.indicator, short)}{match} > {threshold}\n"
        f"and\n{enough} >= {MIN_BAD_CALLS}"
    )


# -- plain alerts ---------------------------------------------------------------------------

#: An outbox's oldest event waits this long before `OutboxStuck` (as `meshctl status`
#: marks its service DEGRADED).
OUTBOX_STUCK_SECONDS = 30
#: Events waiting for a consumer before `ConsumerLagging`.
CONSUMER_LAG_EVENTS = 1000
#: Restarts of an instance within `CRASH_LOOP_WINDOW` seconds that make it crash-looping.
CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW = 3, 900
#: A certificate's remaining life below which `CertificateExpiring` fires: its renewal, due
#: with half of a day's life left, is late by half of that.
CERTIFICATE_REMAINING_SECONDS = 6 * 3600


@dataclass(frozen=True)
class PlainAlert:
    """An alert on one condition, the same for every service."""

    name: str
    expression: str
    hold: float
    """Seconds the condition must hold before the alert fires (Prometheus's `for`)."""
    severity: str
    summary: str


PLAIN_ALERTS = (
    PlainAlert(
        "InstanceDown",
        f'min by (service, instance) (up{{job=~"{APPS_JOB}|{SIDECARS_JOB}"}}) == 0',
        60,
        PAGE,
        "{{ $labels.service }} instance {{ $labels.instance }} (its app or its sidecar) "
        "has not answered for a minute",
    ),
    PlainAlert(
        "InstanceCrashLooping",
        f'changes(process_start_time_seconds{{job="{APPS_JOB}"}}'
        f"[{prometheus_duration(CRASH_LOOP_WINDOW)}]) >= {CRASH_LOOP_RESTARTS}",
        0,
        PAGE,
        "{{ $labels.service }} instance {{ $labels.instance }} restarted "
        f"{CRASH_LOOP_RESTARTS} times or more in {prometheus_duration(CRASH_LOOP_WINDOW)}",
    ),
    PlainAlert(
        "OutboxStuck",
        f"max by (service, instance) (shop_outbox_oldest_pending_seconds) > {OUTBOX_STUCK_SECONDS}",
        60,
        PAGE,
        "{{ $labels.service }}'s outbox has held an event for over "
        f"{OUTBOX_STUCK_SECONDS}s: the saga's next steps wait",
    ),
    PlainAlert(
        "ConsumerLagging",
        f"max by (service, consumer) (shop_consumer_pending) > {CONSUMER_LAG_EVENTS}",
        300,
        TICKET,
        f"{{{{ $labels.consumer }}}} has had over {CONSUMER_LAG_EVENTS} events waiting for 5m",
    ),
    PlainAlert(
        "CertificateExpiring",
        # What each sidecar serves (its identity) and trusts (the CA), as Envoy reads it.
        "min by (service, instance) (envoy_listener_ssl_certificate_expiration_unix_time_seconds"
        f'{{job="{SIDECARS_JOB}"}} - time()) < {CERTIFICATE_REMAINING_SECONDS}',
        0,
        PAGE,
        "a certificate of {{ $labels.instance }} expires within "
        f"{prometheus_duration(CERTIFICATE_REMAINING_SECONDS)}: its renewal is late",
    ),
)
