"""The supervisor's side of a rollout: it watches each one in progress and moves it on.

Every `SAMPLE_SECONDS` it reads what the sidecars of each version counted of the calls
they received since the step's window began (each try a caller's sidecar or the edge
made, the failures the sidecar injected included): calls, calls that ended in a server
error (UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED and the like; a client's mistake is not
the version's), and the app's times. It judges the canary against the stable version
over that same window (`analysis.judge`), and promotes it to the next step when the
window ends clean, holds the step, or rolls back at once on a breach. Each decision goes
into the rollout's state with the figures it was made on, and one line of the
supervisor's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mesh.control import routing
from mesh.control.envoy.stats import Counts, read_served, summed
from mesh.control.plan import MeshPlan
from mesh.control.rollouts import actions, analysis, store
from mesh.control.rollouts.model import (
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    Figures,
    Rollout,
)
from mesh.control.topology import Topology
from mesh.runtime import metrics

#: How often a rollout in progress is read and judged.
SAMPLE_SECONDS = 2.0


@dataclass(frozen=True)
class Baseline:
    """The counts at the start of a step's window."""

    step: int
    started: float
    counts: dict[str, Counts]


class RolloutController:
    def __init__(
        self, run_dir: Path, topology: Topology, plan: MeshPlan, say: Callable[[str], None]
    ) -> None:
        self.run_dir = run_dir
        self.topology = topology
        self.plan = plan
        self._say = say
        self._baselines: dict[str, Baseline] = {}
        self._next = 0.0

    def tick(self) -> None:
        """Move every rollout in progress on, if it is time to look."""
        now = time.time()
        if now < self._next:
            return
        self._next = now + SAMPLE_SECONDS
        for found in store.every(self.run_dir):
            if found.status == PROGRESSING:
                with routing.changing(self.run_dir):
                    rollout = store.load(self.run_dir, found.spec.service)
                    if rollout is not None and rollout.status == PROGRESSING:
                        self._advance(rollout, now)

    def _advance(self, rollout: Rollout, now: float) -> None:
        service = rollout.spec.service
        counts = self.read(service)
        baseline = self._baselines.get(service)
        if baseline is None or baseline.step != rollout.step or rollout.window_started is None:
            self._begin_window(rollout, now, counts)
            return
        canary, stable = (
            figures(baseline.counts.get(v), counts.get(v), now - baseline.started)
            for v in (rollout.spec.canary, rollout.stable)
        )
        if canary is None:
            canary = Figures(0, 0.0, 0.0, None)
        ended = now - rollout.window_started >= rollout.spec.interval
        verdict = analysis.judge(rollout.spec, canary, stable, ended)
        if verdict.action == analysis.WAIT:
            return
        self._act(rollout, verdict, canary, stable)
        if rollout.status == PROGRESSING:
            self._begin_window(rollout, now, counts)
        else:
            self._baselines.pop(service, None)

    def _act(
        self, rollout: Rollout, verdict: analysis.Verdict, canary: Figures, stable: Figures | None
    ) -> None:
        spec = rollout.spec
        if verdict.action == analysis.ROLLBACK:
            rollout.status = ROLLED_BACK
        elif verdict.action == analysis.PROMOTE:
            if rollout.step + 1 < len(spec.steps):
                rollout.step += 1
            else:
                rollout.status = PROMOTED
        decision = rollout.decide(verdict.action, verdict.reason, canary=canary, stable=stable)
        actions.apply(self.run_dir, self.topology, rollout)
        self._say(
            f"rollout of {spec.service} to {spec.canary}: {decision.action}, "
            f"{spec.canary} now {decision.weight}% ({verdict.reason}); {spec.canary}: "
            f"{canary.describe()}; {rollout.stable}: "
            f"{'no calls' if stable is None else stable.describe()}"
        )

    def _begin_window(self, rollout: Rollout, now: float, counts: dict[str, Counts]) -> None:
        self._baselines[rollout.spec.service] = Baseline(rollout.step, now, counts)
        rollout.window_started = now
        store.save(self.run_dir, rollout)

    def read(self, service: str) -> dict[str, Counts]:
        """What the sidecars of each version of `service` counted of the calls they
        received, now, summed over its instances."""
        return {
            version.name: summed(
                read_served(i.admin_socket)
                for i in self.plan.of(service)
                if i.version == version.name
            )
            for version in self.topology.services[service].versions
        }


def figures(before: Counts | None, after: Counts | None, seconds: float) -> Figures | None:
    """A version's figures between two readings `seconds` apart; None if it had no calls."""
    if before is None or after is None or after.requests <= before.requests:
        return None
    found = metrics.rates(before.sample(0.0), after.sample(seconds))
    return Figures(
        requests=after.requests - before.requests,
        per_second=round(found.requests_per_second, 2),
        error_ratio=round(found.error_ratio, 4),
        p99_ms=None if found.p99_ms is None else round(found.p99_ms, 1),
    )
