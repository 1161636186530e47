"""The runs of `meshctl chaos overload` (`mesh.tools.chaos.overload`): its targets
through the edge's REST API, and for each its capacity, its unloaded run, its run at each
multiple of capacity with the light load after it; and the burst of wrong-password logins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from mesh.control import envoy
from mesh.tools import loadgen, trial
from mesh.tools.chaos.frame import counts
from mesh.tools.loadgen import HttpConnections, http_request
from mesh.tools.shopper import PASSWORD, Shopper
from mesh.tools.trial import say

UNLOADED_SHARE = 0.2
JUDGED_MULTIPLE = 3.0
RECOVERY_SECONDS = 1.0
#: A call the client gives up on: the mesh held it far past any useful answer.
CALL_TIMEOUT_SECONDS = 5.0
#: Calls the generator keeps in flight at most; a call due beyond that is dropped (and
#: counted as a failure that was not a refusal: the mesh was holding the others).
MAX_OUTSTANDING = 2000
#: How an explicit refusal reaches a REST client.
REFUSALS = frozenset({"HTTP 429", "HTTP 503"})
LOGIN_BURST = 50
#: How long the orders a run placed may take to end before the next run starts.
DRAIN_SECONDS = 300.0
STOCK = 10_000_000


@dataclass(frozen=True)
class Plan:
    capacity_seconds: float
    unloaded_seconds: float
    multiples: tuple[float, ...]
    overload_seconds: float
    """How long the judged multiple is held."""
    other_seconds: float
    """How long each other multiple is held."""
    probe_seconds: float
    """How long the light load after each overload runs."""
    orders: bool
    """Whether PlaceOrder is a target too (the read always is)."""
    timed: bool
    """Whether the verdict also judges goodput and latencies (see
    `mesh.tools.chaos.overload.criterion`)."""

    def seconds_at(self, multiple: float) -> float:
        return self.overload_seconds if multiple == JUDGED_MULTIPLE else self.other_seconds


#: The unloaded run lasts until it has made this many calls at least.
MIN_UNLOADED_CALLS = 300


# -- the targets ------------------------------------------------------------------------


def timed_out(call: Callable[[], Awaitable[bytes]]) -> loadgen.Call:
    """`call` given up after CALL_TIMEOUT_SECONDS (a `TimeoutError`, as the client sees it)."""

    async def bounded() -> bytes:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            return await call()

    return bounded


@dataclass
class Target:
    """One kind of call through the edge."""

    name: str
    call: loadgen.Call
    callers: int
    """How many calls the edge lets the target's service have in flight."""
    settle: Callable[[], Awaitable[float]]
    """Waits until the calls' work is done (the orders' sagas); the seconds it took."""


async def nothing_to_settle() -> float:
    return 0.0


def edge_address(mesh: trial.TrialMesh) -> tuple[str, int]:
    host, port = mesh.edge_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextlib.asynccontextmanager
async def read_target(mesh: trial.TrialMesh, product_id: str) -> AsyncIterator[Target]:
    host, port = edge_address(mesh)
    connections = HttpConnections(host, port)
    path = f"/v1/products/{product_id}"
    request = http_request("GET", path, f"{host}:{port}", trial.UNCACHED)
    try:
        yield Target("read", timed_out(lambda: connections.send(request)),
                     envoy.admitted(mesh.topology(), "catalog"), nothing_to_settle)  # fmt: skip
    finally:
        await connections.close()


@contextlib.asynccontextmanager
async def order_target(mesh: trial.TrialMesh) -> AsyncIterator[Target]:
    async with Shopper.opened(mesh, STOCK) as shopper:
        placed: list[str] = []

        async def place() -> bytes:
            placed.append(await shopper.place(shopper.order_request()))
            return b""

        async def settle() -> float:
            began = time.monotonic()
            pending = await shopper.wait(placed, DRAIN_SECONDS)
            if pending:
                say(f"  note: {len(pending)} of {len(placed)} orders had not ended")
            placed.clear()
            return time.monotonic() - began

        callers = envoy.admitted(mesh.topology(), "orders")
        yield Target("order", timed_out(place), callers, settle)


# -- the runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Overloaded:
    """One multiple of capacity: the overload's run and the light load after it."""

    multiple: float
    rate: float
    seconds: float
    run: loadgen.Run
    after: loadgen.Run

    @property
    def goodput(self) -> float:
        return len(self.run.latencies) / self.seconds

    @property
    def failures(self) -> int:
        return sum(self.run.errors.values()) + self.run.dropped

    @property
    def refusals(self) -> int:
        return sum(n for kind, n in self.run.errors.items() if kind in REFUSALS)

    def failed_kinds(self) -> Counter[str]:
        failed = self.run.errors.copy()
        if self.run.dropped:
            failed["dropped by the generator"] = self.run.dropped
        return failed

    def refusal_p99(self) -> float | None:
        latencies = [
            latency
            for kind, found in self.run.failure_latencies.items()
            if kind in REFUSALS
            for latency in found
        ]
        return loadgen.nearest_rank(latencies, 0.99)


