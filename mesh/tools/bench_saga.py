"""`meshctl bench saga`: how many orders per second the saga completes, and how fast.

Orders are placed through the edge's REST API at a fixed rate (an open loop, so a slow
saga cannot slow the arrivals down; `mesh.tools.loadgen`), each followed to CONFIRMED or
CANCELLED by the event that ends it (`mesh.tools.shopper`). A step reports the orders placed
and refused, the sagas completed per second (orders ended over the time from the first
order to the last end), the time from placing an order to its end (p50/p99) and the CPU
each part of the mesh spent per completed saga, which is where to look when the
throughput falls short. The ceiling is found by doubling the rate from `--rate` until
a step is no longer sustained: an order refused, an order not ended within the drain
time, or completions falling behind the arrivals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.control import local as control
from mesh.control import procstat
from mesh.control.binaries import find_binary
from mesh.tools import bench, loadgen, trial
from mesh.tools.shopper import CONFIRMED, Shopper
from mesh.tools.trial import say

#: How long a step's orders may take to end after the last one was placed.
DRAIN_SECONDS = 30.0
#: A step is sustained while completions keep up with at least this share of arrivals.
SUSTAINED_SHARE = 0.9
STOCK = 1_000_000


@dataclass(frozen=True)
class SagaOptions:
    output: Path
    rate: float = 25.0
    duration: float = 10.0
    max_orders: int | None = None
    steps: int = 4
    """Rates tried for the ceiling, doubling from `rate` (1: just `rate`)."""
    sampling: float = 1.0
    profile: bool = False
    """Record a flame graph of each app (py-spy) while the first step places orders."""


@dataclass
class Step:
    """One rate held for the duration: what the edge answered and how the sagas ended."""

    rate: float
    placing: loadgen.Run
    placed: dict[str, float] = field(default_factory=dict)
    """Order id -> when the PlaceOrder request was sent (`time.perf_counter()`)."""
    ends: dict[str, tuple[str, float]] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def confirmed(self) -> int:
        return sum(status == CONFIRMED for status, _ in self.ends.values())

    @property
    def completed_per_second(self) -> float:
        if not self.ends:
            return 0.0
        span = max(at for _, at in self.ends.values()) - min(self.placed.values())
        return len(self.ends) / span if span > 0 else 0.0

    @property
    def sustained(self) -> bool:
        return (
            not sum(self.placing.errors.values())
            and not self.placing.dropped
            and len(self.ends) == len(self.placed)
            and self.completed_per_second >= SUSTAINED_SHARE * self.rate
        )

    def latency_ms(self, fraction: float) -> float | None:
        found = loadgen.nearest_rank(
            (at - self.placed[order] for order, (_, at) in self.ends.items()), fraction
        )
        return None if found is None else round(1000 * found, 1)

    def to_json(self) -> dict[str, Any]:
        ended = len(self.ends)
        return {
            "rate": self.rate,
            "placing": self.placing.summary(),
            "placed": len(self.placed),
            "confirmed": self.confirmed,
            "cancelled": ended - self.confirmed,
            "unfinished": len(self.placed) - ended,
            "completed_per_second": round(self.completed_per_second, 1),
            "end_to_end_p50_ms": self.latency_ms(0.5),
            "end_to_end_p99_ms": self.latency_ms(0.99),
            "sustained": self.sustained,
            "cpu_ms_per_saga": {
                part: round(1000 * seconds / ended, 2) if ended else None
                for part, seconds in sorted(self.cpu_seconds.items(), key=lambda kv: -kv[1])
            },
        }


def parts(state: dict[str, Any]) -> dict[str, list[int]]:
    """Every process of the mesh, grouped by what it is ("orders app", "edge", ...)."""
    found: dict[str, list[int]] = {}
    for instance in state["instances"]:
        found.setdefault(f"{instance['service']} app", []).append(instance["app_pid"])
        found.setdefault(f"{instance['service']} sidecar", []).append(instance["sidecar_pid"])
    if state.get("edge"):
        found["edge"] = [state["edge"]["pid"]]
    found["nats"] = [state["nats"]["pid"]]
    found["traces"] = [state["traces"]["pid"]]
    return found


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {
        part: sum(u.cpu_seconds for u in map(procstat.usage, pids) if u is not None)
        for part, pids in groups.items()
    }


async def run_step(shopper: Shopper, groups: dict[str, list[int]], rate: float,
                   options: SagaOptions, profile: bool = False) -> Step:  # fmt: skip
    """Place orders at `rate` for the duration, then wait for them to end; with
    `profile`, record each app's flame graph meanwhile."""
    placed: dict[str, float] = {}

    async def place() -> None:
        sent = time.perf_counter()
        placed[await shopper.place(shopper.order_request())] = sent

    before = _cpu(groups)
    apps = {
        part.removesuffix(" app"): pids[0] for part, pids in groups.items() if part.endswith(" app")
    }
    recording = profiling(apps, options.output, options.duration) if profile else None
    async with recording or contextlib.nullcontext():
        placing = await loadgen.open_loop(
            place, rate=rate, duration=options.duration, max_requests=options.max_orders
        )
    await shopper.wait(placed, DRAIN_SECONDS)
    after = _cpu(groups)
    ends = {o: (shopper.ended[o].status, shopper.ended[o].at) for o in placed if o in shopper.ended}
    return Step(rate, placing, placed, ends, {p: after[p] - before[p] for p in groups})


