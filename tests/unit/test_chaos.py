"""The chaos scenarios' arithmetic and bookkeeping, without a mesh."""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError

from mesh import chaos, cli, loadgen
from mesh.events import DeadLetter
from mesh.shopper import CONFIRMED
from mesh.storage import event_subject
from mesh.topology import load
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


def replaced(instance: str, part: str = "app") -> chaos.Kill:
    return chaos.Kill(instance, part, pid=100, died=True, replacement=200)


def test_a_verdict_passes_until_a_requirement_fails_and_then_says_which() -> None:
    verdict = chaos.Verdict("all is well", {"calls": 3})
    verdict.require(True, "never said")
    assert verdict.passed
    assert verdict.report().splitlines() == ["  calls: 3", "PASS: all is well"]
    verdict.require(False, "one call failed")
    assert not verdict.passed
    assert verdict.report().splitlines()[-1] == "FAIL: all is well; but one call failed"


def test_the_success_ratio_counts_errors_and_dropped_calls_as_failures() -> None:
    assert chaos.success_ratio(run(successes=97, errors=2, dropped=1)) == 0.97
    assert chaos.success_ratio(run(successes=0)) == 0.0


def test_kill_replica_passes_at_99_percent_and_fails_below() -> None:
    kills, restarted = [replaced("catalog-0")], Counter({"catalog-0": 1})
    assert chaos.judge_kills(run(990, errors=10), kills, restarted, planned=1).passed
    failed = chaos.judge_kills(run(989, errors=11), kills, restarted, planned=1)
    assert failed.failures == ["989 of 1000 calls succeeded"]
    assert failed.figures["errors"] == "UNAVAILABLE 11"


def test_kill_replica_fails_when_a_killed_process_was_not_replaced() -> None:
    kept = chaos.Kill("catalog-1", "sidecar", pid=100, died=True)
    verdict = chaos.judge_kills(run(1000), [kept], Counter(), planned=1)
    assert verdict.failures == [
        "catalog-1 sidecar pid 100 died, not replaced",
        "the supervisor reports restarts none for kills catalog-1 1",
    ]


def test_kill_replica_fails_when_the_supervisor_restarted_what_was_not_killed() -> None:
    restarted = Counter({"catalog-0": 1, "catalog-2": 1})
    verdict = chaos.judge_kills(run(1000), [replaced("catalog-0")], restarted, planned=1)
    assert not verdict.passed
    assert verdict.figures["catalog restarts"] == "2 (catalog-0 1, catalog-2 1)"


def test_kills_alternate_app_and_sidecar_on_the_next_replica_each_time() -> None:
    targets = chaos.kill_targets(5, replicas=3)
    assert targets == [(0, "app"), (1, "sidecar"), (2, "app"), (0, "sidecar"), (1, "app")]


@pytest.mark.parametrize(("orders", "poisons"), [(10, 6), (100, 30), (3, 7)])
def test_poison_is_spread_among_the_orders_never_before_the_first(
    orders: int, poisons: int
) -> None:
    after = chaos.poison_after(orders, poisons)
    assert after.total() == poisons
    assert set(after) <= set(range(orders))  # each follows one of the orders
    if poisons < orders:
        assert max(after.values()) == 1


def test_each_kind_of_poison_is_poison_in_its_own_way() -> None:
    with pytest.raises(DecodeError):
        events_pb2.EventEnvelope.FromString(chaos.undecodable(0).data)
    misplaced = chaos.misplaced("order-1")
    envelope = events_pb2.EventEnvelope.FromString(misplaced.data)
    assert envelope.order_id == "order-1"
    assert event_subject(envelope) != misplaced.subject
    unknown = chaos.unknown_order()
    assert event_subject(events_pb2.EventEnvelope.FromString(unknown.data)) == unknown.subject
    kinds = [chaos.poison(i, "order-1").kind for i in range(6)]
    assert kinds == ["undecodable", "misplaced", "unknown-order"] * 2


def test_poison_is_expected_in_the_dead_letters_of_every_consumer_of_its_subject() -> None:
    topology = load(ROOT / "mesh.yaml")
    sent = [chaos.undecodable(0), chaos.misplaced("order-1"), chaos.unknown_order()]
    expected = chaos.expected_dead_letters(sent, topology)
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
    tally = chaos.DeadLetterTally.of(expected, found)
    assert tally.missing == [("payments", b"a")]
    assert tally.unexpected == 2  # a second copy, and a good event
    assert tally.by_consumer() == "inventory 1/1, payments 0/1"


def confirmed(order_id: str, history: tuple[str, ...] = chaos.NORMAL_HISTORY) -> dict[str, object]:
    return {"id": order_id, "status": CONFIRMED, "history": [{"name": s} for s in history]}


def test_poison_fails_for_a_good_order_whose_history_the_poison_changed() -> None:
    plan = chaos.PoisonPlan(good_orders=2, poison=1, settle_seconds=1.0)
    sent = [chaos.undecodable(0)]
    tally = chaos.DeadLetterTally.of({("inventory", sent[0].data): "undecodable"},
                                     [letter("inventory", sent[0].data)])  # fmt: skip
    odd = (*chaos.NORMAL_HISTORY[:2], "PaymentCaptured", *chaos.NORMAL_HISTORY[2:])
    orders = {"a": confirmed("a"), "b": confirmed("b")}
    assert chaos.judge_poison(orders, [], sent, tally, plan).passed
    orders["b"] = confirmed("b", odd)
    verdict = chaos.judge_poison(orders, [], sent, tally, plan)
    assert verdict.failures == [f"order b is {CONFIRMED} after {list(odd)}"]
    assert verdict.figures["confirmed with the normal history"] == 1


def test_every_scenario_is_named_in_the_command_line_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["chaos", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert sorted(chaos.SCENARIOS) == ["kill-replica", "poison"]
    assert all(name in shown for name in chaos.SCENARIOS)


def test_an_unknown_scenario_is_refused_before_any_mesh_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["chaos", "no-such", "--run-dir", str(tmp_path / "trial")]) == 2
    assert "kill-replica, poison" in capsys.readouterr().err
    assert not (tmp_path / "trial").exists()
