"""The frame every `meshctl chaos` scenario is built in: its verdict, how it changes
mesh.yaml, the readings of the running mesh that several scenarios take, and the killing
of the mesh's processes by their pids."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mesh.control import envoy
from mesh.control.process import pid_alive
from mesh.tools import bench, loadgen, trial
from mesh.tools.trial import say

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


def envoy_counters(admin_socket: str, prefix: str) -> Counter[str]:
    """The counters under `prefix` (without it) of the Envoy whose admin is at the unix
    socket `admin_socket`."""
    found = envoy.admin_stats(admin_socket, f"^{re.escape(prefix)}")
    return Counter({name.removeprefix(prefix): count for name, count in found.items()})


def success_ratio(run: loadgen.Run) -> float:
    """Successful calls over calls made (dropped ones included); 0 when none were made."""
    calls = run.completed + run.dropped
    return len(run.latencies) / calls if calls else 0.0


# -- killing processes ------------------------------------------------------------------

#: How long the supervisor may take to notice a killed process and start another.
REPLACE_TIMEOUT_SECONDS = 30.0


@dataclass
class Kill:
    """One process killed, and what became of it."""

    instance: str
    part: str
    """"app" or "sidecar" of an instance; NATS_PART of NATS."""
    pid: int
    died: bool = False
    replacement: int | None = None

    def describe(self) -> str:
        fate = "died" if self.died else "still alive"
        after = f"replaced by pid {self.replacement}" if self.replacement else "not replaced"
        return f"{self.instance} {self.part} pid {self.pid} {fate}, {after}"


def pid_of(mesh: trial.TrialMesh, instance: str, part: str) -> int:
    """The pid state.json gives `instance`'s `part` (see `Kill`)."""
    if instance == NATS:
        nats_pid: int = mesh.state()["nats"]["pid"]
        return nats_pid
    pid: int = mesh.instance(instance)[f"{part}_pid"]
    return pid


async def kill(mesh: trial.TrialMesh, instance: str, part: str) -> Kill:
    """SIGKILL `instance`'s `part` by the pid in state.json; wait for the supervisor to
    start another."""
    pid = pid_of(mesh, instance, part)
    os.kill(pid, signal.SIGKILL)
    killed = Kill(instance, part, pid)
    killed.died = await poll(lambda: not pid_alive(pid), REPLACE_TIMEOUT_SECONDS)

    def replacement() -> int | None:
        now = pid_of(mesh, instance, part)
        return now if now != pid and pid_alive(now) else None

    killed.replacement = await poll(replacement, REPLACE_TIMEOUT_SECONDS)
    say(f"  killed {killed.describe()}")
    return killed


KillSchedule = Sequence[tuple[float, str, str]]
"""(seconds from now, instance, part) of each kill."""


async def kill_on_schedule(mesh: trial.TrialMesh, schedule: KillSchedule) -> list[Kill]:
    """Each kill at its time, whether or not the processes killed before it are back yet
    (that can take longer than the time between kills); the kills, in order."""
    start = time.monotonic()

    async def kill_at(at: float, instance: str, part: str) -> Kill:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        return await kill(mesh, instance, part)

    return list(await asyncio.gather(*(kill_at(*planned) for planned in schedule)))
