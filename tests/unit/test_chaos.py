"""The chaos scenarios' arithmetic and bookkeeping, without a mesh."""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError

from mesh import cli
from mesh.control.deadletters import DeadLetter
from mesh.control.state import STATE_FILE
from mesh.control.topology import load
from mesh.runtime.storage import event_subject
from mesh.tools import chaos, loadgen
from mesh.tools.chaos import crash_saga, edge_orders, faults, frame, kill_replica, poison
from mesh.tools.shopper import CANCELLED, CONFIRMED
from mesh.tools.trial import TrialMesh
from shop.events.v1 import events_pb2

ROOT = Path(__file__).resolve().parents[2]


def run(successes: int, errors: int = 0, dropped: int = 0) -> loadgen.Run:
    return loadgen.Run(
        mode="test",
        seconds=1.0,
        latencies=array("d", [0.001] * successes),
        errors=Counter({"UNAVAILABLE": errors} if errors else {}),
        dropped=dropped,
    )


def replaced(instance: str, part: str = "app") -> frame.Kill:
    return frame.Kill(instance, part, pid=100, died=True, replacement=200)


def test_a_verdict_passes_until_a_requirement_fails_and_then_says_which() -> None:
    verdict = frame.Verdict("all is well", {"calls": 3})
    verdict.require(True, "never said")
    assert verdict.passed
    assert verdict.report().splitlines() == ["  calls: 3", "PASS: all is well"]
    verdict.require(False, "one call failed")
    assert not verdict.passed
    assert verdict.report().splitlines()[-1] == "FAIL: all is well; but one call failed"


def test_the_success_ratio_counts_errors_and_dropped_calls_as_failures() -> None:
    assert frame.success_ratio(run(successes=97, errors=2, dropped=1)) == 0.97
    assert frame.success_ratio(run(successes=0)) == 0.0


def test_kill_replica_passes_at_99_percent_and_fails_below() -> None:
    kills, restarted = [replaced("catalog-0")], Counter({"catalog-0": 1})
    assert kill_replica.judge_kills(run(990, errors=10), kills, restarted, planned=1).passed
    failed = kill_replica.judge_kills(run(989, errors=11), kills, restarted, planned=1)
    assert failed.failures == ["989 of 1000 calls succeeded"]
    assert failed.figures["errors"] == "UNAVAILABLE 11"


def test_kill_replica_fails_when_a_killed_process_was_not_replaced() -> None:
    kept = frame.Kill("catalog-1", "sidecar", pid=100, died=True)
    verdict = kill_replica.judge_kills(run(1000), [kept], Counter(), planned=1)
    assert verdict.failures == [
        "catalog-1 sidecar pid 100 died, not replaced",
        "the supervisor reports restarts none for kills catalog-1 1",
    ]


def test_kill_replica_fails_when_the_supervisor_restarted_what_was_not_killed() -> None:
    restarted = Counter({"catalog-0": 1, "catalog-2": 1})
    verdict = kill_replica.judge_kills(run(1000), [replaced("catalog-0")], restarted, planned=1)
    assert not verdict.passed
    assert verdict.figures["catalog restarts"] == "2 (catalog-0 1, catalog-2 1)"


def test_kills_alternate_app_and_sidecar_on_the_next_replica_each_time() -> None:
    targets = kill_replica.kill_targets(5, replicas=3)
    assert targets == [(0, "app"), (1, "sidecar"), (2, "app"), (0, "sidecar"), (1, "app")]


@pytest.mark.parametrize(("orders", "poisons"), [(10, 6), (100, 30), (3, 7)])
def test_poison_is_spread_among_the_orders_never_before_the_first(
    orders: int, poisons: int
) -> None:
    after = poison.poison_after(orders, poisons)
    assert after.total() == poisons
    assert set(after) <= set(range(orders))  # each follows one of the orders
    if poisons < orders:
        assert max(after.values()) == 1


def test_each_kind_of_poison_is_poison_in_its_own_way() -> None:
    with pytest.raises(DecodeError):
        events_pb2.EventEnvelope.FromString(poison.undecodable(0).data)
    misplaced = poison.misplaced("order-1")
    envelope = events_pb2.EventEnvelope.FromString(misplaced.data)
    assert envelope.order_id == "order-1"
    assert event_subject(envelope) != misplaced.subject
    unknown = poison.unknown_order()
    assert event_subject(events_pb2.EventEnvelope.FromString(unknown.data)) == unknown.subject
    kinds = [poison.poison(i, "order-1").kind for i in range(6)]
    assert kinds == ["undecodable", "misplaced", "unknown-order"] * 2


