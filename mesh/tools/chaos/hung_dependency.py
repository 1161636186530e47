"""`meshctl chaos hung-dependency`: inventory's app hangs (SIGSTOP by its pid: its
sidecar takes calls, nothing answers them) while reads with stock levels
(`GET /v1/products/{id}?view=PRODUCT_VIEW_WITH_STOCK`, past the edge's cache) run
through the edge, as many callers as catalog admits in flight.

Three runs of that closed loop: with inventory answering; with inventory's app frozen;
and, once it runs again, until a read has its stock level back. A read that asks a hung
inventory waits for the stock read's timeout (0.5 s) holding one of catalog's places in
flight, so without catalog's circuit (`mesh.runtime.circuit`) the reads while it hangs
would be a few a second.

Criterion: every call answered 200 in every run; while inventory hangs every answer is
marked STOCK_STATE_UNREACHABLE, the reads per second are at least `MIN_THROUGHPUT_SHARE`
of those while it answered, and catalog asks inventory at most `MAX_CALLS_PER_SECOND`
times a second; the stock level is back within `RECOVERY_SECONDS` of inventory running
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from mesh.control import envoy
from mesh.tools import loadgen, trial
from mesh.tools.chaos.frame import Scenario, Verdict, adjusted, counts, envoy_counters
from mesh.tools.chaos.overload_runs import edge_address, timed_out
from mesh.tools.loadgen import HttpConnections, http_request
from mesh.tools.trial import say

HUNG = "inventory"
SERVING = "catalog"
MIN_THROUGHPUT_SHARE = 0.5
#: Catalog's calls to a hung inventory: the reads that open its circuit, then one trial
#: per `OPEN_SECONDS` and the trial's timeout; four a second leaves room for both.
MAX_CALLS_PER_SECOND = 4.0
RECOVERY_SECONDS = 10.0
CURRENT, UNREACHABLE = "STOCK_STATE_CURRENT", "STOCK_STATE_UNREACHABLE"


@dataclass(frozen=True)
class HangPlan:
    seconds: float
    """How long each run lasts."""
    max_calls: int = 200_000


SHORT = HangPlan(4.0)
FULL = HangPlan(15.0)


@dataclass
class Reads:
    """Reads with stock through the edge, each answer's stock state counted."""

    connections: HttpConnections
    request: bytes
    states: Counter[str]

    @classmethod
    @contextlib.asynccontextmanager
    async def of(cls, mesh: trial.TrialMesh, product_id: str) -> AsyncIterator[Reads]:
        host, port = edge_address(mesh)
        path = f"/v1/products/{product_id}?view=PRODUCT_VIEW_WITH_STOCK"
        request = http_request("GET", path, f"{host}:{port}", trial.UNCACHED)
        reads = cls(HttpConnections(host, port), request, Counter())
        try:
            yield reads
        finally:
            await reads.connections.close()

    async def read(self) -> bytes:
        body = await self.connections.send(self.request)
        self.states[json.loads(body)["product"]["stock"]["state"]] += 1
        return body

    async def run(self, plan: HangPlan, callers: int) -> tuple[loadgen.Run, Counter[str]]:
        """A closed loop of reads; the run and its answers' stock states."""
        self.states = Counter()
        run = await loadgen.closed_loop(
            timed_out(self.read), concurrency=callers, duration=plan.seconds,
            max_requests=plan.max_calls,
        )  # fmt: skip
        return run, self.states


