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

from mesh import chaos
from mesh.binaries import find_binary
from tests.integration.conftest import ROOT, RunningMesh

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
    planned = len((chaos.FULL_KILLS if full else chaos.SHORT_KILLS).kill_at)
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
    plan = chaos.FULL_POISON if full else chaos.SHORT_POISON
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
