"""`meshctl chaos SCENARIO`: break part of a mesh on purpose and check that it copes.

Each scenario runs against a mesh of its own (`mesh.tools.trial`: mesh.yaml with the scenario's
changes, from a throwaway run directory, the edge on a free port), is bounded in time
and in count, prints what it measured and ends with one line, `PASS` or `FAIL`, against
its criterion; the command exits 0 on PASS and 1 on FAIL. The full form is the default;
`--short` runs a smaller one (what the test suite runs).

    kill-replica  catalog at 3 replicas; GetProduct through the edge (native gRPC) under
                  load while a replica's app or sidecar is killed with SIGKILL by its pid
                  (the supervisor restarts it). Criterion: >= 99% of calls succeed, and
                  every killed process died and was replaced.
    poison        good orders through the edge's REST API, mixed in time with poison
                  published straight onto the event stream: an undecodable payload, a
                  well-formed event on a subject that is not its own, an event of an
                  order nobody placed. Criterion: every poison message ends in the
                  dead-letter stream once for each consumer it reaches, nothing else
                  does, and every good order is CONFIRMED with the normal history.
    crash-saga    a burst of orders through the edge's REST API at a fixed rate, each
                  placement that meets a 5xx or a broken connection sent again with the
                  same request id, while the app of each saga participant (shipping,
                  payments, inventory, orders) and nats-server are killed in turn with
                  SIGKILL by their pids (the supervisor restarts them). Criterion: 0 lost
                  orders (every acknowledged order ends CONFIRMED) and 0 double captures
                  (in payments' database); each confirmed order was reserved and captured
                  once, the stock fell by exactly the confirmed units, and every killed
                  process died and was replaced.
    faults        processor's sidecar injects faults into the calls it receives (Envoy's
                  fault filter: UNAVAILABLE on 20% of tries, 10% held past the caller's
                  per-try timeout) while orders go through the saga, with stock for only
                  part of them, and Authorize calls are made through payments' sidecar as
                  payments makes them. Criterion: every order ends within 60 s, >= 99.5%
                  of those calls succeed after the mesh's retries, no order is cancelled
                  but for stock, and the stock never goes below zero.
    overload      a read and PlaceOrder through the edge at 1x-4x their measured capacity,
                  and a burst of wrong-password logins (`mesh.tools.overload`). Criterion, at
                  3x: goodput >= 80% of capacity, the failures fast explicit refusals,
                  accepted calls' p99 <= 5x unloaded, full service 1 s after, no
                  restarts; the logins keep a read's median within 2x.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.type import money_pb2
from nats.js import JetStreamContext

from mesh.control import deadletters, envoy
from mesh.control import local as control
from mesh.control.supervisor import pid_alive
from mesh.control.topology import Topology
from mesh.runtime import events
from mesh.runtime.service import sqlite_path
from mesh.tools import bench, loadgen, overload, trial
from mesh.tools.scenario import (
    NATS,
    NATS_PART,
    Scenario,
    Verdict,
    adjusted,
    counts,
    poll,
    restarts,
)
from mesh.tools.shopper import CANCELLED, CONFIRMED, Shopper
from mesh.tools.trial import say
from shop.events.v1 import events_pb2
from shop.processor.v1 import processor_service_pb2 as processor_pb

#: How long the supervisor may take to notice a killed process and start another.
REPLACE_TIMEOUT_SECONDS = 30.0


# -- the frame --------------------------------------------------------------------------


def run(root: Path, run_dir: Path, name: str, short: bool) -> int:
    """`meshctl chaos NAME [--short]`: 0 on PASS, 1 on FAIL."""
    scenario = SCENARIOS[name]
    title = f"{name} ({'short' if short else 'full'} form): {scenario.summary}"
    say(title)
    began = time.monotonic()
    mesh_cpus, generator_cpus = bench.split_cpus(scenario.pinned)
    with trial.started(root, run_dir, scenario.adjust, say, mesh_cpus) as mesh:
        if generator_cpus is not None:
            os.sched_setaffinity(0, generator_cpus)
        verdict = asyncio.run(scenario.play(mesh, short))
    verdict.figures["seconds"] = round(time.monotonic() - began, 1)
    print(title)
    print(verdict.report(), flush=True)
    return 0 if verdict.passed else 1


# -- orders through the edge ------------------------------------------------------------

TERMINAL = (CONFIRMED, CANCELLED)
#: Between two readings of the orders that have not ended yet.
SETTLE_PAUSE_SECONDS = 0.5
#: How a call through the edge fails: an answer other than 2xx, or none at all (the
#: connection refused, or closed before the answer).
CALL_ERRORS = (loadgen.HttpStatusError, OSError, EOFError)


def worth_retrying(error: Exception) -> bool:
    """Whether a call that failed with `error` may succeed if made again: a 5xx or no
    answer (a service restarting), not a refusal of the request itself."""
    if isinstance(error, loadgen.HttpStatusError):
        return error.status >= 500
    return isinstance(error, CALL_ERRORS)


async def read_ends(
    buyer: Shopper, order_ids: Iterable[str], orders: dict[str, dict[str, Any]]
) -> bool:
    """Read again through the edge, into `orders`, each order not yet seen ended (one the
    edge cannot answer for now is left for the next reading); whether all have ended."""
    ended = True
    for order_id in order_ids:
        if orders.get(order_id, {}).get("status") in TERMINAL:
            continue
        try:
            orders[order_id] = await buyer.fetch(order_id)
        except CALL_ERRORS as error:
            if not worth_retrying(error):
                raise
        ended = ended and orders.get(order_id, {}).get("status") in TERMINAL
    return ended


# -- killing processes ------------------------------------------------------------------


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


# -- kill-replica -----------------------------------------------------------------------

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


def envoy_counters(admin_socket: str, prefix: str) -> Counter[str]:
    """The counters under `prefix` (without it) of the Envoy whose admin is at the unix
    socket `admin_socket`."""
    found = envoy.admin_stats(admin_socket, f"^{re.escape(prefix)}")
    return Counter({name.removeprefix(prefix): count for name, count in found.items()})


def success_ratio(run: loadgen.Run) -> float:
    """Successful calls over calls made (dropped ones included); 0 when none were made."""
    calls = run.completed + run.dropped
    return len(run.latencies) / calls if calls else 0.0


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


async def play_kill_replica(mesh: trial.TrialMesh, short: bool) -> Verdict:
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


# -- poison -----------------------------------------------------------------------------

NORMAL_HISTORY = ("OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentScheduled",
                  "OrderConfirmed")  # fmt: skip


@dataclass(frozen=True)
class PoisonPlan:
    good_orders: int
    poison: int
    settle_seconds: float
    """How long orders may take to end and poison to reach the dead letters, after the
    last is sent (an event of an unknown order is retried for about 20 s first)."""


SHORT_POISON = PoisonPlan(good_orders=10, poison=6, settle_seconds=90.0)
FULL_POISON = PoisonPlan(good_orders=100, poison=30, settle_seconds=120.0)


@dataclass(frozen=True)
class Poison:
    kind: str
    subject: str
    """Where it is published."""
    data: bytes
    message_id: str


def undecodable(index: int) -> Poison:
    # Field number 0 does not exist in protobuf, so no decoder accepts these bytes.
    data = b"\x00poison %d" % index
    return Poison("undecodable", events.subject("orders", "order_placed"), data, f"poison-{index}")


def misplaced(order_id: str) -> Poison:
    """A well-formed ShipmentScheduled of a real order, published as a PaymentCaptured: a
    consumer that went by the subject would take it as a payment, and the order's
    history would show it."""
    scheduled = events_pb2.ShipmentScheduled(
        order_id=order_id, shipment_id="poison", tracking_number="POISON", carrier="poison"
    )
    envelope = events.new_event("shipping", order_id, scheduled)
    return Poison(
        "misplaced", events.subject("payments", "payment_captured"),
        envelope.SerializeToString(), envelope.event_id,
    )  # fmt: skip


def unknown_order() -> Poison:
    """A well-formed StockReserved, on its own subject, of an order nobody placed."""
    order_id = str(uuid.uuid4())
    envelope = events.new_event("inventory", order_id, events_pb2.StockReserved(order_id=order_id))
    return Poison(
        "unknown-order", events.subject("inventory", "stock_reserved"),
        envelope.SerializeToString(), envelope.event_id,
    )  # fmt: skip


def poison(index: int, last_order_id: str) -> Poison:
    """The `index`th poison message: the three kinds in turn."""
    kind = index % 3
    if kind == 0:
        return undecodable(index)
    return misplaced(last_order_id) if kind == 1 else unknown_order()


def poison_after(good_orders: int, poisons: int) -> Counter[int]:
    """How many poison messages follow each good order (by index): spread evenly, none
    before the first order."""
    return Counter((j + 1) * good_orders // (poisons + 1) for j in range(poisons))


DeadLetterKey = tuple[str, bytes]
"""A dead letter as (consumer, original payload): each poison payload is unique."""


def expected_dead_letters(sent: Iterable[Poison], topology: Topology) -> dict[DeadLetterKey, str]:
    """(consumer, payload) -> kind, for every consumer each poison message reaches."""
    expected = {}
    for message in sent:
        reached = [s.name for s in topology.services.values()
                   if message.subject in s.consumed_subjects]  # fmt: skip
        if not reached:
            raise control.ControlError(f"no consumer reads {message.subject}")
        expected.update({(consumer, message.data): message.kind for consumer in reached})
    return expected


@dataclass
class DeadLetterTally:
    """The dead letters found against those expected."""

    expected: dict[DeadLetterKey, str]
    found: Counter[DeadLetterKey]

    @classmethod
    def of(cls, expected: dict[DeadLetterKey, str], letters: Iterable[deadletters.DeadLetter]) -> (
        DeadLetterTally
    ):  # fmt: skip
        return cls(expected, Counter((letter.consumer, letter.data) for letter in letters))

    @property
    def missing(self) -> list[DeadLetterKey]:
        return [key for key in self.expected if not self.found[key]]

    @property
    def unexpected(self) -> int:
        """Dead letters of good events, and second copies of poison."""
        return sum(n - (key in self.expected) for key, n in self.found.items())

    def by_consumer(self) -> str:
        """Per consumer: poison dead-lettered / expected."""
        wanted = Counter(consumer for consumer, _ in self.expected)
        got = Counter(consumer for consumer, data in self.expected if self.found[consumer, data])
        return ", ".join(f"{name} {got[name]}/{wanted[name]}" for name in sorted(wanted))


async def shop_and_poison(
    shopper: Shopper, js: JetStreamContext, plan: PoisonPlan
) -> tuple[list[str], list[str], list[Poison]]:
    """Place the good orders one by one, publishing poison in between; return the orders
    placed, the placements the edge refused (why) and the poison sent."""
    placed: list[str] = []
    refused: list[str] = []
    sent: list[Poison] = []
    after = poison_after(plan.good_orders, plan.poison)
    for index in range(plan.good_orders):
        try:
            placed.append(await shopper.place(shopper.order_request()))
        except loadgen.HttpStatusError as error:
            refused.append(str(error))
        for _ in range(after[index] if placed else 0):
            message = poison(len(sent), placed[-1])
            headers = {events.MSG_ID: message.message_id}
            await js.publish(message.subject, message.data, headers=headers)
            sent.append(message)
    return placed, refused, sent


async def settle(
    buyer: Shopper, js: JetStreamContext, order_ids: Sequence[str],
    expected: dict[DeadLetterKey, str], seconds: float,
) -> tuple[dict[str, dict[str, Any]], DeadLetterTally]:  # fmt: skip
    """Wait (at most `seconds`) until every order ended and every expected dead letter is
    in; the orders as last read, and the dead letters."""
    orders: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    while True:
        ended = await read_ends(buyer, order_ids, orders)
        tally = DeadLetterTally.of(expected, await deadletters.dead_letters(js))
        if (ended and not tally.missing) or time.monotonic() >= deadline:
            return orders, tally
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)


def went_normally(order: dict[str, Any]) -> bool:
    history = tuple(step["name"] for step in order.get("history", ()))
    return order["status"] == CONFIRMED and history == NORMAL_HISTORY


def judge_poison(
    orders: dict[str, dict[str, Any]], refused: Sequence[str], sent: Sequence[Poison],
    tally: DeadLetterTally, plan: PoisonPlan,
) -> Verdict:  # fmt: skip
    """The poison verdict from the good orders as they ended and the dead letters."""
    abnormal = [order for order in orders.values() if not went_normally(order)]
    missing = Counter(f"{key[0]} {tally.expected[key]}" for key in tally.missing)
    verdict = Verdict(
        "every poison message is dead-lettered once by each consumer it reaches, nothing "
        "else is, and every good order is CONFIRMED with the normal history"
    )
    verdict.figures.update({
        "good orders placed": len(orders),
        "good orders refused": len(refused),
        "confirmed with the normal history": len(orders) - len(abnormal),
        "poison published": len(sent),
        "poison by kind": counts(Counter(p.kind for p in sent)),
        "dead letters expected": len(tally.expected),
        "dead letters of poison": len(tally.expected) - len(tally.missing),
        "dead letters by consumer": tally.by_consumer(),
        "other dead letters": tally.unexpected,
    })  # fmt: skip
    verdict.require(not refused, f"{len(refused)} orders refused, the first: {refused[:1]}")
    verdict.require(
        len(orders) + len(refused) == plan.good_orders and len(sent) == plan.poison,
        f"{len(orders)} orders placed and {len(sent)} poison sent, "
        f"not {plan.good_orders} and {plan.poison}",
    )
    for order in abnormal[:5]:
        history = [step["name"] for step in order.get("history", ())]
        verdict.failures.append(f"order {order['id']} is {order['status']} after {history}")
    verdict.require(not missing, f"poison never dead-lettered: {counts(missing)}")
    verdict.require(tally.unexpected == 0, f"{tally.unexpected} other dead letters")
    return verdict


async def play_poison(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_POISON if short else FULL_POISON
    async with Shopper.opened(mesh, plan.good_orders) as buyer, mesh.jetstream() as js:
        say(f"{plan.good_orders} good orders, {plan.poison} poison messages ...")
        placed, refused, sent = await shop_and_poison(buyer, js, plan)
        expected = expected_dead_letters(sent, mesh.topology())
        say("waiting for the orders to end and the poison to reach the dead letters ...")
        orders, tally = await settle(buyer, js, placed, expected, plan.settle_seconds)
    return judge_poison(orders, refused, sent, tally, plan)


# -- crash-saga -------------------------------------------------------------------------

#: What the kills hit, in turn: each saga participant's app, then nats-server. Against
#: the flow of an order, so that what feeds the next victim is running and it has events
#: in hand when it dies (a participant just after a dead one would be idle).
CRASHED = ("shipping", "payments", "inventory", "orders", NATS)
#: Enough that no order is refused for want of stock: every one must be CONFIRMED.
CRASH_STOCK = 1_000_000
#: A client sends a placement that met a 5xx, no answer or a 429 that says when to try
#: again (the same bytes, so the same request id: PlaceOrder stores one order per request
#: id) after a pause: the delay the refusal names (`RetryInfo`: orders' backlog full while
#: the kills hold the saga up), else RETRY_PAUSE_SECONDS, doubled for each try before
#: (at most LONGEST_PAUSE_SECONDS), so the clients waiting do not take the CPU the saga
#: needs to catch up; for as long as PATIENCE_SECONDS after it was first sent. Orders
#: takes a few seconds to come back from a kill.
RETRY_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 8.0
PATIENCE_SECONDS = 120.0
#: How long the stock may take to follow the orders once they ended: inventory takes a
#: confirmed order's units out when it consumes `order_confirmed`, after orders decided.
STOCK_SETTLE_SECONDS = 30.0
#: Each order is for 1, 2, 3, 1, ... units, so the stock counts units, not orders.
MAX_UNITS = 3


@dataclass(frozen=True)
class CrashPlan:
    orders: int
    rate: float
    """Orders placed per second, on schedule whatever the earlier ones are doing."""
    kill_at: tuple[float, ...]
    """When each kill happens, in seconds from the first order; see `crash_targets`."""
    drain_seconds: float
    """How long the orders may take to end after the burst (the saga retries a failed
    step after 1, 2, 5 and 10 s, and redelivers a dead consumer's events after 5 s)."""


SHORT_CRASH = CrashPlan(orders=40, rate=8.0, kill_at=(0.5, 1.5, 2.5, 3.5, 4.5),
                        drain_seconds=90.0)  # fmt: skip
FULL_CRASH = CrashPlan(orders=1500, rate=50.0,
                       kill_at=(3.0, 5.0, 7.0, 9.0, 11.0, 17.0, 19.0, 21.0, 23.0, 25.0),
                       drain_seconds=120.0)  # fmt: skip


def crash_targets(kills: int) -> list[str]:
    """What each kill hits: CRASHED in turn, round after round."""
    return [CRASHED[k % len(CRASHED)] for k in range(kills)]


def crash_schedule(mesh: trial.TrialMesh, plan: CrashPlan) -> KillSchedule:
    def victim(target: str) -> tuple[str, str]:
        if target == NATS:
            return NATS, NATS_PART
        return mesh.instances(target)[0]["instance"], "app"

    targets = crash_targets(len(plan.kill_at))
    return [(at, *victim(target)) for at, target in zip(plan.kill_at, targets, strict=True)]


@dataclass
class Placement:
    """One order a client places, and how that went."""

    request: bytes
    """The PlaceOrder request, sent again as it is on a retry."""
    units: int
    order_id: str | None = None
    """Set once PlaceOrder answered 200: the order is acknowledged."""
    retries: int = 0
    failure: str = ""
    """Why the last try failed."""
    sent_at: float = 0.0
    """`time.perf_counter()` when it was first sent."""


def order_units(orders: int) -> list[int]:
    return [1 + index % MAX_UNITS for index in range(orders)]


async def place_with_retries(
    place: Callable[[bytes], Awaitable[str]], placement: Placement
) -> None:
    """Place the order with `place` (`Shopper.place`) as a client does while orders
    restarts or refuses (see PATIENCE_SECONDS)."""
    placement.sent_at = time.perf_counter()
    while True:
        try:
            placement.order_id = await place(placement.request)
            return
        except CALL_ERRORS as error:
            placement.failure = f"{type(error).__name__}: {error}"
            pause = retry_pause(error, placement)
            if pause is None:
                return
        await asyncio.sleep(pause)


def retry_pause(error: Exception, placement: Placement) -> float | None:
    """How long to wait before sending `placement` again after `error` (see
    PATIENCE_SECONDS); None: give up."""
    delay = None
    if isinstance(error, loadgen.HttpStatusError):
        delay = loadgen.retry_delay(error.status, error.body)
    if delay is None and not worth_retrying(error):
        return None
    base = RETRY_PAUSE_SECONDS if delay is None else delay
    pause = min(base * 2.0**placement.retries, max(base, LONGEST_PAUSE_SECONDS))
    if time.perf_counter() - placement.sent_at + pause > PATIENCE_SECONDS:
        return None
    placement.retries += 1
    return pause


async def burst(shopper: Shopper, orders: int, rate: float) -> tuple[list[Placement], float]:
    """Place `orders` orders at `rate` per second; the placements, and when the last was
    answered (`time.monotonic()`)."""
    placements = [Placement(shopper.order_request(units), units)
                  for units in order_units(orders)]  # fmt: skip
    waiting = iter(placements)

    async def place_next() -> None:
        await place_with_retries(shopper.place, next(waiting))

    # Room for one order more than planned, so that rounding never drops the last.
    seconds = (orders + 1) / rate
    await loadgen.open_loop(place_next, rate=rate, duration=seconds, max_requests=orders)
    return placements, time.monotonic()


async def drain(buyer: Shopper, order_ids: Sequence[str], seconds: float) -> (
    dict[str, dict[str, Any]]
):  # fmt: skip
    """Read the orders through the edge until all have ended, `seconds` at most; each as
    last read (none for an order the edge never answered for)."""
    orders: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    while True:
        ended = await read_ends(buyer, order_ids, orders)
        if ended or time.monotonic() >= deadline:
            return orders
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)


