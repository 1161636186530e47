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
it has one (or its `kind`, as `HttpStatusError`'s "HTTP 503"), and how long it took is
kept by that kind too (how fast a server refuses is a figure of its own).

`HttpConnections` is the REST side's client: keep-alive HTTP/1.1 on an asyncio protocol,
one request per connection at a time, with requests built once as bytes. It costs a
fraction of a general-purpose client's CPU per request, which on a small machine is CPU
the server under test keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
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
    failure_latencies: dict[str, array[float]] = field(default_factory=dict)
    """How long each failed call took, by its error kind (as `errors` counts them)."""
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
        kind = _error_kind(error)
        run.errors[kind] += 1
        run.failure_latencies.setdefault(kind, array("d")).append(time.perf_counter() - since)
    else:
        run.latencies.append(time.perf_counter() - since)


class _Collections:
    """What exists before a load starts is kept out of the garbage collector's sight while
    it runs: a full collection during the load then scans only what the load made, so the
    generator's own pause (tens of milliseconds over the whole process) is not timed as the
    server's latency. Loops may overlap (a light load started while an overload ends): the
    first to start collects and freezes, the last to end unfreezes."""

    running = 0

    @classmethod
    @contextlib.contextmanager
    def of_the_run_only(cls) -> Iterator[None]:
        if not cls.running:
            gc.collect()
            gc.freeze()
        cls.running += 1
        try:
            yield
        finally:
            cls.running -= 1
            if not cls.running:
                gc.unfreeze()


async def closed_loop(
    call: Call,
    *,
    concurrency: int,
    duration: float,
    max_requests: int | None = None,
    until: Callable[[], bool] | None = None,
) -> Run:
    """`concurrency` callers, each calling again as soon as its call ends, for `duration`
    seconds at most, `max_requests` calls at most, and while `until()` is false."""
    if concurrency < 1 or duration <= 0:
        raise ValueError("concurrency must be at least 1 and duration positive")
    run = Run(mode=f"concurrency {concurrency}")
    budget = [max_requests if max_requests is not None else math.inf]
    done = until or (lambda: False)
    with _Collections.of_the_run_only():
        start = time.perf_counter()
        deadline = start + duration

        async def caller() -> None:
            while time.perf_counter() < deadline and budget[0] > 0 and not done():
                budget[0] -= 1
                await _timed(call, run, time.perf_counter())

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        run.seconds = time.perf_counter() - start
    return run


#: Calls an open loop keeps in flight at most, unless told otherwise.
MAX_OUTSTANDING = 1000


async def open_loop(
    call: Call,
    *,
    rate: float,
    duration: float,
    max_requests: int | None = None,
    max_outstanding: int = MAX_OUTSTANDING,
) -> Run:
    """Calls started at `rate` per second on schedule, each timed from its planned start."""
    if rate <= 0 or duration <= 0 or max_outstanding < 1:
        raise ValueError("rate, duration and max_outstanding must be positive")
    run = Run(mode=f"rate {rate:g}/s")
    planned = min(math.floor(rate * duration), max_requests or math.inf)
    with _Collections.of_the_run_only():
        await _start_on_schedule(call, run, rate, planned, max_outstanding)
    return run


async def _start_on_schedule(
    call: Call, run: Run, rate: float, planned: float, max_outstanding: int
) -> None:
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


class HttpStatusError(Exception):
    """An HTTP answer other than 2xx; `kind` ("HTTP 503") is how a Run counts it."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode(errors='replace')}")
        self.status = status
        self.body = body
        self.kind = f"HTTP {status}"


def retry_delay(status: int, body: bytes) -> float | None:
    """The seconds a refusal to wait (429) asks for in its JSON body's `RetryInfo`
    (`{"@type": ".../google.rpc.RetryInfo", "retryDelay": "1s"}`); None if it names none."""
    if status != 429:
        return None
    try:
        details = json.loads(body).get("details", [])
    except (ValueError, AttributeError):
        return None
    delays = [
        float(str(detail["retryDelay"]).removesuffix("s"))
        for detail in details
        if isinstance(detail, dict)
        and str(detail.get("@type", "")).endswith("/google.rpc.RetryInfo")
        and "retryDelay" in detail
    ]
    return max(delays, default=None)


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
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def send(self, request: bytes) -> bytes:
        """Send `request`; the body of a 2xx answer, else HttpStatusError. A call given up
        on (cancelled, timed out) closes its connection: a late answer belongs to nobody."""
        connection = self._idle.pop() if self._idle else await self._open()
        try:
            status, body, keep_alive = await connection.ask(request)
        except BaseException:
            self._forget(connection)
            raise
        if keep_alive:
            self._idle.append(connection)
        else:
            self._forget(connection)
        if not 200 <= status < 300:
            raise HttpStatusError(status, body)
        return body

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        connection.close()

    async def close(self) -> None:
        for connection in list(self._all):
            self._forget(connection)
        self._idle.clear()


Answer = tuple[int, bytes, bool]
"""An HTTP answer: its status, its body, and whether the connection stays open."""


class _Connection(asyncio.Protocol):
    """One connection: a request at a time, its answer parsed as the bytes arrive.

    A protocol rather than asyncio's streams: a call costs a future and a parse of the
    bytes that came, which keeps the generator's CPU per call low enough to offer a mesh
    several times its capacity from the same machine.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def ask(self, request: bytes) -> asyncio.Future[Answer]:
        """Send `request`; its answer, when it has come."""
        if self._transport is None or self._waiter is not None:
            raise ConnectionError("the connection is closed or busy")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = _parse_answer(self._buffer)
        if answer is not None:
            self._settle(lambda waiter: waiter.set_result(answer))

    def connection_lost(self, exc: Exception | None) -> None:
        error = exc or ConnectionResetError("the server closed the connection")
        self._settle(lambda waiter: waiter.set_exception(error))
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _settle(self, outcome: Callable[[asyncio.Future[Answer]], None]) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            outcome(waiter)


def _parse_answer(buffer: bytearray) -> Answer | None:
    """The first whole answer in `buffer`, removed from it; None while it is incomplete."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    status_line, *header_lines = bytes(buffer[:head_end]).decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = head_end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunked = _chunked_body(buffer, start)
        if chunked is None:
            return None
        body, end = chunked
    else:
        end = start + int(headers.get("content-length", "0"))
        if len(buffer) < end:
            return None
        body = bytes(buffer[start:end])
    del buffer[:end]
    keep_alive = headers.get("connection", "").lower() != "close"
    return int(status_line.split(" ", 2)[1]), body, keep_alive


def _chunked_body(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body from `start`, and where it ends; None while it is incomplete."""
    chunks: list[bytes] = []
    at = start
    while True:
        size_end = buffer.find(b"\r\n", at)
        if size_end < 0:
            return None
        size = int(bytes(buffer[at:size_end]).split(b";")[0], 16)
        chunk_end = size_end + 2 + size + 2
        if len(buffer) < chunk_end:
            return None
        if size == 0:
            return b"".join(chunks), chunk_end
        chunks.append(bytes(buffer[size_end + 2 : size_end + 2 + size]))
        at = chunk_end
