"""The judgement of one window of a rollout: the canary's figures against its limits and
against the stable version's over the same window. Pure: no clock, no Envoy.

A canary breaches a limit when it is over the limit and worse than the stable version
(a fault both share, a database down, is not the canary's to answer for: the step is
held instead). A breach rolls back at once, mid-window included, once the canary has
had enough calls to be judged; a window that ends without one promotes to the next step,
or holds it when the canary had too few calls or the stable version was as bad.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.control.rollouts.model import Figures, RolloutSpec

#: What a window's judgement says to do.
PROMOTE, HOLD, ROLLBACK, WAIT = "promote", "hold", "rollback", "wait"


@dataclass(frozen=True)
class Verdict:
    action: str
    reason: str


def judge(
    spec: RolloutSpec, canary: Figures, stable: Figures | None, window_ended: bool
) -> Verdict:
    """What to do after a window (or part of one, `window_ended` False) with these
    figures; `stable` None when the stable version had no calls."""
    if canary.requests < spec.min_requests:
        if not window_ended:
            return Verdict(WAIT, "")
        return Verdict(
            HOLD,
            f"{canary.requests:.0f} calls reached {spec.canary}, fewer than the "
            f"{spec.min_requests} needed to judge it",
        )
    breaches, shared = _compared(spec, canary, stable)
    if breaches:
        return Verdict(ROLLBACK, "; ".join(breaches))
    if not window_ended:
        return Verdict(WAIT, "")
    if shared:
        return Verdict(HOLD, "; ".join(shared))
    return Verdict(PROMOTE, "within every limit")


def _compared(
    spec: RolloutSpec, canary: Figures, stable: Figures | None
) -> tuple[list[str], list[str]]:
    """The limits the canary breached, and those it is over only as much as the stable."""
    breaches: list[str] = []
    shared: list[str] = []
    base = stable.error_ratio if stable is not None else 0.0
    if canary.error_ratio > spec.max_error_rate:
        found = (
            f"error rate {100 * canary.error_ratio:.2f}% over the limit of "
            f"{100 * spec.max_error_rate:.2f}% (stable {100 * base:.2f}%)"
        )
        (breaches if canary.error_ratio > base else shared).append(found)
    limit = spec.max_p99_ms
    if limit is not None and canary.p99_ms is not None and canary.p99_ms > limit:
        stable_p99 = stable.p99_ms if stable is not None else None
        found = (
            f"p99 {canary.p99_ms:.1f} ms over the limit of {limit:.0f} ms "
            f"(stable {'-' if stable_p99 is None else f'{stable_p99:.1f} ms'})"
        )
        worse = stable_p99 is None or canary.p99_ms > stable_p99
        (breaches if worse else shared).append(found)
    return breaches, shared