def captures_by_order(mesh: trial.TrialMesh) -> Counter[str]:
    """Captures per order id in payments' own SQLite file, opened read-only. The schema
    allows one capture per payment, not one per order: an order paid twice is captured
    twice, and that is what this counts."""
    path = sqlite_path(mesh.run_dir, "payments")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT payments.order_id, count(*) FROM captures "
            "JOIN payments ON payments.id = captures.payment_id GROUP BY payments.order_id"
        ).fetchall()
    return Counter(dict(rows))


Stock = tuple[int, int]
"""(units on hand, units reserved) of a product."""


def stock_level(mesh: trial.TrialMesh, product_id: str) -> Stock | None:
    """The product's stock as the edge answers `GET /v1/products/ID/stock` (inventory's
    GetStock); None while inventory cannot answer."""
    url = f"{mesh.edge_url}/v1/products/{urllib.parse.quote(product_id)}/stock"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            level = json.loads(response.read())["stock"]
    except urllib.error.HTTPError as error:
        if error.code < 500:
            raise
        return None
    except OSError:
        return None
    # JSON leaves out a field at zero.
    return int(level.get("onHand", 0)), int(level.get("reserved", 0))


async def settled_stock(
    mesh: trial.TrialMesh, product_id: str, expected: Stock, seconds: float
) -> Stock | None:
    """The stock once it is `expected` or, after `seconds`, as last read."""
    deadline = time.monotonic() + seconds
    while True:
        level = await asyncio.to_thread(stock_level, mesh, product_id)
        if level == expected or time.monotonic() >= deadline:
            return level
        await asyncio.sleep(SETTLE_PAUSE_SECONDS)