def test_poison_is_expected_in_the_dead_letters_of_every_consumer_of_its_subject() -> None:
    topology = load(ROOT / "mesh.yaml")
    sent = [poison.undecodable(0), poison.misplaced("order-1"), poison.unknown_order()]
    expected = poison.expected_dead_letters(sent, topology)
    reached = {kind: sorted(c for (c, _), k in expected.items() if k == kind)
               for kind in ("undecodable", "misplaced", "unknown-order")}  # fmt: skip
    assert reached == {
        "undecodable": ["inventory", "payments", "shipping"],  # consumers of order_placed
        "misplaced": ["orders", "shipping"],  # of payment_captured
        "unknown-order": ["orders", "payments"],  # of stock_reserved
    }


def letter(consumer: str, data: bytes) -> DeadLetter:
    return DeadLetter(1, consumer, "shop.orders.order_placed", "malformed event", "", data)


def test_the_tally_tells_missing_poison_from_dead_letters_that_are_not_poison() -> None:
    expected = {("inventory", b"a"): "undecodable", ("payments", b"a"): "undecodable"}
    found = [letter("inventory", b"a"), letter("inventory", b"a"), letter("orders", b"good")]
    tally = poison.DeadLetterTally.of(expected, found)
    assert tally.missing == [("payments", b"a")]
    assert tally.unexpected == 2  # a second copy, and a good event
    assert tally.by_consumer() == "inventory 1/1, payments 0/1"


def confirmed(order_id: str, history: tuple[str, ...] = poison.NORMAL_HISTORY) -> dict[str, object]:
    return {"id": order_id, "status": CONFIRMED, "history": [{"name": s} for s in history]}


def test_poison_fails_for_a_good_order_whose_history_the_poison_changed() -> None:
    plan = poison.PoisonPlan(good_orders=2, poison=1, settle_seconds=1.0)
    sent = [poison.undecodable(0)]
    tally = poison.DeadLetterTally.of({("inventory", sent[0].data): "undecodable"},
                                     [letter("inventory", sent[0].data)])  # fmt: skip
    odd = (*poison.NORMAL_HISTORY[:2], "PaymentCaptured", *poison.NORMAL_HISTORY[2:])
    orders = {"a": confirmed("a"), "b": confirmed("b")}
    assert poison.judge_poison(orders, [], sent, tally, plan).passed
    orders["b"] = confirmed("b", odd)
    verdict = poison.judge_poison(orders, [], sent, tally, plan)
    assert verdict.failures == [f"order b is {CONFIRMED} after {list(odd)}"]
    assert verdict.figures["confirmed with the normal history"] == 1


def test_kill_finds_nats_server_where_the_supervisor_records_it(tmp_path: Path) -> None:
    state = {"nats": {"pid": 41}, "instances": [
        {"service": "orders", "instance": "orders-0", "app_pid": 42, "sidecar_pid": 43},
    ]}  # fmt: skip
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    mesh = TrialMesh(ROOT, tmp_path)
    assert frame.pid_of(mesh, frame.NATS, frame.NATS_PART) == 41
    assert frame.pid_of(mesh, "orders-0", "app") == 42
    assert frame.pid_of(mesh, "orders-0", "sidecar") == 43


def test_crash_saga_kills_each_participant_then_nats_round_after_round() -> None:
    assert crash_saga.crash_targets(7) == [
        "shipping", "payments", "inventory", "orders", frame.NATS, "shipping", "payments",
    ]  # fmt: skip
    short, full = crash_saga.SHORT_CRASH, crash_saga.FULL_CRASH
    assert Counter(crash_saga.crash_targets(len(short.kill_at))) == Counter(crash_saga.CRASHED)
    assert Counter(crash_saga.crash_targets(len(full.kill_at))) == Counter(crash_saga.CRASHED * 2)
    for plan in (short, full):  # every kill falls within the burst of orders
        assert max(plan.kill_at) < plan.orders / plan.rate


@pytest.mark.parametrize(
    ("error", "again"),
    [
        (loadgen.HttpStatusError(503, b"upstream connect error"), True),
        (loadgen.HttpStatusError(500, b"internal"), True),
        (loadgen.HttpStatusError(400, b"bad request"), False),
        (loadgen.HttpStatusError(409, b"conflict"), False),
        (ConnectionResetError(), True),
        (asyncio.IncompleteReadError(b"", 10), True),
    ],
)
def test_only_a_5xx_or_no_answer_is_worth_retrying(error: Exception, again: bool) -> None:
    assert edge_orders.worth_retrying(error) is again


