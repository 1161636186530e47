"""The benchmark load loops, driven against fake calls (no network)."""

from __future__ import annotations

import asyncio
import gc

import grpc
import pytest

from mesh.tools import loadgen
from tests.support.wait import eventually


class Server:
    """A fake server: counts calls in flight; optionally one call at a time, `service` s each."""

    def __init__(self, service: float = 0.0, serial: bool = False) -> None:
        self.service = service
        self.lock = asyncio.Lock() if serial else None
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.lock is not None:
                async with self.lock:
                    await asyncio.sleep(self.service)
            else:
                await asyncio.sleep(self.service)
        finally:
            self.in_flight -= 1


async def test_a_closed_loop_keeps_its_callers_busy_up_to_the_request_budget() -> None:
    server = Server(service=0.001)
    run = await loadgen.closed_loop(server, concurrency=4, duration=60, max_requests=40)
    assert (run.completed, server.calls, server.most_in_flight) == (40, 40, 4)
    summary = run.summary()
    assert summary["requests"] == 40
    assert summary["errors"] == 0
    assert summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"]
    assert summary["p50_ms"] >= 1.0  # each call sleeps at least a millisecond


async def test_errors_are_counted_by_grpc_status_or_exception_type() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls % 3 == 1:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
            )
        if calls % 3 == 2:
            raise ValueError("bad")

    run = await loadgen.closed_loop(flaky, concurrency=1, duration=60, max_requests=9)
    assert run.errors == {"UNAVAILABLE": 3, "ValueError": 3}
    assert len(run.latencies) == 3
    assert run.summary()["errors"] == 6


async def test_an_open_loop_starts_calls_on_schedule_not_when_earlier_ones_end() -> None:
    server = Server(service=0.05)
    run = await loadgen.open_loop(server, rate=200, duration=60, max_requests=20)
    assert (run.completed, run.dropped) == (20, 0)
    assert server.most_in_flight > 1  # it did not wait for a call to end before the next
    assert run.seconds >= 19 / 200 + 0.05  # the last planned start, plus its service time


async def test_an_open_loop_times_each_call_from_its_planned_start() -> None:
    """A server that handles one call at a time, 20 ms each, offered one every 10 ms: the
    queue grows, and the latencies say so (call i ends >= 20 ms * (i + 1) after t0)."""
    run = await loadgen.open_loop(
        Server(service=0.02, serial=True), rate=100, duration=60, max_requests=10
    )
    slowest = run.percentile(1.0)
    assert slowest is not None
    assert slowest >= 0.02 * 10 - 0.01 * 9
    assert run.completed == 10


async def test_an_open_loop_drops_calls_beyond_its_cap_and_says_so() -> None:
    release = asyncio.Event()

    async def stuck() -> None:
        await release.wait()

    asyncio.get_running_loop().call_later(1.0, release.set)
    run = await loadgen.open_loop(
        stuck, rate=1_000_000, duration=60, max_requests=20, max_outstanding=5
    )
    assert (run.completed, run.dropped) == (5, 15)
    assert run.summary()["dropped"] == 15


@pytest.mark.parametrize(
    "arguments",
    [
        {"rate": 0, "duration": 1},
        {"rate": 1, "duration": 0},
        {"rate": 1, "duration": 1, "max_outstanding": 0},
    ],
)
async def test_an_open_loop_refuses_nonsense(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        await loadgen.open_loop(Server(), **arguments)  # type: ignore[arg-type]


def test_percentiles_are_nearest_rank() -> None:
    run = loadgen.Run(mode="test")
    assert run.percentile(0.5) is None
    run.latencies.extend([0.004, 0.001, 0.003, 0.002])
    assert [run.percentile(f) for f in (0.25, 0.5, 0.75, 0.99, 1.0)] == [
        0.001, 0.002, 0.003, 0.004, 0.004,
    ]  # fmt: skip


async def test_the_collector_skips_what_predates_a_load_until_the_last_load_ends() -> None:
    assert gc.get_freeze_count() == 0
    frozen_during_calls: list[bool] = []

    async def call() -> None:
        frozen_during_calls.append(gc.get_freeze_count() > 0)

    async def collector_frozen() -> bool:
        return gc.get_freeze_count() > 0

    overload = asyncio.create_task(loadgen.open_loop(call, rate=200, duration=0.3))
    await eventually(collector_frozen, "the open loop under way", interval=0.01)
    await loadgen.closed_loop(call, concurrency=1, duration=0.05)  # ends first
    await overload
    assert frozen_during_calls
    assert all(frozen_during_calls)
    assert gc.get_freeze_count() == 0
