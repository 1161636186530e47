"""Load for benchmarks: a fixed number of callers (closed loop) or a fixed rate (open loop).

A closed loop keeps `concurrency` calls in flight, each caller starting its next call as
its last one ends: it finds the throughput at that concurrency, but a slow call also
delays the calls that would have started meanwhile, so its latencies flatter a slow
server (coordinated omission). An open loop starts call i at its planned time
`t0 + i / rate` whatever the earlier calls are doing, and times every call from that
planned time, as wrk2 does: a stall shows up in the latency of every call it delayed.
The calls in flight are capped; a call due while the cap is reached is not started and
is counted as dropped (as k6 counts `dropped_iterations`), and how late the generator
started the calls it did start is reported, so an overloaded generator is visible
instead of silently lowering the rate.

Both loops are bounded by a duration and, optionally, a number of calls. A call is any
coroutine function; an exception counts as an error, named by its gRPC status code when
it has one.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[], Awaitable[Any]]


@dataclass
class Run:
    """What one loop measured; latencies in seconds, in completion order."""

    mode: str
    seconds: float = 0.0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    max_lag: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def percentile(self, fraction: float) -> float | None:
        """The latency at `fraction` (nearest rank) of the successful calls, or None."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]

    def summary(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "mode": self.mode,
            "seconds": round(self.seconds, 3),
            "requests": self.completed,
            "requests_per_second": round(self.completed / self.seconds, 1) if self.seconds else 0,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "dropped": self.dropped,
            "max_lag_ms": ms(self.max_lag),
            "p50_ms": ms(self.percentile(0.50)),
            "p90_ms": ms(self.percentile(0.90)),
            "p99_ms": ms(self.percentile(0.99)),
        }


def _error_kind(error: BaseException) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        try:
            return str(code().name)
        except Exception:  # not a gRPC error after all
            pass
    return type(error).__name__


async def _timed(call: Call, run: Run, since: float) -> None:
    try:
        await call()
    except asyncio.CancelledError:
        raise
    except Exception as error:
        run.errors[_error_kind(error)] += 1
    else:
        run.latencies.append(time.perf_counter() - since)


async def closed_loop(
    call: Call, *, concurrency: int, duration: float, max_requests: int | None = None
) -> Run:
    """`concurrency` callers, each calling again as soon as its call ends."""
    if concurrency < 1 or duration <= 0:
        raise ValueError("concurrency must be at least 1 and duration positive")
    run = Run(mode=f"concurrency {concurrency}")
    start = time.perf_counter()
    deadline = start + duration
    budget = [max_requests if max_requests is not None else math.inf]

    async def caller() -> None:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            await _timed(call, run, time.perf_counter())

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - start
    return run


async def open_loop(
    call: Call,
    *,
    rate: float,
    duration: float,
    max_requests: int | None = None,
    max_outstanding: int = 1000,
) -> Run:
    """Calls started at `rate` per second on schedule, each timed from its planned start."""
    if rate <= 0 or duration <= 0 or max_outstanding < 1:
        raise ValueError("rate, duration and max_outstanding must be positive")
    run = Run(mode=f"rate {rate:g}/s")
    planned = min(math.floor(rate * duration), max_requests or math.inf)
    in_flight: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    index = 0
    while index < planned:
        due = start + index / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        index += 1
        if len(in_flight) >= max_outstanding:
            run.dropped += 1
            continue
        run.max_lag = max(run.max_lag, time.perf_counter() - due)
        task = asyncio.create_task(_timed(call, run, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
    run.seconds = time.perf_counter() - start
    return run
