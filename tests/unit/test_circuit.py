"""The circuit breaker of a dependency a service can answer without: closed, open after
`TRIP_AFTER` calls in a row unanswered, one trial call at a time once `OPEN_SECONDS`
have passed, closed by an answer; a call that ends for the caller's own reasons says
nothing of the dependency."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from mesh.runtime import circuit
from mesh.runtime.circuit import Circuit, CircuitOpen, Outcome
from tests.support.clock import Clock


class Unanswered(Exception):
    """The dependency did not answer."""


class Answered(Exception):
    """The dependency answered with an error: it is there."""


class Own(Exception):
    """The call ended for the caller's own reasons (its deadline)."""


def outcome(failure: BaseException) -> Outcome:
    if isinstance(failure, Unanswered):
        return Outcome.UNANSWERED
    return Outcome.ANSWERED if isinstance(failure, Answered) else Outcome.NOTHING


@pytest.fixture
def clock() -> Clock[float]:
    return Clock(100.0)


@pytest.fixture
def breaker(clock: Clock[float]) -> Circuit:
    return Circuit("inventory", outcome, trip_after=3, open_seconds=1.0, clock=clock)


def call(breaker: Circuit, ending: type[Exception] | None = None) -> bool:
    """One call through `breaker` that ends with `ending` (None: answered); whether it
    was made."""
    try:
        with breaker.calling():
            if ending is not None:
                raise ending()
    except CircuitOpen:
        return False
    except (Unanswered, Answered, Own):
        pass
    return True


def is_open_gauge(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("shop_circuit_open", {"dependency": dependency})


def test_calls_go_while_fewer_than_trip_after_in_a_row_are_unanswered(breaker: Circuit) -> None:
    for _ in range(5):
        assert [call(breaker, Unanswered) for _ in range(2)] == [True, True]
        assert call(breaker)  # an answer starts the count again
    assert not breaker.is_open
    assert [call(breaker, Unanswered) for _ in range(2)] == [True, True]
    assert call(breaker, Answered)  # an error answered is an answer too
    assert [call(breaker, Unanswered) for _ in range(2)] == [True, True]
    assert not breaker.is_open


def test_trip_after_unanswered_calls_opens_it_and_no_call_goes_until_open_seconds(
    breaker: Circuit, clock: Clock[float]
) -> None:
    assert [call(breaker, Unanswered) for _ in range(3)] == [True] * 3
    assert breaker.is_open
    with pytest.raises(CircuitOpen, match="inventory left the last 3 call"), breaker.calling():
        pytest.fail("an open circuit made the call")
    clock.now += 0.99
    assert not call(breaker)


def test_once_open_seconds_passed_one_trial_goes_and_the_others_do_without(
    breaker: Circuit, clock: Clock[float]
) -> None:
    for _ in range(3):
        call(breaker, Unanswered)
    clock.now += 1.0
    with breaker.calling():  # the trial, in flight
        assert not call(breaker), "a second call went beside the trial"
    # It was answered: closed, every call goes.
    assert not breaker.is_open
    assert all(call(breaker) for _ in range(5))


def test_a_trial_unanswered_opens_it_again_for_open_seconds(
    breaker: Circuit, clock: Clock[float]
) -> None:
    for _ in range(3):
        call(breaker, Unanswered)
    clock.now += 1.0
    assert call(breaker, Unanswered)  # the trial: one failure is enough
    assert breaker.is_open
    clock.now += 0.5
    assert not call(breaker)
    clock.now += 0.5
    assert call(breaker)  # the next trial, answered
    assert not breaker.is_open


def test_a_call_ended_by_the_callers_own_reasons_neither_trips_nor_closes(
    breaker: Circuit, clock: Clock[float]
) -> None:
    for _ in range(10):
        call(breaker, Own)
    assert not breaker.is_open
    for _ in range(3):
        call(breaker, Unanswered)
    clock.now += 1.0
    assert call(breaker, Own)  # the trial ended without telling
    assert breaker.is_open
    assert call(breaker)  # its place is free: the next call is the trial
    assert not breaker.is_open


def test_a_cancelled_trial_frees_its_place(breaker: Circuit, clock: Clock[float]) -> None:
    for _ in range(3):
        call(breaker, Unanswered)
    clock.now += 1.0
    with pytest.raises(KeyboardInterrupt), breaker.calling():
        raise KeyboardInterrupt
    assert call(breaker)


def test_opening_and_closing_are_said_once_each_and_shown_by_a_gauge(
    clock: Clock[float], caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Circuit("gauged", outcome, trip_after=3, open_seconds=1.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger=circuit.__name__):
        for _ in range(3):
            call(breaker, Unanswered)
        assert is_open_gauge("gauged") == 1
        for _ in range(4):
            clock.now += 1.0
            call(breaker, Unanswered)  # trials that fail: still open, not said again
        clock.now += 1.0
        call(breaker)
    assert is_open_gauge("gauged") == 0
    assert [r.getMessage() for r in caplog.records] == [
        "gauged left 3 calls in a row unanswered: not calling it for 1 s, then one call "
        "at a time until one is answered",
        "gauged answered again: calling it as before",
    ]
