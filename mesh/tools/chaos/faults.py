"""`meshctl chaos faults`: processor's sidecar injects faults into the calls it receives
(Envoy's fault filter: UNAVAILABLE on 20% of tries, 10% held past the caller's per-try
timeout) while orders go through the saga, with stock for only part of them, and
Authorize calls are made through payments' sidecar as payments makes them.

Criterion: every order ends within 60 s, >= 99.5% of those calls succeed after the
mesh's retries, no order is cancelled but for stock, and the stock never goes below zero.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import grpc
from google.type import money_pb2

from mesh.control import local as control
from mesh.tools import loadgen, trial
from mesh.tools.chaos.edge_orders import (
    SETTLE_PAUSE_SECONDS,
    STOCK_SETTLE_SECONDS,
    Placement,
    Stock,
    burst,
    drain,
    expected_stock,
    order_units,
    settled_stock,
    status_of,
    story,
)
from mesh.tools.chaos.frame import (
    Scenario,
    Verdict,
    adjusted,
    counts,
    envoy_counters,
    success_ratio,
)
from mesh.tools.shopper import CANCELLED, CONFIRMED, Shopper
from mesh.tools.trial import say
from shop.processor.v1 import processor_service_pb2 as processor_pb

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


async def play(mesh: trial.TrialMesh, short: bool) -> Verdict:
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


SCENARIO = Scenario(
    "faults",
    f"{FAULTY}'s sidecar fails and delays {FAULT_CALLER}' calls while orders go through the saga",
    adjusted(_injected),
    play,
)
