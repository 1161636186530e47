"""`meshctl chaos crash-saga`: a burst of orders through the edge's REST API at a fixed
rate, each placement that meets a 5xx or a broken connection sent again with the same
request id, while the app of each saga participant (shipping, payments, inventory,
orders) and nats-server are killed in turn with SIGKILL by their pids (the supervisor
restarts them).

Criterion: 0 lost orders (every acknowledged order ends CONFIRMED) and 0 double captures
(in payments' database); each confirmed order was reserved and captured once, the stock
fell by exactly the confirmed units, and every killed process died and was replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mesh.control import deadletters
from mesh.runtime.service import sqlite_path
from mesh.tools import trial
from mesh.tools.chaos.edge_orders import (
    PATIENCE_SECONDS,
    STOCK_SETTLE_SECONDS,
    Placement,
    Stock,
    burst,
    drain,
    expected_stock,
    settled_stock,
    status_of,
    story,
)
from mesh.tools.chaos.frame import (
    NATS,
    NATS_PART,
    Kill,
    KillSchedule,
    Scenario,
    Verdict,
    adjusted,
    counts,
    kill_on_schedule,
    restarts,
)
from mesh.tools.shopper import CANCELLED, CONFIRMED, Shopper
from mesh.tools.trial import say

#: What the kills hit, in turn: each saga participant's app, then nats-server. Against
#: the flow of an order, so that what feeds the next victim is running and it has events
#: in hand when it dies (a participant just after a dead one would be idle).
CRASHED = ("shipping", "payments", "inventory", "orders", NATS)
#: Enough that no order is refused for want of stock: every one must be CONFIRMED.
CRASH_STOCK = 1_000_000


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


async def dead_letters_by_consumer(mesh: trial.TrialMesh) -> Counter[str]:
    async with mesh.jetstream() as js:
        return Counter(letter.consumer for letter in await deadletters.dead_letters(js))


def reserved_and_captured_once(order: dict[str, Any]) -> bool:
    steps = Counter(step["name"] for step in order.get("history", ()))
    return steps["StockReserved"] == 1 and steps["PaymentCaptured"] == 1


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


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
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


SCENARIO = Scenario(
    "crash-saga",
    "the saga's participants and nats-server killed with SIGKILL during a burst of orders",
    adjusted(),
    play,
)
