"""`meshctl chaos SCENARIO`: break part of a mesh on purpose and check that it copes.

Each scenario runs against a mesh of its own (`mesh.trial`: mesh.yaml with the scenario's
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
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nats.js import JetStreamContext

from mesh import bench, control, events, loadgen, trial
from mesh.bench import say
from mesh.shopper import CANCELLED, CONFIRMED, Shopper
from mesh.supervisor import pid_alive
from mesh.topology import Topology
from shop.events.v1 import events_pb2

#: Tracing as in production (see `meshctl bench`): the scenarios are about failures.
SAMPLING_PERCENT = 1.0
POLL_SECONDS = 0.1
#: How long the supervisor may take to notice a killed process and start another.
REPLACE_TIMEOUT_SECONDS = 30.0

T = TypeVar("T")


# -- the frame --------------------------------------------------------------------------


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


def run(root: Path, run_dir: Path, name: str, short: bool) -> int:
    """`meshctl chaos NAME [--short]`: 0 on PASS, 1 on FAIL."""
    scenario = SCENARIOS[name]
    title = f"{name} ({'short' if short else 'full'} form): {scenario.summary}"
    say(title)
    began = time.monotonic()
    with trial.started(root, run_dir, scenario.adjust, say) as mesh:
        verdict = asyncio.run(scenario.play(mesh, short))
    verdict.figures["seconds"] = round(time.monotonic() - began, 1)
    print(title)
    print(verdict.report(), flush=True)
    return 0 if verdict.passed else 1


def adjusted(change: trial.Adjust | None = None) -> trial.Adjust:
    """mesh.yaml without the edge's rate limit (a scenario is about failures, not about the
    edge refusing its load), traced as in production, then `change`d."""
    lifted = bench.bench_topology(SAMPLING_PERCENT)

    def adjust(topology: dict[str, Any]) -> None:
        lifted(topology)
        if change is not None:
            change(topology)

    return adjust


def topology_of(mesh: trial.TrialMesh) -> Topology:
    """The topology `mesh` runs: mesh.yaml as the scenario adjusted it."""
    return control.load_topology(mesh.root, mesh.config)


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


@dataclass
class Kill:
    """One process killed, and what became of it."""

    instance: str
    part: str
    """"app" or "sidecar"."""
    pid: int
    died: bool = False
    replacement: int | None = None

    def describe(self) -> str:
        fate = "died" if self.died else "still alive"
        after = f"replaced by pid {self.replacement}" if self.replacement else "not replaced"
        return f"{self.instance} {self.part} pid {self.pid} {fate}, {after}"


def kill_targets(kills: int, replicas: int) -> list[tuple[int, str]]:
    """(replica, part) of each kill: app and sidecar in turn, each on the next replica, so
    no two kills in a row hit the same replica or the same kind of process."""
    return [(k % replicas, "app" if k % 2 == 0 else "sidecar") for k in range(kills)]


async def kill(mesh: trial.TrialMesh, instance: str, part: str) -> Kill:
    """SIGKILL `instance`'s `part` by the pid in state.json; wait for the supervisor to
    start another."""
    key = f"{part}_pid"
    pid: int = mesh.instance(instance)[key]
    os.kill(pid, signal.SIGKILL)
    killed = Kill(instance, part, pid)
    killed.died = await poll(lambda: not pid_alive(pid), REPLACE_TIMEOUT_SECONDS)

    def replacement() -> int | None:
        now: int | None = mesh.instance(instance)[key]
        return now if now != pid and pid_alive(now) else None

    killed.replacement = await poll(replacement, REPLACE_TIMEOUT_SECONDS)
    say(f"  killed {killed.describe()}")
    return killed


async def kill_on_schedule(mesh: trial.TrialMesh, plan: KillPlan) -> list[Kill]:
    instances = [i["instance"] for i in mesh.instances(KILLED_SERVICE)]
    targets = kill_targets(len(plan.kill_at), len(instances))
    start = time.monotonic()
    kills = []
    for at, (replica, part) in zip(plan.kill_at, targets, strict=True):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        kills.append(await kill(mesh, instances[replica], part))
    return kills


async def load_while_killing(
    mesh: trial.TrialMesh, product_id: str, plan: KillPlan
) -> tuple[loadgen.Run, list[Kill]]:
    """GetProduct through the edge as native gRPC, every answer checked, while killing."""
    path = bench.paths(mesh, topology_of(mesh).namespace, product_id)["edge-grpc"]
    async with path.connect() as call:

        async def answered() -> None:
            path.check(await call())

        await answered()  # the path works before anything is broken
        load = loadgen.closed_loop(
            answered, concurrency=plan.concurrency, duration=plan.load_seconds,
            max_requests=plan.max_calls,
        )  # fmt: skip
        return await asyncio.gather(load, kill_on_schedule(mesh, plan))


def envoy_counters(admin_port: int, prefix: str) -> Counter[str]:
    """The counters under `prefix` (without it) of the Envoy whose admin is `admin_port`."""
    query = urllib.parse.urlencode({"filter": f"^{re.escape(prefix)}"})
    url = f"http://127.0.0.1:{admin_port}/stats?{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            found[name.removeprefix(prefix)] = int(value)
    return found


def restarts(mesh: trial.TrialMesh) -> Counter[str]:
    return Counter({i["instance"]: i["restarts"] for i in mesh.instances(KILLED_SERVICE)})


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
    product_id = bench.stored_product(mesh)
    edge_admin, cluster = mesh.edge["admin_port"], f"cluster.{KILLED_SERVICE}."
    restarts_before, edge_before = restarts(mesh), envoy_counters(edge_admin, cluster)
    kill_times = ", ".join(f"{at:g}" for at in plan.kill_at)
    say(f"{plan.load_seconds:g} s of load, killing at {kill_times} s ...")
    run, kills = await load_while_killing(mesh, product_id, plan)
    verdict = judge_kills(run, kills, restarts(mesh) - restarts_before, len(plan.kill_at))
    edge = envoy_counters(edge_admin, cluster) - edge_before
    verdict.figures.update({label: edge[name] for label, name in EDGE_COUNTERS.items()})
    return verdict


# -- poison -----------------------------------------------------------------------------

NORMAL_HISTORY = ("OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentScheduled",
                  "OrderConfirmed")  # fmt: skip
TERMINAL = (CONFIRMED, CANCELLED)


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
    def of(cls, expected: dict[DeadLetterKey, str], letters: Iterable[events.DeadLetter]) -> (
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
        for order_id in order_ids:
            if orders.get(order_id, {}).get("status") not in TERMINAL:
                orders[order_id] = await buyer.fetch(order_id)
        tally = DeadLetterTally.of(expected, await events.dead_letters(js))
        ended = all(order["status"] in TERMINAL for order in orders.values())
        if (ended and not tally.missing) or time.monotonic() >= deadline:
            return orders, tally
        await asyncio.sleep(0.5)


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
        expected = expected_dead_letters(sent, topology_of(mesh))
        say("waiting for the orders to end and the poison to reach the dead letters ...")
        orders, tally = await settle(buyer, js, placed, expected, plan.settle_seconds)
    return judge_poison(orders, refused, sent, tally, plan)


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
    )
}