@contextlib.asynccontextmanager
async def profiling(apps: dict[str, int], output: Path, seconds: float) -> AsyncIterator[None]:
    """A py-spy flame graph of each app (by pid) for `seconds`: `output/flame-<app>.svg`.

    Samples are taken 100 times a second from outside the process (`--nonblocking`, so
    the app is not paused) from its threads that are running, idle ones left out: the
    graph shows where the CPU time goes, the database's and gRPC's threads included.
    """
    recorders = [
        _flame_graph(pid, output / f"flame-{app}.svg", seconds) for app, pid in apps.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            try:
                await asyncio.to_thread(recorder.wait, timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                await asyncio.to_thread(recorder.wait)


def _flame_graph(pid: int, svg: Path, seconds: float) -> subprocess.Popen[bytes]:
    command = [find_binary("py-spy"), "record", "--pid", str(pid), "--duration", f"{seconds:g}",
               "--rate", "100", "--nonblocking", "--format", "flamegraph",
               "--output", str(svg)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(steps: Sequence[Step]) -> str:
    header = ("RATE/S", "PLACED", "REFUSED", "CONFIRMED", "CANCELLED", "UNFINISHED",
              "SAGAS/S", "P50 MS", "P99 MS", "SUSTAINED")  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for step in steps:
        data = step.to_json()
        rows.append(tuple(str(v) for v in (
            f"{step.rate:g}", data["placed"], data["placing"]["errors"] + step.placing.dropped,
            data["confirmed"], data["cancelled"], data["unfinished"],
            data["completed_per_second"], data["end_to_end_p50_ms"], data["end_to_end_p99_ms"],
            "yes" if step.sustained else "no",
        )))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    best = max(steps, key=lambda s: s.completed_per_second)
    sustained = [s.rate for s in steps if s.sustained]
    costs = best.to_json()["cpu_ms_per_saga"]
    top = ", ".join(f"{part} {ms}" for part, ms in list(costs.items())[:8])
    lines += [
        "",
        f"ceiling: {best.completed_per_second:.1f} sagas/s completed at {best.rate:g}/s offered; "
        + (f"highest rate sustained: {max(sustained):g}/s" if sustained else "no rate sustained"),
        f"CPU ms per saga at {best.rate:g}/s: {top}",
    ]
    return "\n".join(lines)


async def run_steps(mesh: trial.TrialMesh, options: SagaOptions, say: Callable[[str], None]) -> (
    list[Step]
):  # fmt: skip
    groups = parts(mesh.state())
    steps: list[Step] = []
    async with Shopper.opened(mesh, STOCK) as shopper:
        for index in range(options.steps):
            rate = options.rate * 2**index
            say(f"  {rate:g} orders/s for {options.duration:g} s ...")
            step = await run_step(shopper, groups, rate, options, options.profile and not index)
            steps.append(step)
            if not step.sustained:
                break
    return steps


def bench_saga(root: Path, run_dir: Path, options: SagaOptions) -> int:
    """`meshctl bench saga`: see the module docstring."""
    options.output.mkdir(parents=True, exist_ok=True)
    with trial.started(root, run_dir, bench.bench_topology(options.sampling), say) as mesh:
        bench.settle(say)
        steps = asyncio.run(run_steps(mesh, options, say))
    if not steps or not steps[0].ends:
        raise control.ControlError("no order ended: see the logs under " + str(run_dir / "logs"))
    path = options.output / "bench-saga.json"
    document = {"machine": bench.machine(), "duration_seconds": options.duration,
                "steps": [s.to_json() for s in steps]}  # fmt: skip
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(report(steps))
    print(f"\nwrote {path}")
    return 0
