"""The benchmark's arithmetic and reports, on made-up runs (no mesh)."""

from __future__ import annotations

import contextlib
import copy
from array import array
from pathlib import Path

import yaml

from mesh.tools import bench, bench_saga, loadgen
from mesh.tools.chaos import frame
from mesh.tools.shopper import CONFIRMED

ROOT = Path(__file__).resolve().parents[2]


def no_connection() -> contextlib.AbstractAsyncContextManager[loadgen.Call]:
    raise AssertionError("these tests make no calls")


def path(name: str, hops: int) -> bench.BenchPath:
    return bench.BenchPath(name, name, hops, (), (), no_connection, lambda answer: None)


def measured(name: str, hops: int, load: str, latencies_ms: list[float], seconds: float) -> (
    bench.Measured
):  # fmt: skip
    run = loadgen.Run(
        mode=load, seconds=seconds, latencies=array("d", [v / 1000 for v in latencies_ms])
    )
    return bench.Measured(path(name, hops), load, run, envoy_cpu=0.5, app_cpu=1.0,
                          client_cpu=0.25, busy_cores=1.5, envoy_rss_kib=2048)  # fmt: skip


def test_every_run_is_compared_with_the_direct_run_under_the_same_load() -> None:
    runs = [
        measured("direct", 0, "concurrency 1", [1.0] * 100, 1.0),
        measured("mesh", 2, "concurrency 1", [1.5] * 80, 1.0),
        measured("direct", 0, "concurrency 8", [4.0] * 400, 2.0),
        measured("mesh", 2, "concurrency 8", [5.0] * 300, 2.0),
    ]
    bench.add_ratios(runs)
    assert runs[0].ratios["throughput"] == 1.0
    assert runs[1].ratios == {"throughput": 0.8, "p50": 1.5, "p99": 1.5, "added_p50_ms": 0.5,
                              "added_p50_ms_per_hop": 0.25}  # fmt: skip
    assert runs[3].ratios["throughput"] == 0.75
    assert runs[3].ratios["added_p50_ms"] == 1.0


def test_the_fixed_rate_is_half_the_slowest_throughput_rounded_down() -> None:
    runs = [
        measured("direct", 0, "concurrency 8", [1.0] * 1000, 1.0),
        measured("mesh", 2, "concurrency 8", [1.0] * 875, 1.0),
        measured("mesh", 2, "concurrency 1", [1.0] * 10, 1.0),
    ]
    assert bench.fixed_rate(runs, 8) == 430.0
    assert bench.fixed_rate([measured("direct", 0, "concurrency 8", [1.0] * 3, 1.0)], 8) == 10.0


def test_the_table_shows_each_load_with_ratios_and_costs_per_request() -> None:
    runs = [
        measured("direct", 0, "concurrency 1", [1.0] * 100, 1.0),
        measured("sidecar", 1, "concurrency 1", [1.2] * 90, 1.0),
    ]
    runs[1].run.errors["UNAVAILABLE"] = 10
    bench.add_ratios(runs)
    text = bench.table(runs)
    header, direct, sidecar = text.splitlines()[1:4]
    assert text.startswith("concurrency 1:")
    assert header.split()[:4] == ["PATH", "HOPS", "REQ/S", "xDIRECT"]
    assert direct.split()[:4] == ["direct", "0", "100", "1x"]
    # 100 calls (90 good, 10 failed): 0.5 s of Envoy CPU is 5000 us per request.
    assert sidecar.split() == ["sidecar", "1", "100", "1x", "1.2", "1.2", "1.2", "1.2x",
                               "0.2", "10", "5000", "10000", "2500", "2"]  # fmt: skip


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    runs = [
        measured(name, hops, load, [1.0 + hops] * 50, 1.0)
        for load in ("concurrency 1", "concurrency 8", "rate 20/s")
        for name, hops in (("direct", 0), ("mesh", 2))
    ]
    bench.add_ratios(runs)
    chart = bench.chart(runs, "test", tmp_path / "bench.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def step(rate: float, placed: int, ended: int, span: float, errors: int = 0) -> bench_saga.Step:
    placing = loadgen.Run(mode="rate", seconds=span)
    placing.errors.update({"HTTP 503": errors})
    orders = {f"o{i}": i / rate for i in range(placed)}
    ends = {o: (CONFIRMED, at + 0.1) for o, at in list(orders.items())[:ended]}
    return bench_saga.Step(rate, placing, orders, ends, {"orders app": 0.5, "nats": 0.1})


def test_a_saga_step_is_sustained_only_if_every_order_ended_in_step_with_the_arrivals() -> None:
    good = step(10, placed=100, ended=100, span=10)
    assert good.sustained
    assert round(good.completed_per_second, 1) == 10.0  # 100 ends over 9.9 s + 0.1 s
    assert good.latency_ms(0.5) == good.latency_ms(0.99) == 100.0
    assert good.to_json()["cpu_ms_per_saga"] == {"orders app": 5.0, "nats": 1.0}
    assert not step(10, placed=100, ended=99, span=10).sustained
    assert not step(10, placed=100, ended=100, span=10, errors=1).sustained
    late = step(10, placed=100, ended=100, span=10)
    late.ends = {o: (status, at + 5) for o, (status, at) in late.ends.items()}
    assert not late.sustained  # 100 sagas over 15 s fall behind 10 arrivals/s


def test_the_saga_report_names_the_ceiling_and_where_the_cpu_went() -> None:
    behind = step(20, 200, 200, 10)
    behind.ends = {o: (status, at + 5) for o, (status, at) in behind.ends.items()}
    text = bench_saga.report([step(10, 100, 100, 10), behind])
    # 200 sagas from the first order (0 s) to the last end (9.95 + 0.1 + 5 s): 13.3/s.
    assert "ceiling: 13.3 sagas/s completed at 20/s offered; highest rate sustained: 10/s" in text
    assert "CPU ms per saga at 20/s: orders app 2.5, nats 0.5" in text


def test_the_bench_lifts_catalogs_admission_and_the_scenarios_keep_it() -> None:
    """The bench measures what a hop costs, so catalog admits all its load keeps in flight;
    the chaos scenarios (`meshctl chaos overload` among them) measure the limits as set."""
    topology = yaml.safe_load((ROOT / "mesh.yaml").read_text())
    limit = topology["services"]["catalog"]["admission"]["max_in_flight"]
    lifted, kept = copy.deepcopy(topology), copy.deepcopy(topology)
    bench.bench_topology(1.0, admitted=loadgen.MAX_OUTSTANDING)(lifted)
    frame.adjusted()(kept)
    assert lifted["services"]["catalog"]["admission"]["max_in_flight"] == loadgen.MAX_OUTSTANDING
    assert kept["services"]["catalog"]["admission"]["max_in_flight"] == limit
    assert limit < loadgen.MAX_OUTSTANDING
