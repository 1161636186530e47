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
it has one (or its `kind`, as `HttpStatusError`'s "HTTP 503").

`HttpConnections` is the REST side's client: keep-alive HTTP/1.1 over asyncio streams,
one request per connection at a time, with requests built once as bytes. It costs a
fraction of a general-purpose client's CPU per request, which on a small machine is CPU
the server under test keeps.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Call = Callable[[], Awaitable[Any]]


def nearest_rank(values: Iterable[float], fraction: float) -> float | None:
    """The value at `fraction` of `values` by the nearest-rank method, or None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


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
        return nearest_rank(self.latencies, fraction)

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
    kind = getattr(error, "kind", None)
    if isinstance(kind, str):
        return kind
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


class HttpStatusError(Exception):
    """An HTTP answer other than 2xx; `kind` ("HTTP 503") is how a Run counts it."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status = status
        self.body = body
        self.kind = f"HTTP {status}"


def http_request(
    method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request as bytes, for `HttpConnections.send`."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpConnections:
    """Keep-alive HTTP/1.1 connections to one loopback address, opened as calls need them."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: set[asyncio.StreamWriter] = set()

    async def send(self, request: bytes) -> bytes:
        """Send `request`; the body of a 2xx answer, else HttpStatusError."""
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._all.add(writer)
        try:
            writer.write(request)
            status, body, keep_alive = await _read_response(reader)
        except BaseException:
            self._forget(writer)
            raise
        if keep_alive:
            self._idle.append((reader, writer))
        else:
            self._forget(writer)
        if not 200 <= status < 300:
            raise HttpStatusError(status, body)
        return body

    def _forget(self, writer: asyncio.StreamWriter) -> None:
        self._all.discard(writer)
        writer.close()

    async def close(self) -> None:
        for writer in list(self._all):
            self._forget(writer)
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"