@contextlib.contextmanager
def hung(mesh: trial.TrialMesh, service: str) -> Iterator[None]:
    """`service`'s first app stopped with SIGSTOP by its pid for the block; then it goes on."""
    pid = mesh.instances(service)[0]["app_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def calls_to(mesh: trial.TrialMesh, service: str) -> int:
    """The calls `SERVING`'s sidecar has sent to `service`, every try counted."""
    admin = mesh.instances(SERVING)[0]["admin_socket"]
    return envoy_counters(admin, f"cluster.{service}.")["upstream_rq_total"]


def per_second(run: loadgen.Run) -> float:
    return len(run.latencies) / run.seconds if run.seconds else 0.0


def describe(run: loadgen.Run, states: Counter[str]) -> str:
    return (
        f"{per_second(run):.0f}/s, {run.completed} calls, p50 "
        f"{(run.percentile(0.5) or 0) * 1000:.1f} ms, p99 {(run.percentile(0.99) or 0) * 1000:.1f}"
        f" ms, errors {counts(run.errors)}, stock {counts(states)}"
    )


@dataclass(frozen=True)
class Recovery:
    seconds: float | None
    """Until a read had its stock level again; None past `RECOVERY_SECONDS`."""
    errors: Counter[str]


async def recovery(reads: Reads) -> Recovery:
    """Reads, 20 a second, until one has its stock level again."""
    began, errors = time.monotonic(), Counter[str]()
    while time.monotonic() - began < RECOVERY_SECONDS:
        reads.states = Counter()
        try:
            await timed_out(reads.read)()
        except (loadgen.HttpStatusError, TimeoutError) as error:
            errors[type(error).__name__] += 1
        if reads.states[CURRENT]:
            return Recovery(time.monotonic() - began, errors)
        await asyncio.sleep(0.05)
    return Recovery(None, errors)


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT if short else FULL
    callers = envoy.admitted(mesh.topology(), SERVING)
    verdict = Verdict(
        f"every read answered while {HUNG} hangs, marked {UNREACHABLE}, at >= "
        f"{MIN_THROUGHPUT_SHARE:.0%} of the reads per second while it answers, {HUNG} asked "
        f"<= {MAX_CALLS_PER_SECOND:g} times a second; the stock back within "
        f"{RECOVERY_SECONDS:g} s"
    )
    async with Reads.of(mesh, mesh.stocked_product(5)) as reads:
        say(f"reads with stock, {callers} callers, {HUNG} answering")
        answering, answering_states = await reads.run(plan, callers)
        say(f"reads with stock, {callers} callers, {HUNG}'s app frozen")
        with hung(mesh, HUNG):
            before = calls_to(mesh, HUNG)
            hanging, hanging_states = await reads.run(plan, callers)
            asked = calls_to(mesh, HUNG) - before
        back = await recovery(reads)
    share = per_second(hanging) / per_second(answering) if per_second(answering) else 0.0
    asked_per_second = asked / hanging.seconds
    verdict.figures.update({
        "callers": callers,
        f"{HUNG} answering": describe(answering, answering_states),
        f"{HUNG} hung": describe(hanging, hanging_states),
        "reads per second while hung": f"{share:.0%} of those while answering",
        f"calls to {HUNG} while hung": f"{asked} ({asked_per_second:.1f}/s)",
        "stock back after": "-" if back.seconds is None else f"{back.seconds:.2f} s",
    })  # fmt: skip
    for name, run in ((f"{HUNG} answering", answering), (f"{HUNG} hung", hanging)):
        verdict.require(
            not run.errors and not run.dropped and len(run.latencies) > 0,
            f"{name}: {len(run.latencies)} answered, errors {counts(run.errors)}",
        )
    verdict.require(answering_states.keys() == {CURRENT}, f"answering: {counts(answering_states)}")
    verdict.require(hanging_states.keys() == {UNREACHABLE}, f"hung: {counts(hanging_states)}")
    verdict.require(
        share >= MIN_THROUGHPUT_SHARE, f"the reads while hung were {share:.0%} of the others"
    )
    verdict.require(
        asked_per_second <= MAX_CALLS_PER_SECOND,
        f"catalog asked the hung {HUNG} {asked_per_second:.1f} times a second",
    )
    verdict.require(back.seconds is not None, f"no stock level within {RECOVERY_SECONDS:g} s")
    verdict.require(not back.errors, f"after {HUNG} ran again: errors {counts(back.errors)}")
    return verdict


SCENARIO = Scenario(
    "hung-dependency",
    f"{HUNG}'s app hangs while reads with stock levels run through the edge",
    adjusted(),
    play,
    pinned=True,
)
