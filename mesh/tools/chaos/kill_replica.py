"""`meshctl chaos kill-replica`: catalog at 3 replicas; GetProduct through the edge
(native gRPC) under load while a replica's app or sidecar is killed with SIGKILL by its
pid (the supervisor restarts it).

Criterion: >= 99% of calls succeed, and every killed process died and was replaced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mesh.tools import bench, loadgen, trial
from mesh.tools.chaos.frame import (
    Kill,
    KillSchedule,
    Scenario,
    Verdict,
    adjusted,
    counts,
    envoy_counters,
    kill_on_schedule,
    restarts,
    success_ratio,
)
from mesh.tools.trial import say

KILLED_SERVICE = bench.CALLEE
REPLICAS = 3
MIN_SUCCESS_RATIO = 0.99
#: Edge counters of its cluster of the killed service that tell how it coped.
EDGE_COUNTERS = {
    "edge retries": "upstream_rq_retry",
    "edge retries that succeeded": "upstream_rq_retry_success",
    "edge calls out of retries": "upstream_rq_retry_limit_exceeded",
    "edge outlier ejections": "outlier_detection.ejections_enforced_total",
    "edge ejections over max_ejection_percent": "outlier_detection.ejections_overflow",
}


@dataclass(frozen=True)
class KillPlan:
    load_seconds: float
    kill_at: tuple[float, ...]
    """When each kill happens, in seconds from the start of the load."""
    concurrency: int = 8
    max_calls: int = 200_000


SHORT_KILLS = KillPlan(load_seconds=6.0, kill_at=(2.0,))
FULL_KILLS = KillPlan(load_seconds=30.0, kill_at=(5.0, 10.0, 15.0, 20.0, 25.0))


def kill_targets(kills: int, replicas: int) -> list[tuple[int, str]]:
    """(replica, part) of each kill: app and sidecar in turn, each on the next replica, so
    no two kills in a row hit the same replica or the same kind of process."""
    return [(k % replicas, "app" if k % 2 == 0 else "sidecar") for k in range(kills)]


def replica_schedule(mesh: trial.TrialMesh, plan: KillPlan) -> KillSchedule:
    instances = [i["instance"] for i in mesh.instances(KILLED_SERVICE)]
    targets = kill_targets(len(plan.kill_at), len(instances))
    return [(at, instances[replica], part)
            for at, (replica, part) in zip(plan.kill_at, targets, strict=True)]  # fmt: skip


async def load_while_killing(
    mesh: trial.TrialMesh, product_id: str, plan: KillPlan
) -> tuple[loadgen.Run, list[Kill]]:
    """GetProduct through the edge as native gRPC, every answer checked, while killing."""
    path = bench.paths(mesh, product_id)["edge-grpc"]
    async with path.connect() as call:

        async def answered() -> None:
            path.check(await call())

        await answered()  # the path works before anything is broken
        load = loadgen.closed_loop(
            answered, concurrency=plan.concurrency, duration=plan.load_seconds,
            max_requests=plan.max_calls,
        )  # fmt: skip
        return await asyncio.gather(load, kill_on_schedule(mesh, replica_schedule(mesh, plan)))


def judge_kills(
    run: loadgen.Run, kills: Sequence[Kill], restarted: Counter[str], planned: int
) -> Verdict:
    """The kill-replica verdict from the load's run, the kills and the supervisor's restarts
    since the load began."""
    ratio = success_ratio(run)
    verdict = Verdict(
        f">= {MIN_SUCCESS_RATIO:.0%} of calls succeed while {KILLED_SERVICE} replicas are "
        "killed, and every killed process dies and is replaced"
    )
    verdict.figures.update({
        "calls": run.completed + run.dropped,
        "successes": len(run.latencies),
        "success %": f"{ratio * 100:.2f}",
        "errors": counts(run.errors),
        "calls per second": f"{run.completed / run.seconds:.1f}" if run.seconds else "-",
        "kills": len(kills),
        **{f"kill {n}": k.describe() for n, k in enumerate(kills, 1)},
        f"{KILLED_SERVICE} restarts": f"{restarted.total()} ({counts(restarted)})",
    })  # fmt: skip
    verdict.require(
        ratio >= MIN_SUCCESS_RATIO,
        f"{len(run.latencies)} of {run.completed + run.dropped} calls succeeded",
    )
    verdict.require(len(kills) == planned, f"{len(kills)} of {planned} kills happened")
    for k in kills:
        verdict.require(k.died and k.replacement is not None, k.describe())
    killed = Counter(k.instance for k in kills)
    verdict.require(
        restarted == killed,
        f"the supervisor reports restarts {counts(restarted)} for kills {counts(killed)}",
    )
    return verdict


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_KILLS if short else FULL_KILLS
    product_id = mesh.stocked_product(10)
    edge_admin, cluster = mesh.edge["admin_socket"], f"cluster.{KILLED_SERVICE}."
    restarts_before, edge_before = restarts(mesh), envoy_counters(edge_admin, cluster)
    kill_times = ", ".join(f"{at:g}" for at in plan.kill_at)
    say(f"{plan.load_seconds:g} s of load, killing at {kill_times} s ...")
    run, kills = await load_while_killing(mesh, product_id, plan)
    replicas = {i["instance"] for i in mesh.instances(KILLED_SERVICE)}
    restarted = Counter({name: n for name, n in (restarts(mesh) - restarts_before).items()
                         if name in replicas})  # fmt: skip
    verdict = judge_kills(run, kills, restarted, len(plan.kill_at))
    edge = envoy_counters(edge_admin, cluster) - edge_before
    verdict.figures.update({label: edge[name] for label, name in EDGE_COUNTERS.items()})
    return verdict


def _replicated(topology: dict[str, Any]) -> None:
    topology["services"][KILLED_SERVICE]["replicas"] = REPLICAS


SCENARIO = Scenario(
    "kill-replica",
    f"{KILLED_SERVICE} at {REPLICAS} replicas, replicas' apps and sidecars killed "
    "under load through the edge",
    adjusted(_replicated),
    play,
)
