"""The alerts of `rules`, evaluated by the local mesh on its own readings, as Prometheus
evaluates the rendered rules: each condition at every reading, an alert pending while its
condition has held for less than its `for`, firing after, and resolved when the condition
stops holding. Each firing and resolution goes to the webhook, if `mesh.yaml` names one.

The readings are the supervisor's: every instance's sidecar counts (the objectives'
indicators), its app's metrics (outbox, consumers), its restarts, and the certificates.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mesh.control.alerting import rules
from mesh.control.alerting.history import ServiceHistory
from mesh.control.alerting.rules import PLAIN_ALERTS, TIERS, BurnAlert, burn_alerts
from mesh.control.alerting.webhook import FIRING, RESOLVED, Notice
from mesh.control.envoy.stats import Counts
from mesh.control.topology import Topology
from mesh.control.topology.model import Objectives
from mesh.runtime.metrics import Sample

PENDING = "pending"
#: Points kept of each history within its shortest window.
_POINTS_PER_SHORT_WINDOW = 4


@dataclass(frozen=True)
class InstanceReading:
    """What the supervisor last read of one instance."""

    service: str
    instance: str
    up: bool
    """Whether its app's metrics and its sidecar's statistics answered (Prometheus's
    `up` of both jobs)."""
    restarts: int
    sample: Sample | None = None
    served: Counts | None = None


@dataclass(frozen=True)
class Reading:
    """The whole mesh at one moment (`at`, monotonic seconds)."""

    at: float
    instances: tuple[InstanceReading, ...]
    certificates: tuple[tuple[str, float], ...] = ()
    """Each certificate's instance (`catalog-0`, `edge`, `ca`) and the seconds it has left."""


#: A condition that holds: the alert's labels, and the value that breached it.
Breach = tuple[dict[str, str], float]
#: An alert's condition holding: its labels, annotations, value and `for` (seconds).
Held = tuple[dict[str, str], dict[str, str], float, float]
#: An alert's identity: its label set.
Key = tuple[tuple[str, str], ...]


@dataclass
class Active:
    """An alert whose condition holds."""

    labels: dict[str, str]
    annotations: dict[str, str]
    since: float
    """When its condition began to hold (monotonic)."""
    started: datetime
    state: str = PENDING
    value: float = 0.0


@dataclass
class LocalAlerts:
    """Evaluates `topology`'s alerts at each reading; `notify` gets each transition."""

    topology: Topology
    notify: Callable[[Notice], None] | None = None
    burns: list[BurnAlert] = field(init=False)
    histories: dict[str, ServiceHistory] = field(init=False)
    active: dict[Key, Active] = field(default_factory=dict)
    restarts: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    """Each instance's restart count at each reading within `CRASH_LOOP_WINDOW`."""

    def __post_init__(self) -> None:
        self.burns = burn_alerts(self.topology)
        self.histories = {
            name: _history(service.slo) for name, service in self.topology.services.items()
        }

    def observe(self, reading: Reading) -> None:
        """Take `reading` in and move every alert on."""
        self._record(reading)
        holding = {_key(held[0]): held for held in self._breaches(reading)}
        for key in list(self.active):
            if key not in holding:
                self._resolve(key)
        for key, held in holding.items():
            self._hold(key, held, reading.at)

    def listing(self) -> list[dict[str, Any]]:
        """The alerts pending and firing, firing first, for `state.json`."""
        ordered = sorted(self.active.values(), key=lambda a: (a.state != FIRING, a.since))
        return [
            {
                "state": a.state,
                "labels": a.labels,
                "annotations": a.annotations,
                "active_at": a.started.isoformat(timespec="seconds"),
                "value": round(a.value, 6),
            }
            for a in ordered
        ]

    # -- readings -------------------------------------------------------------------------

    def _record(self, reading: Reading) -> None:
        by_service: dict[str, dict[str, Counts]] = {}
        for instance in reading.instances:
            if instance.served is not None:
                by_service.setdefault(instance.service, {})[instance.instance] = instance.served
            restarts = self.restarts.setdefault(instance.instance, deque())
            restarts.append((reading.at, instance.restarts))
            while restarts and reading.at - restarts[0][0] > rules.CRASH_LOOP_WINDOW:
                restarts.popleft()
        for service, served in by_service.items():
            self.histories[service].add(reading.at, served)

    def _breaches(self, reading: Reading) -> Iterator[Held]:
        for alert in self.burns:
            value = self._burning(alert)
            if value is not None:
                yield alert.labels(), alert.annotations(), value, 0.0
        for plain in PLAIN_ALERTS:
            for labels, value in _PLAIN_CONDITIONS[plain.name](self, reading):
                labels = {"alertname": plain.name, **labels, "severity": plain.severity}
                annotations = {"summary": _expanded(plain.summary, labels)}
                yield labels, annotations, value, plain.hold

    def _burning(self, alert: BurnAlert) -> float | None:
        """The short window's bad share, if both windows are over the alert's threshold."""
        history = self.histories[alert.service]
        long, short = alert.windows()
        if history.bad_calls(alert.indicator, long) < rules.MIN_BAD_CALLS:
            return None
        shares = [history.bad_share(alert.indicator, w) for w in (long, short)]
        if all(s is not None and s > alert.threshold for s in shares):
            return shares[1]
        return None

    # -- transitions ------------------------------------------------------------------------

    def _hold(self, key: Key, held: Held, at: float) -> None:
        labels, annotations, value, hold = held
        active = self.active.get(key)
        if active is None:
            active = Active(labels, annotations, at, datetime.now(UTC))
            self.active[key] = active
        active.value, active.annotations = value, annotations
        if active.state == PENDING and at - active.since >= hold:
            active.state = FIRING
            self._tell(Notice(FIRING, labels, annotations, active.started))

    def _resolve(self, key: Key) -> None:
        active = self.active.pop(key)
        if active.state == FIRING:
            ended = datetime.now(UTC)
            self._tell(Notice(RESOLVED, active.labels, active.annotations, active.started, ended))

    def _tell(self, notice: Notice) -> None:
        if self.notify is not None:
            self.notify(notice)


