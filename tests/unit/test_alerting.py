"""The alerts of a topology: `slo:` and `alerts:` as read, the workbook's tiers scaled to
the period, the rendered Prometheus rules (every expression parsed by a real PromQL
parser), each service's history of its indicators, the local evaluation's transitions,
and the webhook's Alertmanager JSON as a real receiver gets it."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from textwrap import dedent
from typing import Any

import pytest

from mesh.control.alerting import rules
from mesh.control.alerting.history import ServiceHistory
from mesh.control.alerting.local import InstanceReading, LocalAlerts, Reading
from mesh.control.alerting.prometheus import rule_groups
from mesh.control.alerting.rules import AVAILABILITY, LATENCY, BurnAlert, burn_alerts
from mesh.control.alerting.webhook import FIRING, RESOLVED, Notice, WebhookSender, payload
from mesh.control.envoy.stats import Counts
from mesh.control.topology import Topology, load, parse
from mesh.runtime.metrics import Sample
from tests.support.promql import parse_errors
from tests.support.topology import REPOSITORY_MESH_YAML, parse_error
from tests.support.wait import wait_until

TWO_SERVICES = """
    slo:
      period: 1d
      availability: 99
      latency: {threshold: 100ms, objective: 95}
    alerts:
      webhook: http://127.0.0.1:9095/alerts
    services:
      a:
        slo: {availability: 99.9}
      b:
        slo: {latency: {threshold: 1s}}
