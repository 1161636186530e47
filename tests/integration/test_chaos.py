"""`meshctl chaos`: every scenario through the real command, against a mesh of its own.

Each test runs the short form (the full one with `--chaos-full`) and checks the exit
code, the verdict line and that the figures show the scenario really happened: load
ran, processes were killed and replaced, poison was sent and dead-lettered. Whatever
happens, the scenario's mesh is stopped by pid and checked gone afterwards.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mesh.control.binaries import find_binary
from mesh.tools.chaos import (
    bad_canary,
    crash_saga,
    edge_orders,
    faults,
    frame,
    hung_dependency,
    kill_replica,
    overload,
    poison,
)
from tests.support.mesh import ROOT, RunningMesh

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(900)]

#: The short forms take under a minute on a quiet machine; a busy one gets room.
TIMEOUT_SECONDS = {"short": 240, "full": 720}
FIGURE = re.compile(r"^  ([^:]+): (.*)$")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def verdict(self) -> str:
        return self.stdout.rstrip().splitlines()[-1]

    @property
    def figures(self) -> dict[str, str]:
        found = {}
        for match in filter(None, map(FIGURE.match, self.stdout.splitlines())):
            label, value = match.groups()
            found[label] = value
        return found


@pytest.fixture
def full(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--chaos-full"))


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The scenario's run directory; afterwards its mesh is stopped by pid, whatever the
    command managed to do."""
    directory = tmp_path / "trial"
    yield directory
    survivors = RunningMesh(directory, ROOT / "mesh.yaml").down()
    assert survivors == [], f"processes outlived the scenario: {survivors}"


def meshctl_chaos(name: str, run_dir: Path, full: bool) -> Outcome:
    form = "full" if full else "short"
    argv = [find_binary("meshctl"), "chaos", name, "--run-dir", str(run_dir)]
    process = subprocess.Popen(
        [*argv, *([] if full else ["--short"])],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS[form])
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # its `finally` stops the mesh
        try:
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
            process.wait()
        pytest.fail(f"meshctl chaos {name} ran over {TIMEOUT_SECONDS[form]} s:\n{stderr}")
    print(stdout)
    return Outcome(process.returncode, stdout, stderr)