async def dead_letters_by_consumer(mesh: trial.TrialMesh) -> Counter[str]:
    async with mesh.jetstream() as js:
        return Counter(letter.consumer for letter in await deadletters.dead_letters(js))


def status_of(orders: dict[str, dict[str, Any]], order_id: str) -> str:
    """The order's status as last read; "never read" when the edge never answered."""
    status: str = orders.get(order_id, {}).get("status", "never read")
    return status


def expected_stock(initial: int, placements: Iterable[Placement],
                   orders: dict[str, dict[str, Any]]) -> Stock:  # fmt: skip
    """The stock once every order ended: the confirmed orders' units gone, none reserved."""
    confirmed = [p for p in placements if p.order_id and status_of(orders, p.order_id) == CONFIRMED]
    sold = sum(p.units for p in confirmed)
    return initial - sold, 0


def reserved_and_captured_once(order: dict[str, Any]) -> bool:
    steps = Counter(step["name"] for step in order.get("history", ()))
    return steps["StockReserved"] == 1 and steps["PaymentCaptured"] == 1


def story(orders: dict[str, dict[str, Any]], order_ids: Sequence[str], shown: int = 3) -> str:
    """How the first `shown` of `order_ids` ended, as the edge last answered for them."""
    told = []
    for order_id in order_ids[:shown]:
        order = orders.get(order_id, {})
        history = [step["name"] for step in order.get("history", ())]
        reason = f" ({order['cancelReason']})" if order.get("cancelReason") else ""
        told.append(f"{order_id} {status_of(orders, order_id)} after {history}{reason}")
    return "; ".join(told)


