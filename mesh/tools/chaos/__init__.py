"""`meshctl chaos SCENARIO`: break part of a mesh on purpose and check that it copes.

Each scenario runs against a mesh of its own (`mesh.tools.trial`: mesh.yaml with the
scenario's changes, from a throwaway run directory, the edge on a free port), is bounded
in time and in count, prints what it measured and ends with one line, `PASS` or `FAIL`,
against its criterion; the command exits 0 on PASS and 1 on FAIL. The full form is the
default; `--short` runs a smaller one (what the test suite runs).

Each scenario is a module of this package that declares its `SCENARIO` (what it breaks
and its criterion are in the module's docstring): `kill_replica`, `poison`, `crash_saga`,
`faults`, `overload`, `bad_canary` and `hung_dependency`. `frame` is what they are built
in (the verdict, the readings of the running mesh, killing its processes); `edge_orders`
places and follows orders through the edge as a client does.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from mesh.tools import bench, trial
from mesh.tools.chaos import (
    bad_canary,
    crash_saga,
    faults,
    hung_dependency,
    kill_replica,
    overload,
    poison,
)
from mesh.tools.trial import say

SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        kill_replica.SCENARIO,
        poison.SCENARIO,
        crash_saga.SCENARIO,
        faults.SCENARIO,
        overload.SCENARIO,
        bad_canary.SCENARIO,
        hung_dependency.SCENARIO,
    )
}


def run(root: Path, run_dir: Path, name: str, short: bool) -> int:
    """`meshctl chaos NAME [--short]`: 0 on PASS, 1 on FAIL."""
    scenario = SCENARIOS[name]
    title = f"{name} ({'short' if short else 'full'} form): {scenario.summary}"
    say(title)
    began = time.monotonic()
    mesh_cpus, generator_cpus = bench.split_cpus(scenario.pinned)
    with trial.started(root, run_dir, scenario.adjust, say, mesh_cpus) as mesh:
        if generator_cpus is not None:
            os.sched_setaffinity(0, generator_cpus)
        verdict = asyncio.run(scenario.play(mesh, short))
    verdict.figures["seconds"] = round(time.monotonic() - began, 1)
    print(title)
    print(verdict.report(), flush=True)
    return 0 if verdict.passed else 1
