"""`autoscale:` as read, and the decisions of `mesh.control.autoscaler`: up at once, with
HPA's tolerance, down only after the cooldown and one replica at a time, within min and
max, from CPU, calls in flight or a consumer's lag."""

from __future__ import annotations

import pytest

from mesh.control.autoscaler import ReplicaLoad, Scaling
from mesh.control.topology.model import Autoscale
from tests.support.topology import parse_error


def busy(*seconds: float) -> dict[str, ReplicaLoad]:
    """Replicas whose sidecars counted `seconds` of their apps' time so far."""
    return {f"a-{n}": ReplicaLoad(None, s) for n, s in enumerate(seconds)}


def test_calls_in_flight_over_the_target_add_replicas_at_once() -> None:
    scaling = Scaling(Autoscale(1, 4, "in_flight", 2, cooldown=30))
    assert scaling.desired(0, busy(0)) == 1  # no rate yet
    assert scaling.desired(2, busy(10)) == 3  # 5 calls at once, 2 each: 3 replicas
    assert scaling.value == pytest.approx(5)
    assert scaling.desired(4, busy(30)) == 4  # 10 at once: 5 wanted, at most 4


def test_within_the_tolerance_nothing_changes() -> None:
    scaling = Scaling(Autoscale(1, 4, "in_flight", 2, cooldown=30))
    scaling.desired(0, busy(0, 0))
    assert scaling.desired(1, busy(2.1, 2.1)) == 2  # 4.2 in flight for 4 wanted: +5%


def test_down_after_the_cooldown_one_at_a_time() -> None:
    scaling = Scaling(Autoscale(1, 4, "in_flight", 1, cooldown=10))
    scaling.desired(0, busy(0, 0, 0))
    assert scaling.desired(2, busy(2, 2, 2)) == 3  # 3 in flight: 3 wanted
    at, spent = 2.0, 2.0
    seen = []
    for _ in range(12):  # idle from here
        at += 2
        seen.append(scaling.desired(at, busy(spent, spent, spent)))
    # Held at 3 while the cooldown still holds the busy decision, then one less.
    assert seen[:4] == [3, 3, 3, 3]
    assert seen[5] == 2


def test_never_below_min_nor_above_max() -> None:
    scaling = Scaling(Autoscale(2, 3, "consumer_lag", 100, cooldown=0))
    assert (
        scaling.desired(0, {"a-0": ReplicaLoad(None, None, 10_000), "a-1": ReplicaLoad(None, None)})
        == 3
    )
    idle = {"a-0": ReplicaLoad(None, None, 0), "a-1": ReplicaLoad(None, None, 0)}
    assert scaling.desired(1, idle) == 2


def test_cpu_is_percent_of_a_core_per_replica() -> None:
    scaling = Scaling(Autoscale(1, 5, "cpu", 50, cooldown=0))
    scaling.desired(0, {"a-0": ReplicaLoad(0, None), "a-1": ReplicaLoad(0, None)})
    loads = {"a-0": ReplicaLoad(1.5, None), "a-1": ReplicaLoad(1.5, None)}  # 75% each
    assert scaling.desired(2, loads) == 3
    assert scaling.value == pytest.approx(75)


def test_a_restarted_replica_has_no_rate_and_holds_the_decision() -> None:
    scaling = Scaling(Autoscale(1, 4, "in_flight", 1, cooldown=0))
    scaling.desired(0, busy(100, 100))
    assert scaling.desired(2, busy(1, 104)) == 2  # a-0's count went down
    assert scaling.value is None


@pytest.mark.parametrize(
    ("entry", "told"),
    [
        ("{replicas: 2, autoscale: {min: 1, max: 2, target: {cpu: 70}}}", "takes no `replicas:`"),
        ("{autoscale: {min: 3, max: 2, target: {cpu: 70}}}", "max (2) is below its min (3)"),
        ("{autoscale: {min: 1, max: 2, target: {consumer_lag: 9}}}", "consumes none"),
        ("{autoscale: {min: 1, max: 2, target: {cpu: 70, in_flight: 2}}}", "names one metric"),
        ("{autoscale: {min: 1, max: 2, target: {rps: 2}}}", "unknown key 'rps'"),
        ("{autoscale: {min: 1, target: {cpu: 70}}}", "needs `max`"),
    ],
)
def test_a_wrong_autoscale_is_told_at_its_line(entry: str, told: str) -> None:
    error = parse_error(f"services:\n  a: {entry}\n")
    assert told in error.detail, error.detail
    assert error.line == 2