class FlakyOrders:
    """PlaceOrder that fails `failures` times, then acknowledges; it records each request."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.requests: list[bytes] = []

    async def place(self, request: bytes) -> str:
        self.requests.append(request)
        if self.failures:
            raise self.failures.pop(0)
        return "order-1"


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_orders, "RETRY_PAUSE_SECONDS", 0.0)


@pytest.mark.usefixtures("no_pause")
async def test_a_placement_is_sent_again_as_it_was_until_acknowledged() -> None:
    orders = FlakyOrders(loadgen.HttpStatusError(503, b""), ConnectionRefusedError())
    placement = edge_orders.Placement(b"POST /v1/orders request-1", units=2)
    await edge_orders.place_with_retries(orders.place, placement)
    assert placement.order_id == "order-1"
    assert placement.retries == 2
    assert orders.requests == [b"POST /v1/orders request-1"] * 3


async def test_a_placement_gives_up_after_its_patience_and_never_retries_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = pauses_taken(monkeypatch)
    down = FlakyOrders(*[loadgen.HttpStatusError(503, b"no healthy upstream")] * 100)
    placement = edge_orders.Placement(b"request", units=1)
    await edge_orders.place_with_retries(down.place, placement)
    assert placement.order_id is None
    assert (
        sum(pauses)
        <= edge_orders.PATIENCE_SECONDS
        < sum(pauses) + edge_orders.LONGEST_PAUSE_SECONDS
    )
    assert len(down.requests) == len(pauses) + 1
    assert placement.failure == "HttpStatusError: HTTP 503: no healthy upstream"
    refused = FlakyOrders(loadgen.HttpStatusError(400, b"bad request"))
    placement = edge_orders.Placement(b"request", units=1)
    await edge_orders.place_with_retries(refused.place, placement)
    assert (placement.order_id, placement.retries, len(refused.requests)) == (None, 0, 1)


HAPPY = ("OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentScheduled", "OrderConfirmed")


def crashed(orders: int = 3) -> crash_saga.CrashOutcome:
    """An outcome that passes: every order acknowledged, confirmed, captured once."""
    placements = [edge_orders.Placement(b"", units, f"o{n}")
                  for n, units in enumerate(edge_orders.order_units(orders))]  # fmt: skip
    ended = {p.order_id: confirmed(p.order_id, HAPPY) for p in placements if p.order_id}
    kills = [replaced(f"{target}-0") for target in crash_saga.crash_targets(5)]
    sold = sum(p.units for p in placements)
    return crash_saga.CrashOutcome(
        placements=placements, kills=kills, orders=ended,
        captures=Counter(dict.fromkeys(ended, 1)),
        stock=(crash_saga.CRASH_STOCK - sold, 0), drain_seconds=1.0, restarted=Counter(),
        dead_letters=Counter(),
    )  # fmt: skip


def judged(outcome: crash_saga.CrashOutcome) -> frame.Verdict:
    return crash_saga.judge_crash(outcome, crash_saga.SHORT_CRASH)


def test_crash_saga_passes_when_every_order_is_confirmed_and_captured_once() -> None:
    verdict = judged(crashed())
    assert verdict.passed, verdict.failures
    figures = verdict.figures
    assert (figures["orders acknowledged"], figures["confirmed"], figures["lost orders"]) == (
        3, 3, 0,
    )  # fmt: skip
    assert (figures["captures"], figures["double captures"]) == (3, 0)
    assert figures["units confirmed"] == 1 + 2 + 3
    assert figures["stock on hand"] == crash_saga.CRASH_STOCK - 6


def test_a_cancelled_order_is_lost_and_its_units_stay_in_the_stock() -> None:
    outcome = crashed()
    cancelled: dict[str, Any] = {
        "id": "o1", "status": CANCELLED, "cancelReason": "Payment declined: card_declined",
        "history": [{"name": "OrderPlaced"}, {"name": "StockRejected"}],
    }  # fmt: skip
    outcome.orders["o1"] = cancelled
    outcome.captures.pop("o1")
    outcome.stock = (crash_saga.CRASH_STOCK - 4, 0)  # order o1 was for 2 units
    verdict = judged(outcome)
    assert verdict.failures == [
        f"1 orders lost: o1 {CANCELLED} after ['OrderPlaced', 'StockRejected'] "
        "(Payment declined: card_declined)"
    ]
    assert (verdict.figures["cancelled"], verdict.figures["lost orders"]) == (1, 1)


def test_an_order_the_edge_never_answered_for_is_lost() -> None:
    outcome = crashed()
    del outcome.orders["o2"]
    outcome.stock = (crash_saga.CRASH_STOCK - 3, 0)
    verdict = judged(outcome)
    assert verdict.failures == ["1 orders lost: o2 never read after []"]
    assert verdict.figures["unfinished"] == 1


def test_a_second_capture_of_any_order_fails_crash_saga() -> None:
    outcome = crashed()
    outcome.captures["o0"] = 2
    outcome.captures["not-acknowledged"] = 2
    verdict = judged(outcome)
    assert verdict.failures == ["orders captured more than once: not-acknowledged 2, o0 2"]
    assert verdict.figures["double captures"] == 2


def test_a_confirmed_order_never_captured_fails_crash_saga() -> None:
    outcome = crashed()
    del outcome.captures["o1"]
    assert judged(outcome).failures == ["1 confirmed orders never captured: o1"]


def test_a_step_twice_in_a_confirmed_order_history_fails_crash_saga() -> None:
    outcome = crashed()
    twice = (*HAPPY[:3], "PaymentCaptured", *HAPPY[3:])
    outcome.orders["o0"] = confirmed("o0", twice)
    verdict = judged(outcome)
    assert verdict.failures == [
        f"1 confirmed orders not reserved and captured once: o0 {CONFIRMED} after {list(twice)}"
    ]
    assert verdict.figures["confirmed, reserved and captured once"] == 2


@pytest.mark.parametrize(
    "stock", [(crash_saga.CRASH_STOCK - 6, 1), (crash_saga.CRASH_STOCK - 5, 0), None]
)
def test_stock_left_reserved_or_miscounted_fails_crash_saga(
    stock: edge_orders.Stock | None,
) -> None:
    outcome = crashed()
    outcome.stock = stock
    [failure] = judged(outcome).failures
    assert failure.startswith("the stock is ")
    assert failure.endswith(f"not {crash_saga.CRASH_STOCK - 6} and 0")


def test_a_placement_never_acknowledged_or_a_kill_not_replaced_fails_crash_saga() -> None:
    outcome = crashed()
    outcome.placements.append(edge_orders.Placement(b"", 1, failure="HttpStatusError: HTTP 503: x"))
    outcome.kills[4] = frame.Kill(frame.NATS, frame.NATS_PART, pid=7, died=True)
    verdict = judged(outcome)
    assert verdict.failures == [
        f"1 placements never acknowledged within {edge_orders.PATIENCE_SECONDS:g} s, the first: "
        "HttpStatusError: HTTP 503: x",
        "nats server pid 7 died, not replaced",
    ]
    assert (verdict.figures["orders attempted"], verdict.figures["orders acknowledged"]) == (4, 3)


def test_every_scenario_is_named_in_the_command_line_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["chaos", "--help"])
    # argparse wraps the help at a name's hyphen as readily as at a space
    shown = " ".join(re.sub(r"-\n\s+", "-", capsys.readouterr().out).split())
    assert sorted(chaos.SCENARIOS) == [
        "bad-canary",
        "crash-saga",
        "faults",
        "hung-dependency",
        "kill-replica",
        "overload",
        "poison",
    ]
    assert all(name in shown for name in chaos.SCENARIOS)


def test_an_unknown_scenario_is_refused_before_any_mesh_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["chaos", "no-such", "--run-dir", str(tmp_path / "trial")])
    assert exited.value.code == 2
    told = capsys.readouterr().err
    assert told.startswith("usage: meshctl chaos")
    assert "'kill-replica', 'poison', 'crash-saga', 'faults', 'overload'" in told
    assert not (tmp_path / "trial").exists()


REJECTED = ("OrderPlaced", "StockRejected", "OrderCancelled")


def faulted(calls: int = 1000, failed: int = 0) -> faults.FaultOutcome:
    """An outcome that passes: orders o0-o2 confirmed, o3 refused for stock, every order
    ended in a few seconds, the faults injected and retried."""
    placements = [edge_orders.Placement(b"", units, f"o{n}")
                  for n, units in enumerate(edge_orders.order_units(4))]  # fmt: skip
    ended = {p.order_id: confirmed(p.order_id, HAPPY) for p in placements[:3] if p.order_id}
    ended["o3"] = {"id": "o3", "status": CANCELLED,
                   "history": [{"name": name} for name in REJECTED]}  # fmt: skip
    counters = Counter({"upstream_rq_retry": 300, "fault.aborts_injected": 250,
                        "fault.delays_injected": 120})  # fmt: skip
    return faults.FaultOutcome(
        placements=placements, orders=ended, ended_after=dict.fromkeys(ended, 3.0),
        calls=run(calls - failed, errors=failed), stock=(10 - 6, 0), initial_stock=10,
        caller=counters, faulty=counters,
    )  # fmt: skip


def test_faults_passes_when_orders_end_in_time_and_retries_save_the_calls() -> None:
    verdict = faults.judge_faults(faulted(calls=1000, failed=5))
    assert verdict.passed, verdict.failures
    figures = verdict.figures
    assert (figures["confirmed"], figures["cancelled (out of stock)"]) == (3, 1)
    assert figures["success %"] == "99.50"
    assert figures["aborts injected"] == 250


def test_faults_fails_below_the_success_share_after_retries() -> None:
    verdict = faults.judge_faults(faulted(calls=1000, failed=6))
    assert verdict.failures == ["994 of 1000 processor calls succeeded"]


def test_faults_fails_on_a_late_order_or_one_cancelled_for_its_payment() -> None:
    outcome = faulted()
    outcome.ended_after["o1"] = 61.0
    outcome.orders["o2"] = {"id": "o2", "status": CANCELLED, "history": [
        {"name": name} for name in ("OrderPlaced", "StockReserved", "PaymentDeclined")
    ]}  # fmt: skip
    outcome.stock = (10 - 3, 0)  # o2 was cancelled: only o0 and o1 (1 + 2 units) sold
    failures = faults.judge_faults(outcome).failures
    assert failures[0].startswith("1 orders did not end within 60 s: o1 ")
    assert failures[1].startswith("cancelled for another reason than stock: o2 ")
    assert len(failures) == 2


def test_faults_fails_when_no_fault_was_injected_or_the_stock_is_off() -> None:
    outcome = faulted()
    outcome.faulty = Counter()
    outcome.stock = (5, 1)
    failures = faults.judge_faults(outcome).failures
    assert failures == [
        "the stock is 5 on hand and 1 reserved, not 4 and 0",
        "no aborts injected: the faults did not happen",
        "no delays injected: the faults did not happen",
    ]


def backlog_full(delay: str = "1s") -> loadgen.HttpStatusError:
    body = {"code": 8, "message": "you have 100 orders still being processed",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                         "retryDelay": delay}]}  # fmt: skip
    return loadgen.HttpStatusError(429, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("error", "delay"),
    [
        (backlog_full("1s"), 1.0),
        (backlog_full("0.050s"), 0.05),
        (loadgen.HttpStatusError(429, b'{"code": 8, "message": "rate limited"}'), None),
        (loadgen.HttpStatusError(429, b"not json"), None),
        (loadgen.HttpStatusError(503, json.dumps({"details": []}).encode()), None),
    ],
)
def test_a_refusal_to_wait_names_its_delay_in_its_retry_info(
    error: loadgen.HttpStatusError, delay: float | None
) -> None:
    assert loadgen.retry_delay(error.status, error.body) == delay


def pauses_taken(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses `place_with_retries` takes from now on, none of them slept, and each
    counted as passed time."""
    pauses: list[float] = []
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    return pauses


async def test_a_placement_refused_for_the_backlog_waits_as_told_and_longer_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses = pauses_taken(monkeypatch)
    orders = FlakyOrders(*[backlog_full("1s")] * 8, loadgen.HttpStatusError(503, b""))
    placement = edge_orders.Placement(b"request", units=1)
    await edge_orders.place_with_retries(orders.place, placement)
    assert (placement.order_id, placement.retries) == ("order-1", 9)
    longest = edge_orders.LONGEST_PAUSE_SECONDS
    assert pauses == [1.0, 2.0, 4.0, longest, longest, longest, longest, longest, longest]
    monkeypatch.setattr(edge_orders, "PATIENCE_SECONDS", 0.5)
    placement = edge_orders.Placement(b"request", units=1)
    await edge_orders.place_with_retries(FlakyOrders(backlog_full("1s")).place, placement)
    assert placement.order_id is None
    assert placement.failure.startswith("HttpStatusError: HTTP 429")
