"""`meshctl chaos poison`: good orders through the edge's REST API, mixed in time with
poison published straight onto the event stream: an undecodable payload, a well-formed
event on a subject that is not its own, an event of an order nobody placed.

Criterion: every poison message ends in the dead-letter stream once for each consumer it
reaches, nothing else does, and every good order is CONFIRMED with the normal history.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext

from mesh.control import deadletters
from mesh.control import local as control
from mesh.control.topology import Topology
from mesh.runtime import events
from mesh.tools import loadgen, trial
from mesh.tools.chaos.edge_orders import (
    SETTLE_PAUSE_SECONDS,
    read_ends,
)
from mesh.tools.chaos.frame import (
    Scenario,
    Verdict,
    adjusted,
    counts,
)
from mesh.tools.shopper import CONFIRMED, Shopper
from mesh.tools.trial import say
from shop.events.v1 import events_pb2

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


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
    plan = SHORT_POISON if short else FULL_POISON
    async with Shopper.opened(mesh, plan.good_orders) as buyer, mesh.jetstream() as js:
        say(f"{plan.good_orders} good orders, {plan.poison} poison messages ...")
        placed, refused, sent = await shop_and_poison(buyer, js, plan)
        expected = expected_dead_letters(sent, mesh.topology())
        say("waiting for the orders to end and the poison to reach the dead letters ...")
        orders, tally = await settle(buyer, js, placed, expected, plan.settle_seconds)
    return judge_poison(orders, refused, sent, tally, plan)


SCENARIO = Scenario(
    "poison",
    "poison events mixed into good orders' events",
    adjusted(),
    play,
)
