"""A circuit breaker for a dependency a service can answer without (a catalog page
without stock levels while inventory does not answer: `mesh.runtime.degradation`).

Each call to a dependency that hangs holds one of the caller's in-flight places for its
whole timeout, so under load a hung dependency makes every answer that needs it slow
and few. A circuit stops asking one that keeps failing to answer:

- closed: every call goes; `TRIP_AFTER` calls in a row that got no answer open it;
- open: no call goes for `OPEN_SECONDS`: the caller answers without it at once;
- half-open: then one call goes as a trial while the others still do without; its
  answer closes the circuit, its failure opens it again.

A call that ends for the caller's own reasons (its deadline, a cancellation) says
nothing of the dependency: it neither trips nor closes the circuit. Envoy's outlier
detection cannot stand in: it ejects a host, and with every host of a dependency
ejected Envoy routes to them all again (its panic threshold).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum

from mesh.runtime.metrics import CIRCUIT_OPEN

log = logging.getLogger(__name__)

#: Calls in a row without an answer that open a circuit: one lost call is not an outage.
TRIP_AFTER = 3
#: How long an open circuit lets no call through before it tries one.
OPEN_SECONDS = 1.0


class Outcome(Enum):
    """What a call's end says of the dependency."""

    ANSWERED = "answered"
    UNANSWERED = "unanswered"
    #: The call ended for the caller's own reasons (its deadline, a cancellation).
    NOTHING = "nothing"


class CircuitOpen(Exception):
    """The call was not made: the dependency failed to answer the calls before it."""


class Circuit:
    """The calls to one dependency, and whether to make the next one. `outcome` says
    what a call's exception tells of the dependency; a call that returns was answered."""

    def __init__(
        self,
        dependency: str,
        outcome: Callable[[BaseException], Outcome],
        *,
        trip_after: int = TRIP_AFTER,
        open_seconds: float = OPEN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self._outcome = outcome
        self._trip_after = trip_after
        self._open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._open_until: float | None = None
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Around one call: raises `CircuitOpen` when it must not be made, and records
        how the call ended."""
        trial = self._admit()
        try:
            yield
        except BaseException as failure:
            self._ended(trial, self._outcome(failure))
            raise
        self._ended(trial, Outcome.ANSWERED)

    def _admit(self) -> bool:
        """Whether the call is the half-open circuit's trial; raises `CircuitOpen` when
        the call must not be made."""
        if self._open_until is None:
            return False
        if self._trial or self._clock() < self._open_until:
            raise CircuitOpen(
                f"not called: {self.dependency} left the last {self._failures} call(s) "
                f"unanswered; one call tries it again {self._open_seconds:g} s after the "
                "last unanswered one"
            )
        self._trial = True
        return True

    def _ended(self, trial: bool, outcome: Outcome) -> None:
        if trial:
            self._trial = False
        if outcome is Outcome.ANSWERED:
            self._close()
        elif outcome is Outcome.UNANSWERED:
            self._failures += 1
            if trial or self._failures >= self._trip_after:
                self._open()

    def _open(self) -> None:
        if self._open_until is None:
            log.warning(
                "%s left %d calls in a row unanswered: not calling it for %g s, then "
                "one call at a time until one is answered",
                self.dependency, self._failures, self._open_seconds,
            )  # fmt: skip
            CIRCUIT_OPEN.labels(self.dependency).set(1)
        self._open_until = self._clock() + self._open_seconds

    def _close(self) -> None:
        if self._open_until is not None:
            log.warning("%s answered again: calling it as before", self.dependency)
            CIRCUIT_OPEN.labels(self.dependency).set(0)
        self._open_until = None
        self._failures = 0
