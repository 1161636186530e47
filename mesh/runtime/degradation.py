"""Answers given on purpose without what a dependency failed to provide (a catalog page
without stock levels while inventory does not answer): each one is counted
(`shop_degraded_answers_total{dependency, method}`), and said in a WARNING line, the
first at once and then at most one every `LOG_EVERY_SECONDS` per dependency and method,
with how many answers it stands for, so a dependency that stays away under load does not
flood the log."""

from __future__ import annotations

import logging
import time

from mesh.runtime.metrics import DEGRADED_ANSWERS

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0

#: (dependency, method) -> when its last line was written, and answers since.
_said: dict[tuple[str, str], tuple[float, int]] = {}


def degraded(dependency: str, method: str, fallback: str, cause: str) -> None:
    """Count one answer `method` gave without `dependency` (which failed with `cause`),
    as `fallback` says; log it unless a line for the pair was written lately."""
    DEGRADED_ANSWERS.labels(dependency, method).inc()
    now = time.monotonic()
    last, unsaid = _said.get((dependency, method), (float("-inf"), 0))
    if now - last < LOG_EVERY_SECONDS:
        _said[(dependency, method)] = (last, unsaid + 1)
        return
    _said[(dependency, method)] = (now, 0)
    since = f" ({unsaid + 1} such answers since the last line)" if unsaid else ""
    log.warning(
        "%s: %s did not answer (%s); degraded answer: %s%s",
        method, dependency, cause, fallback, since,
    )  # fmt: skip
