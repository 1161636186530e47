"""Each service's indicators over time, as the local mesh reads them from its sidecars:
what a Prometheus would keep of the counters the burn-rate alerts read, and no more.

A reading is every instance's counts now (`stats.Counts`, cumulative); the history keeps
the service's running totals at points at least `resolution` apart, for as long as the
longest window. A count that went down means its sidecar restarted: as Prometheus's
`rate` does, all it counts is then new. A window longer than the history reads what the
history has, as `rate` reads what a range holds.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.control.alerting.rules import AVAILABILITY
from mesh.control.envoy.stats import Counts


@dataclass(frozen=True)
class Totals:
    """A service's calls, server errors, timed calls and calls within its latency
    threshold, summed since the history began."""

    calls: float = 0.0
    errors: float = 0.0
    timed: float = 0.0
    fast: float = 0.0

    def plus(self, other: Totals) -> Totals:
        return Totals(
            self.calls + other.calls,
            self.errors + other.errors,
            self.timed + other.timed,
            self.fast + other.fast,
        )

    def minus(self, other: Totals) -> Totals:
        return Totals(
            self.calls - other.calls,
            self.errors - other.errors,
            self.timed - other.timed,
            self.fast - other.fast,
        )


def _totals(counts: Counts, threshold: float) -> Totals:
    """One instance's cumulative counts as `Totals`."""
    buckets = sorted(counts.buckets.items())
    timed = buckets[-1][1] if buckets else 0.0
    # Cumulative buckets: the threshold's own, or the nearest below it.
    fast = max((count for bound, count in buckets if bound <= threshold + 1e-9), default=0.0)
    return Totals(counts.requests, counts.errors, timed, fast)


@dataclass
class ServiceHistory:
    """One service's running totals, at points in (monotonic) time."""

    threshold: float
    """The service's latency threshold, in seconds: a bound of the sidecars' histogram."""
    keep: float
    """Seconds of points to keep: the longest window."""
    resolution: float
    """The least time between two points kept."""
    points: deque[tuple[float, Totals]] = field(default_factory=deque)
    _last: dict[str, Totals] = field(default_factory=dict)
    _total: Totals = Totals()

    def add(self, at: float, readings: Mapping[str, Counts]) -> None:
        """Every instance's counts (by instance name) read at `at`."""
        for instance, counts in readings.items():
            now = _totals(counts, self.threshold)
            before = self._last.get(instance)
            restarted = before is None or now.calls < before.calls
            # An instance seen for the first time counts from here: its past is not news.
            increase = now if restarted and before is not None else now.minus(before or now)
            self._total = self._total.plus(increase)
            self._last[instance] = now
        # The last point is always the latest reading; the ones before it stay apart.
        if len(self.points) >= 2 and self.points[-1][0] - self.points[-2][0] < self.resolution:
            self.points[-1] = (at, self._total)
            return
        self.points.append((at, self._total))
        while len(self.points) > 2 and at - self.points[1][0] >= self.keep:
            self.points.popleft()

    def bad_share(self, indicator: str, window: float) -> float | None:
        """The share of calls over the last `window` seconds that were bad by `indicator`;
        None without calls in it."""
        change = self._change(window)
        calls = change.calls if indicator == AVAILABILITY else change.timed
        return self.bad_calls(indicator, window) / calls if calls > 0 else None

    def bad_calls(self, indicator: str, window: float) -> float:
        """How many calls over the last `window` seconds were bad by `indicator`."""
        change = self._change(window)
        return change.errors if indicator == AVAILABILITY else change.timed - change.fast

    def _change(self, window: float) -> Totals:
        """The totals' increase over the last `window` seconds (or what the history has)."""
        if len(self.points) < 2:
            return Totals()
        now, latest = self.points[-1]
        # The newest point at least `window` old, else the oldest (times only grow).
        found = bisect.bisect_right(self.points, now - window, key=lambda point: point[0])
        return latest.minus(self.points[max(found - 1, 0)][1])