@dataclass
class CrashOutcome:
    """What crash-saga saw, for `judge_crash`."""

    placements: list[Placement]
    kills: list[Kill]
    orders: dict[str, dict[str, Any]]
    """The acknowledged orders as the edge last answered for them."""
    captures: Counter[str]
    """Captures by order id in payments' database: every order it holds."""
    stock: Stock | None
    """The product's stock at the end; None: inventory never answered."""
    drain_seconds: float
    """From the last placement's answer until every order had ended (or the bound)."""
    restarted: Counter[str]
    """The supervisor's restarts during the scenario, by instance (and NATS)."""
    dead_letters: Counter[str]
    """Dead letters by consumer: a step given up on stops its order."""


def judge_crash(outcome: CrashOutcome, plan: CrashPlan) -> Verdict:
    """The crash-saga verdict."""
    placements, orders, captured = outcome.placements, outcome.orders, outcome.captures
    acknowledged = [p.order_id for p in placements if p.order_id is not None]
    unacknowledged = [p for p in placements if p.order_id is None]
    statuses = Counter(status_of(orders, order_id) for order_id in acknowledged)
    confirmed = [order_id for order_id in acknowledged if status_of(orders, order_id) == CONFIRMED]
    lost = [order_id for order_id in acknowledged if status_of(orders, order_id) != CONFIRMED]
    doubled = {order_id: n for order_id, n in captured.items() if n > 1}
    uncaptured = [order_id for order_id in confirmed if not captured[order_id]]
    odd = [order_id for order_id in confirmed if not reserved_and_captured_once(orders[order_id])]
    expected = expected_stock(CRASH_STOCK, placements, orders)
    on_hand, reserved = outcome.stock if outcome.stock is not None else ("-", "-")
    verdict = Verdict(
        "0 lost orders and 0 double captures while the saga's participants and nats-server "
        "are killed: every acknowledged order ends CONFIRMED, reserved and captured once, "
        "the stock falls by the confirmed units, and every killed process is replaced"
    )
    verdict.figures.update({
        "orders attempted": len(placements),
        "orders acknowledged": len(acknowledged),
        "client retries": sum(p.retries for p in placements),
        "most tries of one placement": max((p.retries + 1 for p in placements), default=0),
        "kills": len(outcome.kills),
        **{f"kill {n}": k.describe() for n, k in enumerate(outcome.kills, 1)},
        "supervisor restarts": f"{outcome.restarted.total()} ({counts(outcome.restarted)})",
        "confirmed": statuses[CONFIRMED],
        "cancelled": statuses[CANCELLED],
        "unfinished": len(acknowledged) - statuses[CONFIRMED] - statuses[CANCELLED],
        "lost orders": len(lost),
        "captures": captured.total(),
        "double captures": len(doubled),
        "confirmed, reserved and captured once": len(confirmed) - len(odd),
        "stock at the start": CRASH_STOCK,
        "units confirmed": CRASH_STOCK - expected[0],
        "stock on hand": on_hand,
        "stock reserved": reserved,
        "dead letters": counts(outcome.dead_letters),
        "seconds to drain": round(outcome.drain_seconds, 1),
    })  # fmt: skip
    verdict.require(
        not unacknowledged,
        f"{len(unacknowledged)} placements never acknowledged within {PATIENCE_SECONDS:g} s, "
        f"the first: {unacknowledged[0].failure if unacknowledged else ''}",
    )
    planned = len(plan.kill_at)
    verdict.require(len(outcome.kills) == planned, f"{len(outcome.kills)} of {planned} kills")
    for k in outcome.kills:
        verdict.require(k.died and k.replacement is not None, k.describe())
    verdict.require(not lost, f"{len(lost)} orders lost: {story(orders, lost)}")
    verdict.require(not doubled, f"orders captured more than once: {counts(Counter(doubled))}")
    verdict.require(not uncaptured, f"{len(uncaptured)} confirmed orders never captured: "
                    f"{', '.join(uncaptured[:3])}")  # fmt: skip
    verdict.require(not odd, f"{len(odd)} confirmed orders not reserved and captured once: "
                    f"{story(orders, odd)}")  # fmt: skip
    verdict.require(
        outcome.stock == expected,
        f"the stock is {on_hand} on hand and {reserved} reserved, not {expected[0]} and 0",
    )
    return verdict