def _history(objectives: Objectives) -> ServiceHistory:
    windows = [w * objectives.period for tier in TIERS for w in (tier.long, tier.short)]
    return ServiceHistory(
        objectives.latency_threshold,
        keep=max(windows),
        resolution=min(windows) / _POINTS_PER_SHORT_WINDOW,
    )


def _key(labels: dict[str, str]) -> Key:
    return tuple(sorted(labels.items()))


_LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")


def _expanded(template: str, labels: dict[str, str]) -> str:
    """A summary's `{{ $labels.name }}` filled in, as Prometheus's templates do."""
    return _LABEL.sub(lambda m: labels.get(m[1], ""), template)


# -- the plain alerts' conditions on local readings ----------------------------------------


def _instance_down(_: LocalAlerts, reading: Reading) -> Iterator[Breach]:
    for i in reading.instances:
        if not i.up:
            yield {"service": i.service, "instance": i.instance}, 0.0


def _crash_looping(alerts: LocalAlerts, reading: Reading) -> Iterator[Breach]:
    for i in reading.instances:
        seen = alerts.restarts.get(i.instance)
        if seen and i.restarts - seen[0][1] >= rules.CRASH_LOOP_RESTARTS:
            yield {"service": i.service, "instance": i.instance}, float(i.restarts - seen[0][1])


def _outbox_stuck(_: LocalAlerts, reading: Reading) -> Iterator[Breach]:
    for i in reading.instances:
        waited = i.sample.outbox_oldest_seconds if i.sample else 0.0
        if waited > rules.OUTBOX_STUCK_SECONDS:
            yield {"service": i.service, "instance": i.instance}, waited


def _consumer_lagging(_: LocalAlerts, reading: Reading) -> Iterator[Breach]:
    worst: dict[tuple[str, str], float] = {}
    for i in reading.instances:
        for consumer, pending in (i.sample.consumer_pending if i.sample else {}).items():
            key = (i.service, consumer)
            worst[key] = max(worst.get(key, 0.0), pending)
    for (service, consumer), pending in sorted(worst.items()):
        if pending > rules.CONSUMER_LAG_EVENTS:
            yield {"service": service, "consumer": consumer}, pending


def _certificate_expiring(_: LocalAlerts, reading: Reading) -> Iterator[Breach]:
    for instance, remaining in reading.certificates:
        if remaining < rules.CERTIFICATE_REMAINING_SECONDS:
            yield {"instance": instance}, remaining


_PLAIN_CONDITIONS: dict[str, Callable[[LocalAlerts, Reading], Iterator[Breach]]] = {
    "InstanceDown": _instance_down,
    "InstanceCrashLooping": _crash_looping,
    "OutboxStuck": _outbox_stuck,
    "ConsumerLagging": _consumer_lagging,
    "CertificateExpiring": _certificate_expiring,
}
assert set(_PLAIN_CONDITIONS) == {a.name for a in PLAIN_ALERTS}, "a plain alert unevaluated"
