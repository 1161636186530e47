"""`meshctl chaos bad-canary`: two rollouts of catalog while clients read products through
the edge. First to `v2`, whose sidecars fail 20% of the calls they receive (Envoy's fault
filter: UNAVAILABLE), in steps of 5, 25, 50 and 100%; then to `v3`, a healthy version,
in the same steps.

Criterion: the bad canary is rolled back by itself, before more than 1% of the clients'
requests during its rollout failed, and every call goes back to v1; the healthy canary is
promoted to every call with no failed request; nothing restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mesh.control import routing
from mesh.control.rollouts import actions, store
from mesh.control.rollouts.controller import SAMPLE_SECONDS
from mesh.control.rollouts.model import ENDED, PROMOTED, ROLLED_BACK, Rollout, RolloutSpec
from mesh.tools import loadgen, trial
from mesh.tools.chaos.frame import (
    Scenario,
    Verdict,
    adjusted,
    counts,
    restarts,
    success_ratio,
)
from mesh.tools.chaos.overload_runs import edge_address
from mesh.tools.loadgen import HttpConnections, http_request
from mesh.tools.trial import say

SERVICE, STABLE, BAD, GOOD = "catalog", "v1", "v2", "v3"
#: What the bad version's sidecars do to each try they receive.
INJECTED = {"abort": {"percent": 20, "grpc_status": "UNAVAILABLE"}}
#: The share of the clients' requests that may fail while the bad canary is out.
MAX_FAILED_SHARE = 0.01
#: Clients reading at once; each version admits more (`ADMITTED`), so no read is turned
#: away for want of room while the calls move.
CLIENTS = 8
ADMITTED = 16


@dataclass(frozen=True)
class CanaryPlan:
    steps: tuple[int, ...]
    interval: float


SHORT_CANARY = CanaryPlan(steps=(5, 50, 100), interval=4.0)
FULL_CANARY = CanaryPlan(steps=(5, 25, 50, 100), interval=15.0)


def _versions(topology: dict[str, Any]) -> None:
    catalog = topology["services"][SERVICE]
    catalog.pop("replicas", None)
    catalog["admission"] = {**catalog.get("admission", {}), "max_in_flight": ADMITTED}
    catalog["versions"] = {
        STABLE: {"weight": 100},
        BAD: {"weight": 0, "faults": INJECTED},
        GOOD: {"weight": 0},
    }


@dataclass
class Phase:
    """One rollout under the clients' reads, and what the clients saw meanwhile."""

    rollout: Rollout
    reads: loadgen.Run
    seconds: float

    @property
    def failed(self) -> int:
        return sum(self.reads.errors.values())

    @property
    def failed_share(self) -> float:
        return 1.0 - success_ratio(self.reads) if self.reads.completed else 0.0

    @property
    def peak(self) -> int:
        """The largest share the rollout gave its canary."""
        return max(decision.weight for decision in self.rollout.decisions)


@contextlib.asynccontextmanager
async def _reader(mesh: trial.TrialMesh) -> AsyncIterator[loadgen.Call]:
    host, port = edge_address(mesh)
    connections = HttpConnections(host, port)
    path = f"/v1/products/{mesh.stocked_product(10)}"
    request = http_request("GET", path, f"{host}:{port}", trial.UNCACHED)
    try:
        yield lambda: connections.send(request)
    finally:
        await connections.close()


