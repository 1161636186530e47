"""`mesh.runtime.deadlines` against a fake servicer context (the real gRPC paths are in
tests/integration/test_admission.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from mesh.runtime import deadlines


class Context:
    def __init__(self, left: float | None) -> None:
        self.left = left
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.left

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise grpc.aio.AbortError()


async def seen_inside(context: Context) -> list[float | None]:
    seen: list[float | None] = []

    async def behavior(request: Any, context: Any) -> str:
        seen.append(deadlines.remaining())
        return "done"

    assert await deadlines.served(behavior, "/m")(None, context) == "done"
    return seen


async def test_the_call_being_served_keeps_its_deadline_for_the_calls_it_makes() -> None:
    (left,) = await seen_inside(Context(2.0))
    assert left is not None
    assert 1.9 < left <= 2.0
    assert deadlines.remaining() is None  # outside the call, no deadline is left behind
    assert await seen_inside(Context(None)) == [None]


async def test_a_call_whose_deadline_passed_before_it_started_does_no_work() -> None:
    context = Context(-0.01)

    async def behavior(request: Any, context: Any) -> None:
        raise AssertionError("the servicer ran")

    with pytest.raises(grpc.aio.AbortError):
        await deadlines.served(behavior, "/m")(None, context)
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED


def _failed(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "")


async def test_a_dependency_that_ran_out_of_the_callers_time_is_the_deadline_passing() -> None:
    found: list[tuple[bool, bool]] = []

    async def behavior(request: Any, context: Any) -> None:
        found.append(
            (
                deadlines.ran_out(_failed(grpc.StatusCode.DEADLINE_EXCEEDED)),
                deadlines.ran_out(_failed(grpc.StatusCode.UNAVAILABLE)),
            )
        )

    await deadlines.served(behavior, "/m")(None, Context(0.01))  # all but spent
    await deadlines.served(behavior, "/m")(None, Context(5.0))  # time left: its own timeout
    await deadlines.served(behavior, "/m")(None, Context(None))  # no deadline at all
    assert found == [(True, False), (False, False), (False, False)]
    assert not deadlines.ran_out(None)
