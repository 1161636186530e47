"""Admission control: each app bounds the calls it works on at once, and refuses the rest.

An app that takes every call it is sent shares its CPU among all of them, so under a load
above its capacity every call gets slower until its callers time out and retry: the work
done is wasted and the retries add more. Instead each app works on at most
`max_in_flight` calls at once, and of those on at most `expensive_in_flight` to the
methods mesh.yaml marks `cost: expensive` (password hashing: tens of milliseconds of CPU
each). A call beyond the first limit waits for a slot, first come first served,
`max_queued` of them at most and for `max_queue_wait` at most: that absorbs the bursts of
a load within capacity, which a bare count would refuse. A queue that does not empty is
no burst, though: once calls have waited without a break for four times
`max_queue_wait`, a call that finds others waiting is refused at once, so sustained
overload is shed at once rather than after a wait. (A call to an expensive method beyond
the second limit never waits.) A call that finds the queue full, or waits its
time out, is refused before any of its work, with UNAVAILABLE (`reason: OVERLOADED`, a
`RetryInfo`) and the `x-shop-not-applied` trailer: the caller's sidecar then knows the
call did nothing and may send it to another replica, within the retry budget, whatever
the method's idempotency. The time a call may wait is what bounds the latency of the
calls admitted under overload, not the length of the queue.

The limits come from mesh.yaml (`admission:`) through the environment:

| variable | meaning | default |
| --- | --- | --- |
| `SHOP_MAX_IN_FLIGHT` | calls the app works on at once | 8 |
| `SHOP_EXPENSIVE_IN_FLIGHT` | of those, calls to expensive methods | 2 |
| `SHOP_MAX_QUEUED` | calls that may wait for a slot (an expensive one never does) | 32 |
| `SHOP_MAX_QUEUE_WAIT_MS` | how long a call may wait for one | 25 |
| `SHOP_EXPENSIVE_METHODS` | the expensive methods' names, comma-separated | none |
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

#: The response header (a trailer, for an app's refusal) saying the request was not
#: applied: a caller's sidecar may send it again, whatever the method.
NOT_APPLIED_HEADER = "x-shop-not-applied"

MAX_IN_FLIGHT_VARIABLE = "SHOP_MAX_IN_FLIGHT"
EXPENSIVE_IN_FLIGHT_VARIABLE = "SHOP_EXPENSIVE_IN_FLIGHT"
MAX_QUEUED_VARIABLE = "SHOP_MAX_QUEUED"
MAX_QUEUE_WAIT_VARIABLE = "SHOP_MAX_QUEUE_WAIT_MS"
EXPENSIVE_METHODS_VARIABLE = "SHOP_EXPENSIVE_METHODS"

#: A queue that has not emptied for this many times `max_queue_wait` is overload, not a
#: burst: a call that finds it is refused at once (as CoDel tells a standing queue).
STANDING_WAITS = 4

#: How soon a refused client may try again (`RetryInfo`).
RETRY_DELAY_MS = 50


@dataclass(frozen=True)
class Limits:
    """An app's admission limits; see the module docstring."""

    max_in_flight: int = 8
    expensive_in_flight: int = 2
    max_queued: int = 32
    max_queue_wait: float = 0.025
    """Seconds."""
    expensive_methods: frozenset[str] = field(default_factory=frozenset)
    """Method names (`Login`), as mesh.yaml names them."""

    def environment(self) -> dict[str, str]:
        return {
            MAX_IN_FLIGHT_VARIABLE: str(self.max_in_flight),
            EXPENSIVE_IN_FLIGHT_VARIABLE: str(self.expensive_in_flight),
            MAX_QUEUED_VARIABLE: str(self.max_queued),
            MAX_QUEUE_WAIT_VARIABLE: f"{self.max_queue_wait * 1000:g}",
            EXPENSIVE_METHODS_VARIABLE: ",".join(sorted(self.expensive_methods)),
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Limits:
        default = cls()

        def number(variable: str, fallback: float) -> float:
            return float(environ.get(variable) or fallback)

        names = environ.get(EXPENSIVE_METHODS_VARIABLE, "")
        return cls(
            max_in_flight=int(number(MAX_IN_FLIGHT_VARIABLE, default.max_in_flight)),
            expensive_in_flight=int(
                number(EXPENSIVE_IN_FLIGHT_VARIABLE, default.expensive_in_flight)
            ),
            max_queued=int(number(MAX_QUEUED_VARIABLE, default.max_queued)),
            max_queue_wait=number(MAX_QUEUE_WAIT_VARIABLE, default.max_queue_wait * 1000) / 1000,
            expensive_methods=frozenset(name for name in names.split(",") if name),
        )


class Gate:
    """The calls of one class in flight (`limit` at most), and those waiting for a slot."""

    def __init__(self, limit: int, max_queued: int, max_wait: float) -> None:
        self.limit = limit
        self.in_flight = 0
        self._max_queued = max_queued
        self._max_wait = max_wait
        self._waiting: deque[asyncio.Future[None]] = deque()
        #: When the queue last went from empty to waiting (loop time).
        self._queued_since = 0.0

    def _standing(self) -> bool:
        """Whether calls have been waiting without a break for STANDING_WAITS times the
        longest wait: a burst has passed by then, so what stays is overload, and a call
        that waits behind it would only be refused later, after costing more."""
        return bool(self._waiting) and (
            asyncio.get_running_loop().time() - self._queued_since > STANDING_WAITS * self._max_wait
        )

    async def enter(self) -> bool:
        """Take a slot, waiting for one if need be; False when refused (see the module
        docstring). A True must be matched by a `leave`."""
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return True
        if len(self._waiting) >= self._max_queued or self._standing():
            return False
        loop = asyncio.get_running_loop()
        if not self._waiting:
            self._queued_since = loop.time()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, self._max_wait)
        except BaseException as error:  # timed out, or the call itself was cancelled
            if waiter.done() and not waiter.cancelled():
                self.leave()  # a slot came just as it gave up: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            if isinstance(error, TimeoutError):
                return False
            raise
        return True

    def leave(self) -> None:
        """Give the slot to the first call still waiting, or back."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight stays
                return
        self.in_flight -= 1


class Gates:
    """The gates of one app: one every call passes, one more for its expensive methods."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._every = Gate(limits.max_in_flight, limits.max_queued, limits.max_queue_wait)
        # An expensive call never waits: its slot frees only after tens of milliseconds,
        # and a sign-in refused at once may be sent again by its caller's sidecar.
        self._expensive = Gate(limits.expensive_in_flight, 0, 0.0)

    def of(self, method: str) -> tuple[Gate, ...]:
        """The gates a call to `method` (a gRPC path) passes: none for the platform's own
        (health, reflection), which must answer however busy the app is."""
        if method.startswith("/grpc."):
            return ()
        if method.rsplit("/", 1)[-1] in self._limits.expensive_methods:
            return (self._every, self._expensive)
        return (self._every,)


async def enter_all(gates: tuple[Gate, ...]) -> bool:
    """Enter every gate in turn; on a refusal (or cancellation) leave those entered."""
    entered: list[Gate] = []
    try:
        for gate in gates:
            if not await gate.enter():
                break
            entered.append(gate)
        else:
            return True
    except BaseException:
        leave_all(entered)
        raise
    leave_all(entered)
    return False


def leave_all(gates: Sequence[Gate]) -> None:
    for gate in gates:
        gate.leave()


def refusal(domain: str) -> status_pb2.Status:
    """The status of a call refused unstarted: UNAVAILABLE, OVERLOADED, retry shortly."""
    info, retry = any_pb2.Any(), any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="OVERLOADED", domain=domain))
    retry.Pack(
        error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(nanos=RETRY_DELAY_MS * 1_000_000)
        )
    )
    return status_pb2.Status(
        code=code_pb2.UNAVAILABLE,
        message="the service is at its limit of calls in flight; try again shortly",
        details=[info, retry],
    )
