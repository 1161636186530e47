"""A clock a test moves by hand, for code that takes its clock as an argument."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Clock(Generic[T]):
    """Calling it tells `now`, which the test sets or moves."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now