async def _roll_out(mesh: trial.TrialMesh, canary: str, plan: CanaryPlan) -> Phase:
    """Start a rollout of `canary`, and read products until it ends (or can no longer)."""
    spec = RolloutSpec(SERVICE, canary, steps=plan.steps, interval=plan.interval)
    limit = plan.interval * (len(plan.steps) + 2) + 4 * SAMPLE_SECONDS
    ended = asyncio.Event()

    async def watch() -> None:
        while not ended.is_set():
            found = store.load(mesh.run_dir, SERVICE)
            if found is not None and found.status in ENDED:
                ended.set()
            await asyncio.sleep(0.1)

    async with _reader(mesh) as read:
        began = time.monotonic()
        actions.start(mesh.run_dir, mesh.topology(), spec, mesh.state()["instances"])
        watcher = asyncio.create_task(watch())
        reads = await loadgen.closed_loop(
            read, concurrency=CLIENTS, duration=limit, until=ended.is_set
        )
        ended.set()
        await watcher
    rollout = store.load(mesh.run_dir, SERVICE)
    assert rollout is not None
    return Phase(rollout, reads, time.monotonic() - began)


def judge(bad: Phase, good: Phase, split: dict[str, int], restarted: int) -> Verdict:
    verdict = Verdict(
        f"a {BAD} failing 20% of its calls is rolled back before more than "
        f"{MAX_FAILED_SHARE:.0%} of the requests fail; a healthy {GOOD} is promoted to every "
        "call with no failed request; nothing restarts"
    )
    last = bad.rollout.decisions[-1]
    verdict.figures.update({
        f"{BAD} (failing) outcome": bad.rollout.status,
        f"{BAD} seconds from start to rollback": round(bad.seconds, 1),
        f"{BAD} largest share of the calls, %": bad.peak,
        f"{BAD} requests while it was out": bad.reads.completed,
        f"{BAD} requests failed": f"{bad.failed} ({100 * bad.failed_share:.3f}%)",
        f"{BAD} errors": counts(bad.reads.errors),
        f"{BAD} rollback, the reason": f"{last.reason}; "
        + (last.canary.describe() if last.canary else "no figures"),
        f"{GOOD} (healthy) outcome": good.rollout.status,
        f"{GOOD} seconds to promote": round(good.seconds, 1),
        f"{GOOD} steps": len(good.rollout.decisions) - 1,
        f"{GOOD} requests during the rollout": good.reads.completed,
        f"{GOOD} requests failed": good.failed,
        "split at the end": ", ".join(f"{v} {w}%" for v, w in split.items()),
        "processes restarted": restarted,
    })  # fmt: skip
    verdict.require(bad.rollout.status == ROLLED_BACK, f"{BAD} was {bad.rollout.status}")
    verdict.require(
        bad.failed_share <= MAX_FAILED_SHARE,
        f"{100 * bad.failed_share:.2f}% of the requests failed while {BAD} was out",
    )
    verdict.require(good.rollout.status == PROMOTED, f"{GOOD} was {good.rollout.status}")
    verdict.require(good.failed == 0, f"{good.failed} requests failed while {GOOD} rolled out")
    verdict.require(split.get(GOOD) == 100, f"the split at the end is {split}")
    verdict.require(not restarted, f"{restarted} processes restarted")
    for phase in (bad, good):
        verdict.require(phase.reads.completed > 0, "no request was made")
    return verdict


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_CANARY if short else FULL_CANARY
    steps = ",".join(map(str, plan.steps))
    say(f"rolling {SERVICE} out to {BAD} (fails 20% of its calls), steps {steps}, "
        f"{plan.interval:g} s each, while {CLIENTS} clients read products ...")  # fmt: skip
    bad = await _roll_out(mesh, BAD, plan)
    say(f"  {BAD}: {bad.rollout.status} after {bad.seconds:.1f} s")
    say(f"rolling {SERVICE} out to {GOOD} (healthy) ...")
    good = await _roll_out(mesh, GOOD, plan)
    say(f"  {GOOD}: {good.rollout.status} after {good.seconds:.1f} s")
    split = routing.read_weights(routing.routing_root(mesh.run_dir)).get(SERVICE, {})
    return judge(bad, good, split, sum(restarts(mesh).values()))


SCENARIO = Scenario(
    "bad-canary",
    f"{SERVICE} rolled out to a version failing 20% of its calls, then to a healthy one",
    adjusted(_versions),
    play,
)
