"""Admission control: each app bounds the calls it works on at once, and refuses the rest.

An app that takes every call it is sent shares its CPU among all of them, so under a load
above its capacity every call gets slower until its callers time out and retry: the work
done is wasted and the retries add more. Instead each app admits at most
`max_in_flight` calls at once, and of those at most `expensive_in_flight` to the methods
mesh.yaml marks `cost: expensive` (password hashing: tens of milliseconds of CPU each).
A call beyond a limit is refused at once, before any of its work, with UNAVAILABLE
(`reason: OVERLOADED`, a `RetryInfo`) and the `x-shop-not-applied` trailer: the caller's
sidecar then knows the call did nothing and may send it to another replica, within the
retry budget, whatever the method's idempotency.

The limits come from mesh.yaml (`admission:`) through the environment:

| variable | meaning | default |
| --- | --- | --- |
| `SHOP_MAX_IN_FLIGHT` | calls the app works on at once | 32 |
| `SHOP_EXPENSIVE_IN_FLIGHT` | of those, calls to expensive methods | 2 |
| `SHOP_EXPENSIVE_METHODS` | the expensive methods' names, comma-separated | none |
| `SHOP_MAX_BACKLOG` | unfinished work the service accepts, over all its replicas | none |
| `SHOP_MAX_BACKLOG_PER_CLIENT` | of that, one client's | none |

A backlog bounds work that goes on after the call that started it has returned (an
order's saga): the service counts what it accepted and has not finished, and refuses
a new start beyond either bound with RESOURCE_EXHAUSTED (a `QuotaFailure`, a
`RetryInfo`), since another replica would find the same backlog. How it counts is the
service's own (orders: `services.orders.handlers.place_order`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from mesh.runtime.metrics import PLATFORM_PREFIX

#: The response header (a trailer, for an app's refusal) saying the request was not
#: applied: a caller's sidecar may send it again, whatever the method.
NOT_APPLIED_HEADER = "x-shop-not-applied"

MAX_IN_FLIGHT_VARIABLE = "SHOP_MAX_IN_FLIGHT"
EXPENSIVE_IN_FLIGHT_VARIABLE = "SHOP_EXPENSIVE_IN_FLIGHT"
EXPENSIVE_METHODS_VARIABLE = "SHOP_EXPENSIVE_METHODS"
MAX_BACKLOG_VARIABLE = "SHOP_MAX_BACKLOG"
MAX_BACKLOG_PER_CLIENT_VARIABLE = "SHOP_MAX_BACKLOG_PER_CLIENT"

#: How soon a refused client may try again (`RetryInfo`).
RETRY_DELAY_MS = 50
#: The same for a REST client: `Retry-After` counts whole seconds.
RETRY_AFTER_SECONDS = math.ceil(RETRY_DELAY_MS / 1000)
#: What a refused caller is told, by an app or by the Envoy that refused for it.
REFUSAL_MESSAGE = "the service is at its limit of calls in flight; try again shortly"


@dataclass(frozen=True)
class Limits:
    """An app's admission limits; see the module docstring."""

    max_in_flight: int = 32
    expensive_in_flight: int = 2
    expensive_methods: frozenset[str] = field(default_factory=frozenset)
    """Method names (`Login`), as mesh.yaml names them."""
    backlog: Backlog | None = None

    def environment(self) -> dict[str, str]:
        backlog = {} if self.backlog is None else self.backlog.environment()
        return {
            MAX_IN_FLIGHT_VARIABLE: str(self.max_in_flight),
            EXPENSIVE_IN_FLIGHT_VARIABLE: str(self.expensive_in_flight),
            EXPENSIVE_METHODS_VARIABLE: ",".join(sorted(self.expensive_methods)),
            **backlog,
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Limits:
        default = cls()
        names = environ.get(EXPENSIVE_METHODS_VARIABLE, "")
        return cls(
            max_in_flight=int(environ.get(MAX_IN_FLIGHT_VARIABLE) or default.max_in_flight),
            expensive_in_flight=int(
                environ.get(EXPENSIVE_IN_FLIGHT_VARIABLE) or default.expensive_in_flight
            ),
            expensive_methods=frozenset(name for name in names.split(",") if name),
            backlog=Backlog.from_environment(environ),
        )


@dataclass(frozen=True)
class Backlog:
    """How much accepted, unfinished work a service holds, in all and for one client."""

    total: int
    per_client: int

    def environment(self) -> dict[str, str]:
        return {
            MAX_BACKLOG_VARIABLE: str(self.total),
            MAX_BACKLOG_PER_CLIENT_VARIABLE: str(self.per_client),
        }

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Backlog | None:
        total = environ.get(MAX_BACKLOG_VARIABLE)
        if not total:
            return None
        return cls(int(total), int(environ.get(MAX_BACKLOG_PER_CLIENT_VARIABLE) or total))


class Gate:
    """The calls of one class in flight, and how many may be."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit


class Gates:
    """The gates of one app: one every call passes, one more for its expensive methods."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._every = Gate(limits.max_in_flight)
        self._expensive = Gate(limits.expensive_in_flight)

    def of(self, method: str) -> tuple[Gate, ...]:
        """The gates a call to `method` (a gRPC path) passes: none for the platform's own
        (health, reflection), which must answer however busy the app is."""
        if method.startswith(PLATFORM_PREFIX):
            return ()
        if method.rsplit("/", 1)[-1] in self._limits.expensive_methods:
            return (self._every, self._expensive)
        return (self._every,)


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
        message=REFUSAL_MESSAGE,
        details=[info, retry],
    )