async def play_crash_saga(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_CRASH if short else FULL_CRASH
    schedule = crash_schedule(mesh, plan)
    restarts_before = restarts(mesh)
    async with Shopper.opened(mesh, CRASH_STOCK) as shopper:
        victims = ", ".join(f"{instance} at {at:g} s" for at, instance, _ in schedule)
        say(f"{plan.orders} orders at {plan.rate:g}/s, killing {victims} ...")
        (placements, placed), killed = await asyncio.gather(
            burst(shopper, plan.orders, plan.rate), kill_on_schedule(mesh, schedule)
        )
        say("waiting for every acknowledged order to end ...")
        acknowledged = [p.order_id for p in placements if p.order_id is not None]
        orders = await drain(shopper, acknowledged, plan.drain_seconds)
        drained = time.monotonic() - placed
        expected = expected_stock(CRASH_STOCK, placements, orders)
        stock = await settled_stock(mesh, shopper.product_id, expected, STOCK_SETTLE_SECONDS)
    outcome = CrashOutcome(
        placements, killed, orders, captures_by_order(mesh), stock, drained,
        restarts(mesh) - restarts_before, await dead_letters_by_consumer(mesh),
    )  # fmt: skip
    return judge_crash(outcome, plan)


# -- faults -----------------------------------------------------------------------------

FAULTY = "processor"
FAULT_CALLER = "payments"
AUTHORIZE = "/shop.processor.v1.ProcessorService/Authorize"
#: What the processor's sidecar does to the calls it receives, each try judged alone:
#: UNAVAILABLE on 20%, and 10% held past the caller's per-try timeout.
INJECTED = {
    "abort": {"percent": 20, "grpc_status": "UNAVAILABLE"},
    "delay": {"percent": 10, "duration": "1500ms"},
}
MIN_RETRIED_SUCCESS = 0.995
#: Every order must have ended this long after it was placed.
END_WITHIN_SECONDS = 60.0
#: The stock covers this share of the units ordered, so the last orders are refused for
#: want of stock and compensated while the payment calls fail around them.
STOCK_SHARE = 0.8
#: Payments' sidecar counters of its calls to the processor, and what they tell.
CALLER_COUNTERS = {
    "payment call tries retried": "upstream_rq_retry",
    "retried calls that succeeded": "upstream_rq_retry_success",
    "tries past the per-try timeout": "upstream_rq_per_try_timeout",
    "calls out of retries": "upstream_rq_retry_limit_exceeded",
}
FAULTY_COUNTERS = {
    "tries the processor's sidecar received": "downstream_rq_total",
    "aborts injected": "fault.aborts_injected",
    "delays injected": "fault.delays_injected",
}


@dataclass(frozen=True)
class FaultPlan:
    orders: int
    rate: float
    calls: int
    """Authorize calls made as payments beside the orders' own: enough that the share
    of them that succeed says something at 99.5%."""
    concurrency: int = 16


SHORT_FAULTS = FaultPlan(orders=40, rate=8.0, calls=1500)
FULL_FAULTS = FaultPlan(orders=300, rate=10.0, calls=6000)


def _injected(topology: dict[str, Any]) -> None:
    topology["services"][FAULTY]["faults"] = INJECTED


async def authorize_as_payments(mesh: trial.TrialMesh, plan: FaultPlan) -> loadgen.Run:
    """Authorize calls through payments' sidecar, as payments makes them, each with a key
    of its own; an answer other than an approval counts as an error."""
    port = mesh.instances(FAULT_CALLER)[0]["outbound"][FAULTY]
    amount = money_pb2.Money(currency_code="EUR", units=25)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method: Any = channel.unary_unary(
            AUTHORIZE,
            request_serializer=processor_pb.AuthorizeRequest.SerializeToString,
            response_deserializer=processor_pb.AuthorizeResponse.FromString,
        )

        async def authorize() -> None:
            request = processor_pb.AuthorizeRequest(
                payment_token="tok_visa", amount=amount, idempotency_key=str(uuid.uuid4())
            )
            answer = await method(request, timeout=30)
            if answer.decision != processor_pb.AUTHORIZATION_DECISION_APPROVED:
                raise control.ControlError(f"not approved: {answer}")

        return await loadgen.closed_loop(
            authorize, concurrency=plan.concurrency, duration=600, max_requests=plan.calls
        )


@dataclass
class FaultOutcome:
    """What faults saw, for `judge_faults`."""

    placements: list[Placement]
    orders: dict[str, dict[str, Any]]
    ended_after: dict[str, float]
    """Seconds from placing each order until its end event arrived."""
    calls: loadgen.Run
    stock: Stock | None
    initial_stock: int
    caller: Counter[str]
    faulty: Counter[str]


def judge_faults(outcome: FaultOutcome) -> Verdict:
    """The faults verdict."""
    orders, calls = outcome.orders, outcome.calls
    acknowledged = [p.order_id for p in outcome.placements if p.order_id is not None]
    statuses = Counter(status_of(orders, order_id) for order_id in acknowledged)
    late = [o for o in acknowledged if outcome.ended_after.get(o, math.inf) > END_WITHIN_SECONDS]
    slowest = max(outcome.ended_after.values(), default=0.0)
    cancelled = [o for o in acknowledged if status_of(orders, o) == CANCELLED]
    not_for_stock = [o for o in cancelled if "StockRejected" not in history_of(orders[o])]
    ratio = success_ratio(calls)
    expected = expected_stock(outcome.initial_stock, outcome.placements, orders)
    on_hand, reserved = outcome.stock if outcome.stock is not None else ("-", "-")
    verdict = Verdict(
        f"with {FAULTY} calls failing (UNAVAILABLE on 20%, 10% held past the per-try "
        f"timeout), every saga ends within {END_WITHIN_SECONDS:g} s, >= "
        f"{MIN_RETRIED_SUCCESS:.1%} of {FAULTY} calls succeed after retries, no order is "
        "cancelled but for stock, and the stock never goes below zero"
    )
    verdict.figures.update({
        "orders placed": len(outcome.placements),
        "orders acknowledged": len(acknowledged),
        "confirmed": statuses[CONFIRMED],
        "cancelled (out of stock)": len(cancelled) - len(not_for_stock),
        "cancelled for another reason": len(not_for_stock),
        "unfinished": len(acknowledged) - statuses[CONFIRMED] - statuses[CANCELLED],
        f"ended within {END_WITHIN_SECONDS:g} s": len(acknowledged) - len(late),
        "slowest order, seconds": round(slowest, 1),
        f"{FAULTY} calls made as {FAULT_CALLER}": calls.completed,
        "succeeded after retries": len(calls.latencies),
        "success %": f"{ratio * 100:.2f}",
        "errors": counts(calls.errors),
        **{label: outcome.caller[name] for label, name in CALLER_COUNTERS.items()},
        **{label: outcome.faulty[name] for label, name in FAULTY_COUNTERS.items()},
        "stock at the start": outcome.initial_stock,
        "stock on hand": on_hand,
        "stock reserved": reserved,
    })  # fmt: skip
    unacknowledged = len(outcome.placements) - len(acknowledged)
    verdict.require(not unacknowledged, f"{unacknowledged} placements never acknowledged")
    verdict.require(not late, f"{len(late)} orders did not end within {END_WITHIN_SECONDS:g} s: "
                    f"{story(orders, late)}")  # fmt: skip
    verdict.require(
        ratio >= MIN_RETRIED_SUCCESS,
        f"{len(calls.latencies)} of {calls.completed} {FAULTY} calls succeeded",
    )
    verdict.require(not not_for_stock, f"cancelled for another reason than stock: "
                    f"{story(orders, not_for_stock)}")  # fmt: skip
    verdict.require(
        outcome.stock == expected and expected[0] >= 0,
        f"the stock is {on_hand} on hand and {reserved} reserved, not {expected[0]} and 0",
    )
    for label in ("aborts injected", "delays injected", "payment call tries retried"):
        verdict.require(verdict.figures[label] != 0, f"no {label}: the faults did not happen")
    return verdict


def history_of(order: dict[str, Any]) -> list[str]:
    return [step["name"] for step in order.get("history", ())]


async def play_faults(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_FAULTS if short else FULL_FAULTS
    initial = int(STOCK_SHARE * sum(order_units(plan.orders)))
    caller_admin = mesh.instances(FAULT_CALLER)[0]["admin_socket"]
    faulty_admin = mesh.instances(FAULTY)[0]["admin_socket"]
    caller_prefix, faulty_prefix = f"cluster.{FAULTY}.", "http.inbound."
    caller_before = envoy_counters(caller_admin, caller_prefix)
    faulty_before = envoy_counters(faulty_admin, faulty_prefix)
    async with Shopper.opened(mesh, initial) as shopper:
        say(f"{plan.orders} orders at {plan.rate:g}/s and {plan.calls} {FAULTY} calls as "
            f"{FAULT_CALLER}, while {FAULTY}'s sidecar injects faults ...")  # fmt: skip
        (placements, _), calls = await asyncio.gather(
            burst(shopper, plan.orders, plan.rate), authorize_as_payments(mesh, plan)
        )
        acknowledged = [p.order_id for p in placements if p.order_id is not None]
        say("waiting for every order to end ...")
        await shopper.wait(acknowledged, END_WITHIN_SECONDS)
        orders = await drain(shopper, acknowledged, SETTLE_PAUSE_SECONDS)
        ended_after = {
            p.order_id: shopper.ended[p.order_id].at - p.sent_at
            for p in placements
            if p.order_id is not None and p.order_id in shopper.ended
        }
        expected = expected_stock(initial, placements, orders)
        stock = await settled_stock(mesh, shopper.product_id, expected, STOCK_SETTLE_SECONDS)
    outcome = FaultOutcome(
        placements, orders, ended_after, calls, stock, initial,
        envoy_counters(caller_admin, caller_prefix) - caller_before,
        envoy_counters(faulty_admin, faulty_prefix) - faulty_before,
    )  # fmt: skip
    return judge_faults(outcome)


# -- the scenarios ----------------------------------------------------------------------


def _replicated(topology: dict[str, Any]) -> None:
    topology["services"][KILLED_SERVICE]["replicas"] = REPLICAS


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "kill-replica",
            f"{KILLED_SERVICE} at {REPLICAS} replicas, replicas' apps and sidecars killed "
            "under load through the edge",
            adjusted(_replicated),
            play_kill_replica,
        ),
        Scenario(
            "poison",
            "poison events mixed into good orders' events",
            adjusted(),
            play_poison,
        ),
        Scenario(
            "crash-saga",
            "the saga's participants and nats-server killed with SIGKILL during a burst of orders",
            adjusted(),
            play_crash_saga,
        ),
        Scenario(
            "faults",
            f"{FAULTY}'s sidecar fails and delays {FAULT_CALLER}' calls while orders go "
            "through the saga",
            adjusted(_injected),
            play_faults,
        ),
        Scenario(
            "overload",
            "open-loop load at multiples of the capacity of a read and of PlaceOrder, and a "
            "burst of wrong-password logins",
            adjusted(),
            overload.play,
            pinned=True,
        ),
    )
}
