"""Waiting for what the software under test does on its own schedule.

A test that hopes something has happened after a fixed sleep is slow when the sleep is
long and flaky when it is short. These poll a condition until it holds, up to a
deadline, and fail with an AssertionError that names what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: What is awaited, for the failure: a text, or a function that describes the last state
#: seen (called only once the wait has failed).
What = str | Callable[[], str]


def wait_until(
    condition: Callable[[], T | None], what: What, within: float = 30, interval: float = 0.1
) -> T:
    """`condition()`'s first truthy result, polled every `interval` seconds for at most
    `within` seconds. An exception `condition` raises (an assertion that the process
    awaited is still alive, say) ends the wait at once."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(what, within))
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    what: What,
    within: float = 30,
    interval: float = 0.1,
) -> T:
    """`wait_until` for a coroutine: the event loop runs on while it waits."""
    deadline = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(what, within))
        await asyncio.sleep(interval)


def _failure(what: What, within: float) -> str:
    return f"not within {within}s: {what if isinstance(what, str) else what()}"