@dataclass(frozen=True)
class TargetOutcome:
    name: str
    capacity: float
    unloaded: loadgen.Run
    overloaded: Sequence[Overloaded]


#: The capacity run is cut in this many slices; capacity is their median throughput, so
#: a passing stall of the machine does not set the scale of everything after it.
CAPACITY_SLICES = 5


async def capacity_of(target: Target, seconds: float) -> float:
    """Calls done per second with every call the edge admits in flight (the median of
    CAPACITY_SLICES runs), after a warm-up as long (connections, caches). A call's work
    counts as done when the target has settled it (an order: when its saga has ended),
    so the capacity is what the mesh sustains, not what it accepts while a backlog
    grows."""
    await loadgen.closed_loop(target.call, concurrency=target.callers, duration=seconds)
    await target.settle()
    throughputs = []
    for _ in range(CAPACITY_SLICES):
        run = await loadgen.closed_loop(
            target.call, concurrency=target.callers, duration=seconds / CAPACITY_SLICES
        )
        if run.errors:
            say(f"  note: {counts(run.errors)} while measuring {target.name}'s capacity")
        throughputs.append(len(run.latencies) / (run.seconds + await target.settle()))
    return statistics.median(throughputs)


async def overload(target: Target, multiple: float, capacity: float, plan: Plan) -> Overloaded:
    rate, seconds = multiple * capacity, plan.seconds_at(multiple)
    load = asyncio.create_task(
        loadgen.open_loop(target.call, rate=rate, duration=seconds,
                          max_outstanding=MAX_OUTSTANDING)
    )  # fmt: skip
    await asyncio.sleep(seconds + RECOVERY_SECONDS)
    after = await loadgen.open_loop(
        target.call, rate=UNLOADED_SHARE * capacity, duration=plan.probe_seconds
    )
    found = Overloaded(multiple, rate, seconds, await load, after)
    drained = await target.settle()
    settled = f"; its work was done {drained:.1f} s later" if drained else ""
    say(f"  {target.name} {multiple:g}x: {describe(found)}{settled}")
    return found


async def measure_target(target: Target, plan: Plan) -> TargetOutcome:
    await target.call()  # the path works before it is loaded
    capacity = await capacity_of(target, plan.capacity_seconds)
    say(f"  {target.name}: capacity {capacity:.0f}/s")
    rate = UNLOADED_SHARE * capacity
    seconds = max(plan.unloaded_seconds, MIN_UNLOADED_CALLS / rate)
    unloaded = await loadgen.open_loop(target.call, rate=rate, duration=seconds)
    await target.settle()
    runs = [await overload(target, m, capacity, plan) for m in plan.multiples]
    return TargetOutcome(target.name, capacity, unloaded, sorted(runs, key=lambda r: r.multiple))


@dataclass(frozen=True)
class LoginBurst:
    before: loadgen.Run
    during: loadgen.Run
    logins: loadgen.Run


async def login_burst(mesh: trial.TrialMesh, read: Target, rate: float) -> LoginBurst:
    """The read's median before and during LOGIN_BURST wrong-password sign-ins at once."""
    host, port = edge_address(mesh)
    connections = HttpConnections(host, port)
    headers = {"content-type": "application/json"}
    email = f"overload-{uuid.uuid4().hex[:12]}@example.org"
    account = json.dumps({"email": email, "password": PASSWORD}).encode()
    wrong = json.dumps({"email": email, "password": "not the password"}).encode()
    try:
        await connections.send(http_request("POST", "/v1/users", f"{host}:{port}", headers,
                                            account))  # fmt: skip
        login = http_request("POST", "/v1/tokens", f"{host}:{port}", headers, wrong)
        before = await loadgen.open_loop(read.call, rate=rate, duration=2.0)
        logins = loadgen.closed_loop(
            timed_out(lambda: connections.send(login)), concurrency=LOGIN_BURST,
            duration=60.0, max_requests=LOGIN_BURST,
        )  # fmt: skip
        during = loadgen.open_loop(read.call, rate=rate, duration=2.0)
        logins_run, during_run = await asyncio.gather(logins, during)
    finally:
        await connections.close()
    return LoginBurst(before, during_run, logins_run)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def describe(found: Overloaded) -> str:
    failed = found.failed_kinds()
    return (
        f"offered {found.rate:.0f}/s, goodput {found.goodput:.0f}/s, "
        f"accepted p99 {ms(found.run.percentile(0.99))}, "
        f"failed {found.failures} ({counts(failed)}), refusals' p99 {ms(found.refusal_p99())}, "
        f"generator late by {ms(found.run.max_lag)} at most; "
        f"{RECOVERY_SECONDS:g} s after: {len(found.after.latencies)} of "
        f"{found.after.completed + found.after.dropped} succeeded"
    )