def test_killing_catalog_replicas_under_load_fails_almost_no_calls(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("kill-replica", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: >= 99% of calls succeed")
    figures = outcome.figures
    calls, successes = int(figures["calls"]), int(figures["successes"])
    assert calls > 300  # the load really ran
    assert successes >= 0.99 * calls
    planned = len((kill_replica.FULL_KILLS if full else kill_replica.SHORT_KILLS).kill_at)
    assert int(figures["kills"]) == planned
    for n in range(1, planned + 1):
        assert re.fullmatch(
            r"catalog-\d (app|sidecar) pid \d+ died, replaced by pid \d+", figures[f"kill {n}"]
        )
    assert figures["catalog restarts"].startswith(f"{planned} (")


def test_poison_events_end_as_dead_letters_and_good_orders_are_confirmed(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("poison", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: every poison message is dead-lettered")
    figures = outcome.figures
    plan = poison.FULL_POISON if full else poison.SHORT_POISON
    assert int(figures["good orders placed"]) == plan.good_orders
    assert int(figures["confirmed with the normal history"]) == plan.good_orders
    assert int(figures["poison published"]) == plan.poison
    kinds = dict(kind.rsplit(" ", 1) for kind in figures["poison by kind"].split(", "))
    assert set(kinds) == {"undecodable", "misplaced", "unknown-order"}
    # Each poison message reaches at least one consumer, some several.
    expected = int(figures["dead letters expected"])
    assert expected > plan.poison
    assert int(figures["dead letters of poison"]) == expected
    assert int(figures["other dead letters"]) == 0


def test_crashing_saga_participants_and_nats_loses_no_order_and_captures_none_twice(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("crash-saga", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: 0 lost orders and 0 double captures")
    figures = outcome.figures
    plan = crash_saga.FULL_CRASH if full else crash_saga.SHORT_CRASH
    orders = plan.orders
    assert int(figures["orders attempted"]) == orders
    assert int(figures["orders acknowledged"]) == orders
    assert int(figures["confirmed"]) == orders
    assert int(figures["lost orders"]) == 0
    assert int(figures["captures"]) == orders
    assert int(figures["double captures"]) == 0
    assert int(figures["confirmed, reserved and captured once"]) == orders
    # Each kill hit what the plan says, in turn, and the supervisor brought it back.
    targets = crash_saga.crash_targets(len(plan.kill_at))
    assert int(figures["kills"]) == len(targets)
    for n, target in enumerate(targets, 1):
        victim = "nats server" if target == frame.NATS else f"{target}-0 app"
        assert re.fullmatch(rf"{victim} pid \d+ died, replaced by pid \d+", figures[f"kill {n}"])
    restarts = re.findall(r"([\w-]+) (\d+)[,)]", figures["supervisor restarts"])
    restarted = {instance: int(n) for instance, n in restarts}
    for target in set(targets):
        instance = frame.NATS if target == frame.NATS else f"{target}-0"
        assert restarted[instance] >= targets.count(target)
    # The stock went down by the units of the orders, all confirmed, and none is held back.
    sold = sum(edge_orders.order_units(orders))
    assert int(figures["units confirmed"]) == sold
    assert int(figures["stock on hand"]) == int(figures["stock at the start"]) - sold
    assert int(figures["stock reserved"]) == 0


def test_failing_payment_calls_are_retried_and_every_saga_ends_with_the_stock_right(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("faults", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: with processor calls failing")
    figures = outcome.figures
    plan = faults.FULL_FAULTS if full else faults.SHORT_FAULTS
    assert int(figures["orders acknowledged"]) == plan.orders
    assert int(figures[f"ended within {faults.END_WITHIN_SECONDS:g} s"]) == plan.orders
    confirmed, refused = int(figures["confirmed"]), int(figures["cancelled (out of stock)"])
    assert confirmed + refused == plan.orders
    assert refused > 0  # the stock covered only part of the orders
    assert int(figures["cancelled for another reason"]) == 0
    assert int(figures["processor calls made as payments"]) == plan.calls
    assert int(figures["succeeded after retries"]) >= 0.995 * plan.calls
    # The faults really happened, on about the shares configured, and were retried.
    tries = int(figures["tries the processor's sidecar received"])
    assert tries > plan.calls
    assert 0.1 < int(figures["aborts injected"]) / tries < 0.3
    assert 0.04 < int(figures["delays injected"]) / tries < 0.16
    assert int(figures["payment call tries retried"]) > 0.2 * plan.calls
    assert int(figures["tries past the per-try timeout"]) > 0
    assert int(figures["stock reserved"]) == 0
    assert 0 <= int(figures["stock on hand"]) < int(figures["stock at the start"])


def test_under_overload_the_mesh_refuses_the_excess_at_once_and_recovers(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("overload", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    plan = overload.FULL if full else overload.SHORT
    assert outcome.verdict == f"PASS: {overload.criterion(plan)}"
    figures = outcome.figures
    capacity = float(figures["read capacity"].removesuffix("/s"))
    assert capacity > 50  # the read really ran
    judged = figures["read 3x"]
    offered = float(re.search(r"offered (\d+)/s", judged)[1])  # type: ignore[index]
    assert offered >= 2.9 * capacity
    # The mesh was overloaded and said so: hundreds of refusals, every one a 503.
    failed = re.search(r"failed (\d+) \(HTTP 503 (\d+)\)", judged)
    assert failed is not None, judged
    assert int(failed[1]) == int(failed[2]) > 100
    light = re.search(r"1 s after: (\d+) of (\d+) succeeded", judged)
    assert light is not None
    assert light[1] == light[2]
    # Identity hashed two passwords at a time and refused the rest at once.
    logins = figures["login burst"]
    refused = re.search(r"HTTP 503 (\d+)", logins)
    assert refused is not None
    assert int(refused[1]) >= 40, logins
    assert figures["restarts"] == "none"


def test_a_bad_canary_is_rolled_back_and_a_healthy_one_promoted(run_dir: Path, full: bool) -> None:
    outcome = meshctl_chaos("bad-canary", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: a v2 failing 20% of its calls is rolled back")
    figures = outcome.figures
    assert figures["v2 (failing) outcome"] == "rolled back"
    # The canary really failed, and was judged on its own figures.
    reason = figures["v2 rollback, the reason"]
    error_rate = float(re.search(r"error rate ([\d.]+)% over the limit", reason)[1])  # type: ignore[index]
    assert 10 < error_rate < 35
    assert int(figures["v2 largest share of the calls, %"]) < 100
    requests = int(figures["v2 requests while it was out"])
    failed = int(figures["v2 requests failed"].split()[0])
    assert requests > 100  # the clients really read
    assert failed <= bad_canary.MAX_FAILED_SHARE * requests
    plan = bad_canary.FULL_CANARY if full else bad_canary.SHORT_CANARY
    assert figures["v3 (healthy) outcome"] == "promoted"
    assert int(figures["v3 steps"]) == len(plan.steps)
    assert int(figures["v3 requests during the rollout"]) > 100
    assert int(figures["v3 requests failed"]) == 0
    assert figures["split at the end"] == "v1 0%, v2 0%, v3 100%"
    assert int(figures["processes restarted"]) == 0


def test_a_hung_inventory_leaves_reads_with_stock_answered_at_their_pace(
    run_dir: Path, full: bool
) -> None:
    outcome = meshctl_chaos("hung-dependency", run_dir, full)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.verdict.startswith("PASS: every read answered while inventory hangs")
    figures = outcome.figures
    runs = {
        "inventory answering": "STOCK_STATE_CURRENT",
        "inventory hung": "STOCK_STATE_UNREACHABLE",
    }
    for run, state in runs.items():
        found = re.search(r", (\d+) calls, .* errors none, stock (\w+) (\d+)$", figures[run])
        assert found is not None, figures[run]
        assert int(found[1]) > 100, figures[run]  # the reads really ran
        assert (found[2], found[3]) == (state, found[1]), figures[run]  # each one so marked
    share = re.search(r"(\d+)% of those", figures["reads per second while hung"])
    assert share is not None
    assert int(share[1]) >= 100 * hung_dependency.MIN_THROUGHPUT_SHARE
    assert int(figures["calls to inventory while hung"].split()[0]) >= 1  # asked, at first
    assert figures["stock back after"].endswith(" s")
