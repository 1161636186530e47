"""The alerts as Prometheus rules: recording rules of each service's indicators over the
windows its alerts read, the burn-rate alerts on them, and the plain alerts.

`rule_groups` is the rule file's document (`groups:`), which Compose's Prometheus loads
and a Kubernetes `PrometheusRule` carries as its `spec`.
"""

from __future__ import annotations

from typing import Any

from mesh.control.alerting.rules import (
    PLAIN_ALERTS,
    BurnAlert,
    PlainAlert,
    bad_share,
    burn_alerts,
    burn_expression,
    prometheus_duration,
    recorded,
)
from mesh.control.topology import Topology

#: How often Prometheus evaluates the rules.
EVALUATION_INTERVAL = "30s"


def rule_groups(topology: Topology) -> dict[str, Any]:
    """The rule file of `topology`'s alerts (Compose's and Kubernetes' alike)."""
    alerts = burn_alerts(topology)
    return {
        "groups": [
            _group("shop-slo-indicators", _recording_rules(alerts)),
            _group("shop-slo-alerts", [_burn_rule(a) for a in alerts]),
            _group("shop-alerts", [_plain_rule(a) for a in PLAIN_ALERTS]),
        ]
    }


def _group(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "interval": EVALUATION_INTERVAL, "rules": rules}


def _recording_rules(alerts: list[BurnAlert]) -> list[dict[str, Any]]:
    """One rule per service, indicator and window an alert reads, each once."""
    rules: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        for window in alert.windows():
            key = f"{alert.service}/{recorded(alert.indicator, window)}"
            rules.setdefault(
                key,
                {
                    "record": recorded(alert.indicator, window),
                    "expr": bad_share(alert.indicator, alert.objectives, alert.service, window),
                },
            )
    return list(rules.values())


def _burn_rule(alert: BurnAlert) -> dict[str, Any]:
    labels = alert.labels()
    del labels["alertname"], labels["service"]  # the alert's name; the series' own label
    return {
        "alert": alert.name,
        "expr": burn_expression(alert),
        "labels": labels,
        "annotations": alert.annotations(),
    }


def _plain_rule(alert: PlainAlert) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expression}
    if alert.hold:
        rule["for"] = prometheus_duration(alert.hold)
    rule["labels"] = {"severity": alert.severity}
    rule["annotations"] = {"summary": alert.summary}
    return rule
