"""How many replicas an autoscaled service should run (`autoscale:` in mesh.yaml), decided
as Kubernetes' HorizontalPodAutoscaler decides: from the metric per replica against its
target, with a tolerance, up at once, down only to the most replicas the load asked for
over the cooldown (its scale-down stabilization), one replica at a time.

The metric, from what the supervisor reads every check (`Reading`):

* `cpu`: the CPU each app used since the last check, in percent of one core, averaged
  over the replicas;
* `in_flight`: the calls the replicas worked on at once, on average since the last check
  (Little's law: the time the sidecars' histogram adds up, over the time passed), summed;
* `consumer_lag`: the events JetStream holds for the service's consumer, not yet
  delivered (the largest any replica reports: they share the consumer).

Pure: no clock, no process. The supervisor adds and drains the replicas
(`mesh.control.supervisor`), and callers find them through their endpoints' file
(`mesh.control.envoy.endpoints`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.control.topology.model import CONSUMER_LAG, CPU, Autoscale

#: A ratio of metric to target within this much of 1 changes nothing (HPA's tolerance).
TOLERANCE = 0.1


@dataclass(frozen=True)
class ReplicaLoad:
    """One running replica's counters now (cumulative), and its consumer's lag."""

    cpu_seconds: float | None
    busy_seconds: float | None
    """The time its sidecar's calls to its app took, added up."""
    consumer_lag: float = 0.0


@dataclass
class Scaling:
    """The decisions for one service: its spec, its replicas' last counters, and the
    replicas the load asked for at each decision within the cooldown."""

    spec: Autoscale
    last: dict[str, tuple[float, ReplicaLoad]] = field(default_factory=dict)
    asked: deque[tuple[float, int]] = field(default_factory=deque)
    value: float | None = None
    """The metric at the last decision (per replica for cpu, whole for the others)."""

    def desired(self, at: float, loads: Mapping[str, ReplicaLoad]) -> int:
        """How many replicas to run now, given each running replica's load at `at`."""
        current = len(loads)
        self.value = self._measure(at, loads)
        self._forget_gone(loads)
        asked = current if self.value is None else self._asked(current, self.value)
        self.asked.append((at, asked))
        while self.asked and at - self.asked[0][0] > self.spec.cooldown:
            self.asked.popleft()
        if asked > current:
            return asked
        # Down only as far as the most asked for over the cooldown, a replica at a time.
        stable = max(n for _, n in self.asked)
        return max(stable, current - 1) if stable < current else current

    def _asked(self, current: int, value: float) -> int:
        spec = self.spec
        if spec.metric == CPU:
            ratio = value / spec.target
            wanted = current if abs(ratio - 1) <= TOLERANCE else math.ceil(current * ratio)
        else:
            ratio = value / (spec.target * current)
            wanted = current if abs(ratio - 1) <= TOLERANCE else math.ceil(value / spec.target)
        return min(spec.max, max(spec.min, wanted))

    def _measure(self, at: float, loads: Mapping[str, ReplicaLoad]) -> float | None:
        """The metric now; None until every replica has been read twice (a new one has
        no rate yet)."""
        if self.spec.metric == CONSUMER_LAG:
            return max((load.consumer_lag for load in loads.values()), default=0.0)
        rates = [self._rate(name, at, load) for name, load in loads.items()]
        known = [r for r in rates if r is not None]
        if len(known) != len(rates) or not known:
            return None
        return sum(known) / len(known) * 100 if self.spec.metric == CPU else sum(known)

    def _rate(self, name: str, at: float, load: ReplicaLoad) -> float | None:
        before = self.last.get(name)
        self.last[name] = (at, load)
        if before is None or at <= before[0]:
            return None
        seconds = at - before[0]
        then, now = before[1], load
        if self.spec.metric == CPU:
            counted = (then.cpu_seconds, now.cpu_seconds)
        else:
            counted = (then.busy_seconds, now.busy_seconds)
        if counted[0] is None or counted[1] is None or counted[1] < counted[0]:
            return None  # not read, or restarted in between
        return (counted[1] - counted[0]) / seconds

    def _forget_gone(self, loads: Mapping[str, ReplicaLoad]) -> None:
        for name in set(self.last) - set(loads):
            del self.last[name]
