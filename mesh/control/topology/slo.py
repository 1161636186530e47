"""`slo:` and `alerts:`: what share of its calls each service answers well over a period,
and where the alerts that follow from those objectives go.

    slo:                      # every service's objectives, unless its own say otherwise
      period: 30d
      availability: 99.9      # percent of calls answered without a server error
      latency: {threshold: 250ms, objective: 99}   # percent answered within threshold
    alerts:
      webhook: http://127.0.0.1:9095/alerts        # Alertmanager's webhook JSON
    services:
      catalog:
        slo: {availability: 99.95, latency: {threshold: 100ms}}

A call's time is the app's, as its sidecar measures it in Envoy's histogram of upstream
times, so a threshold is one of that histogram's bounds (`LATENCY_BOUNDS_MS`). A server
error is a status that says the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
INTERNAL, UNAVAILABLE, DATA_LOSS), not the client's mistake. The alerts themselves are
`mesh.control.alerting`'s.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import replace

from yaml.nodes import Node

from mesh.control.topology.model import DAY_SECONDS, AlertSettings, Objectives
from mesh.control.topology.nodes import Entries, NodeReader

#: The bounds of Envoy's default histogram buckets a latency threshold may name, in ms.
LATENCY_BOUNDS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
#: The longest period an objective may span, in days.
MAX_PERIOD_DAYS = 90
#: The least an objective may ask: below it, an error budget is not what is meant.
_LOWEST_OBJECTIVE = 50.0

_SLO_KEYS = {"period", "availability", "latency"}
_SERVICE_SLO_KEYS = {"availability", "latency"}
_LATENCY_KEYS = {"threshold", "objective"}


class SloReader(NodeReader):
    """Reads `slo:`, a service's `slo:` and `alerts:`."""

    def slo(self, node: Node) -> Objectives:
        """The file's objectives: every service's unless its own `slo:` overrides them."""
        entries = self.mapping(node, "slo", _SLO_KEYS, null_is_empty=True)
        period = self.optional(entries, "period", Objectives.period, self.period)
        return self.objectives(entries, Objectives(period=period), "slo")

    def service_slo(self, node: Node, inherited: Objectives, service: str) -> Objectives:
        """The objectives of the service at `service` (`services.<name>`), over the file's."""
        where = f"{service}.slo"
        entries = self.mapping(node, where, _SERVICE_SLO_KEYS, null_is_empty=True)
        return self.objectives(entries, inherited, where)

    def objectives(self, entries: Entries, base: Objectives, where: str) -> Objectives:
        availability = self.optional(
            entries,
            "availability",
            base.availability,
            lambda n: self.objective(n, f"{where}.availability"),
        )
        threshold, latency = base.latency_threshold, base.latency
        if "latency" in entries:
            latency_entries = self.mapping(entries["latency"][1], f"{where}.latency", _LATENCY_KEYS)
            threshold = self.optional(
                latency_entries, "threshold", threshold,
                lambda n: self.threshold(n, f"{where}.latency.threshold"),
            )  # fmt: skip
            latency = self.optional(
                latency_entries, "objective", latency,
                lambda n: self.objective(n, f"{where}.latency.objective"),
            )  # fmt: skip
        return replace(
            base, availability=availability, latency_threshold=threshold, latency=latency
        )

    def objective(self, node: Node, where: str) -> float:
        """A percent from 50 up to, not including, 100: at 100 no call may fail, and the
        alerts, which measure how fast the allowed failures are spent, have nothing to
        measure."""
        value = self.percent(node, where)
        if not _LOWEST_OBJECTIVE <= value < 100:
            raise self.error(
                node,
                f"{where} must be a percent from {_LOWEST_OBJECTIVE:g} up to, not including, "
                f"100 (e.g. 99.9), got {value:g}",
            )
        return value

    def threshold(self, node: Node, where: str) -> float:
        seconds = self.duration(node, where)
        milliseconds = round(seconds * 1000, 3)
        if milliseconds not in LATENCY_BOUNDS_MS:
            bounds = ", ".join(f"{b}ms" for b in LATENCY_BOUNDS_MS)
            nearest = min(LATENCY_BOUNDS_MS, key=lambda bound: abs(bound - milliseconds))
            raise self.error(
                node,
                f"{where} must be a bound of the sidecars' latency histogram: {bounds}; "
                f"did you mean '{nearest}ms'?",
            )
        return seconds

    def period(self, node: Node) -> float:
        seconds = self.duration(node, "slo.period")
        if not 3600 <= seconds <= MAX_PERIOD_DAYS * DAY_SECONDS:
            raise self.error(node, f"slo.period must be from 1h to {MAX_PERIOD_DAYS}d (e.g. 30d)")
        return seconds

    def alerts(self, node: Node) -> AlertSettings:
        entries = self.mapping(node, "alerts", {"webhook"}, null_is_empty=True)
        return AlertSettings(self.optional(entries, "webhook", None, self.webhook))

    def webhook(self, node: Node) -> str:
        url = self.string(node, "alerts.webhook")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(
                node,
                f"alerts.webhook {url!r} must be an http:// or https:// URL "
                "(e.g. http://127.0.0.1:9095/alerts)",
            )
        return url
