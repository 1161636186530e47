"""`meshctl chaos overload`'s verdict, from runs made up here (no mesh)."""

from __future__ import annotations

from array import array
from collections import Counter

from mesh.tools import loadgen
from mesh.tools.chaos import overload, overload_runs
from mesh.tools.chaos.frame import Verdict


def run(ok: int, latency: float, **failed: tuple[int, float]) -> loadgen.Run:
    """`ok` successes of `latency` s, and per error kind (`HTTP_503=(n, latency)`)."""
    made = loadgen.Run("test", seconds=1.0, latencies=array("d", [latency] * ok))
    for kind, (count, seconds) in failed.items():
        name = kind.replace("_", " ")
        made.errors[name] = count
        made.failure_latencies[name] = array("d", [seconds] * count)
    return made


def outcome(at_3x: loadgen.Run, after: loadgen.Run | None = None) -> overload_runs.TargetOutcome:
    unloaded = run(100, 0.010)
    overloaded = overload_runs.Overloaded(3.0, 300.0, 1.0, at_3x, after or run(20, 0.010))
    return overload_runs.TargetOutcome("read", 100.0, unloaded, [overloaded])


def judged(found: overload_runs.TargetOutcome) -> Verdict:
    verdict = Verdict("test")
    overload.judge_target(verdict, found)
    return verdict


def test_fast_refusals_at_capacity_pass() -> None:
    verdict = judged(outcome(run(90, 0.040, HTTP_503=(210, 0.005))))
    assert verdict.passed, verdict.failures
    assert verdict.figures["read 3x judged"] == (
        "goodput 90% of capacity, refusals 100.0% of failures, accepted p99 4.0x unloaded"
    )


def test_each_criterion_fails_on_its_own() -> None:
    slow_refusals = judged(outcome(run(90, 0.040, HTTP_503=(210, 0.080))))
    assert slow_refusals.failures == ["read 3x refusals' p99 is 80.0 ms"]
    timeouts = judged(outcome(run(90, 0.040, HTTP_503=(200, 0.005), HTTP_504=(10, 1.0))))
    assert timeouts.failures == ["read 3x only 95.2% of failures were refusals"]
    little = judged(outcome(run(70, 0.040, HTTP_503=(230, 0.005))))
    assert little.failures == ["read 3x goodput is 70% of capacity"]
    queued = judged(outcome(run(90, 0.060, HTTP_503=(210, 0.005))))
    assert queued.failures == ["read 3x accepted p99 is 60.0 ms against 10.0 ms unloaded"]
    unrecovered = judged(outcome(run(90, 0.040), after=run(15, 0.01, HTTP_503=(5, 0.005))))
    assert unrecovered.failures == ["read 3x 1 s after the overload: HTTP 503 5"]


def test_calls_the_generator_dropped_count_as_failures_that_were_no_refusals() -> None:
    held = run(90, 0.040, HTTP_503=(100, 0.005))
    held.dropped = 110
    verdict = judged(outcome(held))
    assert "read 3x only 47.6% of failures were refusals" in verdict.failures
    found = overload_runs.Overloaded(3.0, 300.0, 1.0, held, run(1, 0.01))
    assert found.failed_kinds() == Counter({"HTTP 503": 100, "dropped by the generator": 110})


def test_the_login_burst_passes_while_the_reads_median_at_most_doubles() -> None:
    calm = overload_runs.LoginBurst(run(50, 0.004), run(50, 0.008), run(0, 0, HTTP_503=(48, 0.01)))
    verdict = Verdict("test")
    overload.judge_logins(verdict, calm)
    assert verdict.passed
    slowed = overload_runs.LoginBurst(run(50, 0.004), run(50, 0.0081), run(0, 0))
    verdict = Verdict("test")
    overload.judge_logins(verdict, slowed)
    assert verdict.failures == [
        "the read's median went from 4.0 ms to 8.1 ms during the login burst"
    ]


def test_the_short_form_judges_how_calls_fail_not_how_fast() -> None:
    slow_and_little = outcome(run(60, 0.090, HTTP_503=(240, 0.080)))
    verdict = Verdict("test")
    overload.judge_target(verdict, slow_and_little, timed=False)
    assert verdict.passed, verdict.failures
    timeouts = outcome(run(90, 0.040, HTTP_503=(200, 0.005), HTTP_504=(10, 1.0)))
    verdict = Verdict("test")
    overload.judge_target(verdict, timeouts, timed=False)
    assert verdict.failures == ["read 3x only 95.2% of failures were refusals"]
    assert "goodput" not in overload.criterion(overload.SHORT)
    assert "goodput >= 80% of capacity" in overload.criterion(overload.FULL)