"""


def topology(text: str = TWO_SERVICES) -> Topology:
    return parse(dedent(text))


# -- mesh.yaml -----------------------------------------------------------------------------


def test_a_service_overrides_only_what_its_own_slo_names() -> None:
    read = topology()
    a, b = read.services["a"].slo, read.services["b"].slo
    assert (a.availability, a.latency_threshold, a.latency, a.period) == (99.9, 0.1, 95, 86_400)
    assert (b.availability, b.latency_threshold, b.latency) == (99, 1.0, 95)
    assert read.alerts.webhook == "http://127.0.0.1:9095/alerts"


def test_without_slo_every_service_has_the_defaults() -> None:
    read = topology("services: {a: {}}")
    objectives = read.services["a"].slo
    assert (objectives.availability, objectives.latency_threshold, objectives.latency) == (
        99.9, 0.25, 99,
    )  # fmt: skip
    assert objectives.period == 30 * 86_400
    assert read.alerts.webhook is None


@pytest.mark.parametrize(
    ("text", "told"),
    [
        (
            "slo: {latency: {threshold: 200ms}}\nservices: {a: {}}",
            "slo.latency.threshold must be a bound of the sidecars' latency histogram: "
            "1ms, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1000ms, 2500ms, 5000ms, 10000ms; "
            "did you mean '250ms'?",
        ),
        (
            "services: {a: {slo: {availability: 100}}}",
            "services.a.slo.availability must be a percent from 50 up to, not including, 100",
        ),
        ("slo: {period: 30m}\nservices: {a: {}}", "slo.period must be from 1h to 90d"),
        (
            "services: {a: {slo: {period: 1d}}}",
            "unknown key 'period' in services.a.slo (allowed: availability, latency)",
        ),
        (
            "alerts: {webhook: 'ftp://x/y'}\nservices: {a: {}}",
            "alerts.webhook 'ftp://x/y' must be an http:// or https:// URL",
        ),
    ],
)
def test_a_wrong_objective_or_webhook_is_told_at_its_line(text: str, told: str) -> None:
    error = parse_error(text)
    assert told in error.detail, error.detail
    assert error.line is not None


# -- the rules -----------------------------------------------------------------------------


def test_the_tiers_are_the_workbooks_for_thirty_days_and_scale_with_the_period() -> None:
    month = load(REPOSITORY_MESH_YAML).services["catalog"].slo
    labels = [
        (BurnAlert("catalog", AVAILABILITY, t, month).labels(), t.burn_rate) for t in rules.TIERS
    ]
    assert [(x["long_window"], x["short_window"], x["severity"], r) for x, r in labels] == [
        ("1h", "5m", "page", 14.4),
        ("6h", "30m", "page", 6.0),
        ("1d", "2h", "ticket", 3.0),
        ("3d", "6h", "ticket", 1.0),
    ]
    day = topology().services["a"].slo
    fast = BurnAlert("a", AVAILABILITY, rules.FAST_BURN, day)
    assert fast.windows() == (120, 10)
    assert fast.threshold == pytest.approx(14.4 * 0.001)
    slow = BurnAlert("a", LATENCY, rules.TIERS[-1], day)
    assert slow.threshold == pytest.approx(0.05)


def test_every_rendered_expression_parses_and_every_alert_reads_recorded_windows() -> None:
    groups = rule_groups(load(REPOSITORY_MESH_YAML))["groups"]
    every = [rule for group in groups for rule in group["rules"]]
    assert parse_errors(rule["expr"] for rule in every) == []
    recorded = {rule["record"] for rule in every if "record" in rule}
    for rule in every:
        if rule.get("alert", "").endswith("BudgetBurn"):
            names = re.findall(r"service:shop_\w+:\w+", rule["expr"])
            assert len(names) == 2, rule  # the long and the short window
            assert set(names) <= recorded, rule
            assert f">= {rules.MIN_BAD_CALLS}" in rule["expr"], rule
    alerts = {rule["alert"] for rule in every if "alert" in rule}
    plain = {"InstanceDown", "InstanceCrashLooping", "OutboxStuck", "ConsumerLagging"}
    assert alerts >= plain | {"CertificateExpiring"}


def test_a_broken_expression_is_caught_by_the_parser() -> None:
    assert parse_errors(['sum by (service) (rate(x{a="b"}[5m])'])  # one ( unclosed


def test_each_services_own_threshold_is_in_its_latency_rule() -> None:
    groups = rule_groups(topology())["groups"]
    recording = groups[0]["rules"]
    slow_b = [r["expr"] for r in recording if r["record"].startswith("service:shop_slow_calls")]
    assert any('service="b"' in e and 'le="1000"' in e for e in slow_b)
    assert any('service="a"' in e and 'le="100"' in e for e in slow_b)


# -- a service's history -------------------------------------------------------------------


def counts(calls: float, errors: float, fast: float = 0.0, slow: float = 0.0) -> Counts:
    return Counts(calls, errors, {0.1: fast, 0.25: fast + slow, float("inf"): fast + slow})


def test_the_share_of_server_errors_over_a_window_reads_what_the_history_has() -> None:
    history = ServiceHistory(threshold=0.1, keep=120, resolution=1)
    history.add(0, {"a-0": counts(100, 0)})
    assert history.bad_share(AVAILABILITY, 60) is None  # one point: no rate
    history.add(10, {"a-0": counts(200, 50)})
    history.add(20, {"a-0": counts(300, 50)})
    assert history.bad_share(AVAILABILITY, 10) == 0.0
    assert history.bad_share(AVAILABILITY, 60) == pytest.approx(50 / 200)


def test_a_restarted_sidecar_counts_anew_and_a_new_instance_from_its_first_reading() -> None:
    history = ServiceHistory(threshold=0.1, keep=120, resolution=1)
    history.add(0, {"a-0": counts(1000, 10)})
    history.add(10, {"a-0": counts(20, 10), "a-1": counts(500, 500)})  # a-0 restarted
    history.add(20, {"a-0": counts(40, 10), "a-1": counts(520, 500)})
    assert history.bad_share(AVAILABILITY, 100) == pytest.approx(10 / 60)


def test_the_share_of_slow_calls_is_above_the_threshold_bucket() -> None:
    history = ServiceHistory(threshold=0.1, keep=120, resolution=1)
    history.add(0, {"a-0": counts(0, 0)})
    history.add(10, {"a-0": counts(100, 0, fast=90, slow=10)})
    assert history.bad_share(LATENCY, 60) == pytest.approx(0.1)


def test_old_points_go_and_close_ones_merge() -> None:
    history = ServiceHistory(threshold=0.1, keep=30, resolution=5)
    for at in range(100):
        history.add(at, {"a-0": counts(at * 10, 0)})
    times = [at for at, _ in history.points]
    assert times[-1] == 99
    assert times[0] >= 99 - 30 - 5
    assert all(b - a >= 5 for a, b in itertools.pairwise(times[:-1]))  # the last: the latest


# -- evaluating locally --------------------------------------------------------------------


def reading(at: float, calls: float, errors: float, **fields: Any) -> Reading:
    instance = InstanceReading(
        "a", "a-0", up=fields.pop("up", True), restarts=fields.pop("restarts", 0),
        sample=fields.pop("sample", None),
        served=Counts(calls, errors, {0.1: calls, float("inf"): calls}),
    )  # fmt: skip
    return Reading(at, (instance,), **fields)


def test_a_fast_burn_fires_once_and_resolves_once_with_the_same_start() -> None:
    told: list[Notice] = []
    alerts = LocalAlerts(topology("slo: {period: 1d}\nservices: {a: {}}"), told.append)
    at, calls, errors = 0.0, 0.0, 0.0
    for _ in range(10):  # healthy
        at, calls = at + 2, calls + 100
        alerts.observe(reading(at, calls, errors))
    assert told == []
    assert alerts.listing() == []
    for _ in range(5):  # a tenth of the calls fail: 100x the budget
        at, calls, errors = at + 2, calls + 100, errors + 10
        alerts.observe(reading(at, calls, errors))
    fast = [n for n in told if n.labels["long_window"] == "2m"]
    assert [n.status for n in fast] == [FIRING]
    assert fast[0].labels["alertname"] == "AvailabilityBudgetBurn"
    assert any(a["state"] == "firing" for a in alerts.listing())
    for _ in range(10):  # healthy again: the 10s window clears
        at, calls = at + 2, calls + 100
        alerts.observe(reading(at, calls, errors))
    fast = [n for n in told if n.labels["long_window"] == "2m"]
    assert [n.status for n in fast] == [FIRING, RESOLVED]
    assert fast[1].starts_at == fast[0].starts_at
    assert fast[1].ends_at is not None


def test_a_few_bad_calls_among_few_calls_fire_nothing() -> None:
    """One slow call in five is 20% of them, over any burn rate: not a budget burning."""
    told: list[Notice] = []
    alerts = LocalAlerts(topology("slo: {period: 1d}\nservices: {a: {}}"), told.append)
    at, calls, errors = 0.0, 0.0, 0.0
    alerts.observe(reading(at, calls, errors))
    for _ in range(rules.MIN_BAD_CALLS - 1):  # one call a reading, each one failed
        at, calls, errors = at + 2, calls + 1, errors + 1
        alerts.observe(reading(at, calls, errors))
    assert told == []
    at, calls, errors = at + 2, calls + 1, errors + 1
    alerts.observe(reading(at, calls, errors))
    assert "AvailabilityBudgetBurn" in {n.labels["alertname"] for n in told}


def test_a_plain_alert_is_pending_for_its_hold_then_fires() -> None:
    told: list[Notice] = []
    alerts = LocalAlerts(topology("services: {a: {}}"), told.append)
    stuck = Sample(0, 0, 0, {}, outbox_oldest_seconds=45)
    alerts.observe(reading(0, 0, 0, sample=stuck))
    assert [a["state"] for a in alerts.listing()] == ["pending"]
    alerts.observe(reading(30, 0, 0, sample=stuck))
    assert told == []
    alerts.observe(reading(61, 0, 0, sample=stuck))
    assert [(n.status, n.labels["alertname"]) for n in told] == [(FIRING, "OutboxStuck")]
    assert told[0].annotations["summary"].startswith("a's outbox has held an event")
    alerts.observe(reading(63, 0, 0, sample=Sample(0, 0, 0, {})))
    assert [n.status for n in told] == [FIRING, RESOLVED]
    assert alerts.listing() == []


def test_a_pending_alert_that_clears_is_never_sent() -> None:
    told: list[Notice] = []
    alerts = LocalAlerts(topology("services: {a: {}}"), told.append)
    alerts.observe(reading(0, 0, 0, up=False))
    alerts.observe(reading(2, 0, 0, up=True))
    assert told == []
    assert alerts.listing() == []


@pytest.mark.parametrize(
    ("fields", "alertname"),
    [
        ({"restarts": 3}, "InstanceCrashLooping"),
        ({"certificates": (("a-0", 3600.0),)}, "CertificateExpiring"),
        ({"sample": Sample(0, 0, 0, {}, consumer_pending={"b": 5000})}, "ConsumerLagging"),
    ],
)
def test_each_plain_alert_has_its_local_condition(fields: dict[str, Any], alertname: str) -> None:
    alerts = LocalAlerts(topology("services: {a: {}}"))
    alerts.observe(reading(0, 0, 0))
    alerts.observe(reading(1, 0, 0, **fields))
    assert alertname in {a["labels"]["alertname"] for a in alerts.listing()}


# -- the webhook ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200 if len(bodies) > 1 else 503)  # the first is refused
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_notice_is_sent_again_in_alertmanagers_shape(
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = receiver
    sender = WebhookSender(url, "http://127.0.0.1:1/console")
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    sender.send(Notice(FIRING, {"alertname": "X", "service": "a"}, {"summary": "s"}, started))
    try:
        wait_until(lambda: len(bodies) == 2, "the notice sent again", within=10)
    finally:
        sender.stop()
    assert bodies[0] == bodies[1]  # refused once, then taken
    body = bodies[1]
    assert body == payload(
        Notice(FIRING, {"alertname": "X", "service": "a"}, {"summary": "s"}, started),
        "http://127.0.0.1:1/console",
    )
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["groupKey"] == '{}:{alertname="X",service="a"}'
    [alert] = body["alerts"]
    assert alert["startsAt"] == "2026-01-02T03:04:05.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert set(alert) == {
        "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint",
    }  # fmt: skip


def test_the_repository_topology_has_alerts_for_every_service() -> None:
    read = load(REPOSITORY_MESH_YAML)
    services = {a.service for a in burn_alerts(read)}
    assert services == set(read.services)
