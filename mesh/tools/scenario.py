"""The frame every `meshctl chaos` scenario is built in: its verdict, how it changes
mesh.yaml, and the readings of the running mesh that several scenarios take."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesh.tools import bench, trial

#: Tracing as in production (see `meshctl bench`): the scenarios are about failures.
SAMPLING_PERCENT = 1.0
POLL_SECONDS = 0.1

T = TypeVar("T")


@dataclass
class Verdict:
    """What a scenario measured, in the order it prints, and whether its criterion held."""

    criterion: str
    figures: dict[str, object] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def require(self, holds: bool, failure: str) -> None:
        """Count `failure` against the criterion unless `holds`."""
        if not holds:
            self.failures.append(failure)

    @property
    def passed(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"  {label}: {value}" for label, value in self.figures.items()]
        if self.passed:
            lines.append(f"PASS: {self.criterion}")
        else:
            lines.append(f"FAIL: {self.criterion}; but {'; '.join(self.failures)}")
        return "\n".join(lines)


Play = Callable[[trial.TrialMesh, bool], Coroutine[Any, Any, Verdict]]
"""A scenario's run against its started mesh: short form or full; its verdict."""


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    adjust: trial.Adjust
    """What the scenario changes in mesh.yaml."""
    play: Play
    pinned: bool = False
    """Whether the mesh and this process (the load generator) get CPUs of their own."""


def adjusted(change: trial.Adjust | None = None) -> trial.Adjust:
    """mesh.yaml without the edge's rate limit (a scenario is about failures, not about the
    edge refusing its load), traced as in production, then `change`d."""
    lifted = bench.bench_topology(SAMPLING_PERCENT)

    def adjust(topology: dict[str, Any]) -> None:
        lifted(topology)
        if change is not None:
            change(topology)

    return adjust


async def poll(probe: Callable[[], T], seconds: float) -> T:
    """`probe()`'s first truthy answer within `seconds`, else its last answer."""
    deadline = time.monotonic() + seconds
    answer = probe()
    while not answer and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        answer = probe()
    return answer


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items())) or "none"


#: nats-server as `kill` names it: an instance of its own, whose one part is "server".
NATS = "nats"
NATS_PART = "server"


def restarts(mesh: trial.TrialMesh) -> Counter[str]:
    """How often the supervisor restarted each instance so far, and nats-server (NATS)."""
    state = mesh.state()
    counted = Counter({i["instance"]: i["restarts"] for i in state["instances"]})
    counted[NATS] = state["nats"]["restarts"]
    return counted
