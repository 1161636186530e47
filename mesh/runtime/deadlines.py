"""Deadlines carried end to end: a call made while serving another gets no more time than
the call being served has left.

A caller's deadline reaches a service as `grpc-timeout` (the edge and every sidecar
forward it, each shortening it to its own route timeout). The runner's interceptor keeps
the deadline of the call being served (`served`), and the channels a service calls its
dependencies on (`mesh.runtime.service.channel_to`) give each call the time that is left
(`Propagation`): once the first caller has given up, nobody downstream works on its
behalf. A call whose deadline has passed before it starts is refused unstarted with
DEADLINE_EXCEEDED; one whose caller goes away while it runs is cancelled by gRPC; one whose
dependency ran out of the time it was given answers DEADLINE_EXCEEDED (`ran_out`), not the
error it would give for a dependency that failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

_DEADLINE: ContextVar[float | None] = ContextVar("shop_deadline", default=None)


def remaining() -> float | None:
    """Seconds left of the deadline of the call being served; None when it has none."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


Behavior = Callable[[Any, Any], Awaitable[Any]]


def served(behavior: Behavior, method: str) -> Behavior:
    """`behavior` with its call's deadline kept for the calls it makes (see the docstring)."""

    async def call(request: Any, context: Any) -> Any:
        left = context.time_remaining()
        if left is None:
            return await behavior(request, context)
        if left <= 0:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the caller's deadline passed before the call started",
            )
        token = _DEADLINE.set(time.monotonic() + left)
        try:
            return await behavior(request, context)
        finally:
            _DEADLINE.reset(token)

    return call


#: How close to its end a served call's deadline counts as spent: a dependency's call was
#: given what was left of it, in whole milliseconds, so its timer fires a little early.
SPENT_WITHIN_SECONDS = 0.05
#: What a served call answers when a call it made ran out of the time its caller gave.
RAN_OUT = "the caller's deadline passed while a call this one made was waiting"


def ran_out(cause: BaseException | None) -> bool:
    """Whether `cause`, a dependency's failure, is the served call's own time running out:
    DEADLINE_EXCEEDED with that deadline spent. The caller then hears DEADLINE_EXCEEDED,
    as its own timer would say, whichever timer fired first."""
    left = remaining()
    return (
        isinstance(cause, grpc.aio.AioRpcError)
        and cause.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        and left is not None
        and left <= SPENT_WITHIN_SECONDS
    )


class Propagation(grpc.aio.UnaryUnaryClientInterceptor):
    """A client call made while serving another gets at most the time that one has left."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        left = remaining()
        timeout = client_call_details.timeout
        if left is not None and (timeout is None or left < timeout):
            client_call_details = client_call_details._replace(timeout=max(left, 0.0))  # type: ignore[attr-defined]
        return await continuation(client_call_details, request)
