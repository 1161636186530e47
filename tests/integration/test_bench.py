"""`meshctl bench` and `meshctl bench saga`, run for real in short form.

Each starts a mesh of its own, measures, and stops it; the tests check that every path
really reached the app (no errors, answers checked by the command itself), that the
figures and files a user reads are there, and that no process of that mesh outlived it.
They assert nothing about speed: benchmarks measure, tests don't time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mesh.control.binaries import find_binary
from mesh.control.process import pid_alive
from mesh.control.state import all_pids
from tests.support.mesh import ROOT

pytestmark = pytest.mark.integration


def meshctl(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_binary("meshctl"), *args], capture_output=True, text=True, timeout=timeout,
        check=False, cwd=ROOT,
    )  # fmt: skip


def assert_mesh_stopped(run_dir: Path) -> None:
    pids = all_pids(json.loads((run_dir / "state.json").read_text()))
    assert len(pids) > 10
    assert [pid for pid in pids if pid_alive(pid)] == []


def test_bench_measures_every_path_and_writes_the_table_json_and_chart(tmp_path: Path) -> None:
    run_dir, output = tmp_path / "run", tmp_path / "out"
    done = meshctl(
        "bench", "--duration", "1", "--warmup", "0.5", "--concurrency", "4", "--requests", "2000",
        "--run-dir", str(run_dir), "--output", str(output),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_mesh_stopped(run_dir)

    document = json.loads((output / "bench.json").read_text())
    runs: list[dict[str, Any]] = document["runs"]
    rate = runs[-1]["load"]
    assert [(r["path"], r["load"]) for r in runs] == [
        (path, load)
        for load in ("concurrency 1", "concurrency 4", rate)
        for path in ("direct", "sidecar", "mesh", "edge-grpc", "edge-rest", "edge-cached")
    ]
    assert rate.startswith("rate ")
    for run in runs:
        assert run["requests"] > 0, run
        assert run["errors"] == 0, run
        assert run["dropped"] == 0, run
        assert run["p50_ms"] <= run["p99_ms"], run
        if run["path"] != "edge-cached":  # the cache answers without the app
            assert run["app_cpu_us_per_request"] > 0, run
        if run["path"] == "direct":
            assert run["ratios"]["throughput"] == 1.0
            assert run["envoy_cpu_us_per_request"] == 0.0
        else:
            assert run["ratios"]["throughput"] > 0
            assert run["envoy_cpu_us_per_request"] > 0, run
            assert run["envoy_rss_mib"] > 10, run
    assert document["machine"]["envoy"].split("/")[1] == "1.40.0"
    # The cached path's calls were the cache's hits; its misses, one per max-age at most.
    cached = sum(r["requests"] for r in runs if r["path"] == "edge-cached")
    assert document["edge_cache"]["hit"] >= cached - document["edge_cache"]["miss"] > 0
    assert (output / "bench.png").read_bytes()[:4] == b"\x89PNG"

    blocks = done.stdout.split("\n\n")
    assert [block.splitlines()[0] for block in blocks[:3]] == [
        "concurrency 1:", "concurrency 4:", f"{rate}:"
    ]  # fmt: skip
    assert f"wrote {output / 'bench.json'} and {output / 'bench.png'}" in done.stdout


def test_bench_saga_follows_every_order_to_its_end(tmp_path: Path) -> None:
    run_dir, output = tmp_path / "run", tmp_path / "out"
    done = meshctl("bench", "saga", "--duration", "2", "--rate", "5", "--steps", "1",
                   "--run-dir", str(run_dir), "--output", str(output))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_mesh_stopped(run_dir)

    (step,) = json.loads((output / "bench-saga.json").read_text())["steps"]
    assert step["placed"] == 10
    assert (step["confirmed"], step["cancelled"], step["unfinished"]) == (10, 0, 0)
    assert step["placing"]["errors"] == 0
    assert step["completed_per_second"] > 0
    assert 0 < step["end_to_end_p50_ms"] <= step["end_to_end_p99_ms"]
    costs = step["cpu_ms_per_saga"]
    # Every part of the mesh is counted; those doing most of a saga's work show it even in
    # a run this short (CPU time comes in 10 ms ticks).
    assert {"edge", "nats", "traces", "processor app", "orders sidecar"} <= costs.keys()
    for part in ("orders app", "inventory app", "payments app", "shipping app"):
        assert costs[part] > 0, costs
    assert "ceiling: " in done.stdout
    assert "CPU ms per saga at 5/s: " in done.stdout
