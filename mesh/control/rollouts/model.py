"""A rollout as data: what was asked (`RolloutSpec`), where it stands (`Rollout`), the
figures each decision was made on (`Figures`, `Decision`), and its JSON form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mesh.control.topology import TOTAL_WEIGHT

#: How the canary takes over: in steps of its share, or all at once after a smoke check.
CANARY, BLUE_GREEN = "canary", "blue-green"
#: Where a rollout stands: still moving, or ended one of three ways.
PROGRESSING, PROMOTED, ROLLED_BACK, UNDONE = "progressing", "promoted", "rolled back", "undone"
ENDED = (PROMOTED, ROLLED_BACK, UNDONE)

DEFAULT_STEPS = (5, 25, 50, 100)
DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_MAX_ERROR_RATE = 0.01
#: Fewer calls than this to the canary in a window cannot tell a bad version from bad luck.
DEFAULT_MIN_REQUESTS = 20


@dataclass(frozen=True)
class RolloutSpec:
    """What `meshctl rollout start` asked: move `service`'s calls to its version `canary`."""

    service: str
    canary: str
    strategy: str = CANARY
    steps: tuple[int, ...] = DEFAULT_STEPS
    """The canary's share (percent) at each step; the last is 100."""
    interval: float = DEFAULT_INTERVAL_SECONDS
    """Seconds each step is watched before the next."""
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    """The share of the canary's calls that may end in a server error."""
    max_p99_ms: float | None = None
    min_requests: int = DEFAULT_MIN_REQUESTS

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != TOTAL_WEIGHT:
            raise ValueError(f"the last step must be {TOTAL_WEIGHT} (the canary takes every call)")
        if any(b <= a for a, b in zip((0, *self.steps), self.steps, strict=False)):
            raise ValueError("steps must grow, each above 0: e.g. 5,25,50,100")
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError("the error rate is a share from 0% to 100%")
        if self.interval <= 0:
            raise ValueError("the interval must be above 0")
        if self.min_requests < 1:
            raise ValueError("the calls needed to judge a window must be 1 or more")


@dataclass(frozen=True)
class Figures:
    """One version's calls over a window, as every caller's Envoy counted them: tries,
    per second, the share that ended in a server error, the p99."""

    requests: float
    per_second: float
    error_ratio: float
    p99_ms: float | None

    def describe(self) -> str:
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.1f} ms"
        return (
            f"{self.requests:.0f} calls ({self.per_second:.1f}/s), "
            f"{100 * self.error_ratio:.2f}% errors, p99 {p99}"
        )


@dataclass(frozen=True)
class Decision:
    """One step of a rollout and the numbers it was made on."""

    at: str
    action: str
    """start, promote, hold, rollback, undo."""
    weight: int
    """The canary's share after it."""
    reason: str
    canary: Figures | None = None
    stable: Figures | None = None


@dataclass
class Rollout:
    """A rollout as `run_dir/rollouts/<service>.json` keeps it."""

    spec: RolloutSpec
    stable: str
    """The version the canary replaces, which takes every call back on a rollback."""
    before: dict[str, int]
    """The split when it started, which `meshctl rollout undo` returns to."""
    status: str = PROGRESSING
    step: int = 0
    """The index in `spec.steps` of the canary's current share."""
    window_started: float | None = None
    """When the current step's window began (epoch seconds; None: not yet watched)."""
    decisions: list[Decision] = field(default_factory=list)

    @property
    def canary_weight(self) -> int:
        return self.weights()[self.spec.canary]

    def weights(self) -> dict[str, int]:
        """The split this rollout asks for now: the canary's share of the step, the rest
        to the stable version; after a rollback all to the stable one; after an undo the
        split it started from."""
        if self.status == UNDONE:
            return dict(self.before)
        canary = 0 if self.status == ROLLED_BACK else self.spec.steps[self.step]
        shares = dict.fromkeys(self.before, 0)
        shares[self.stable] = TOTAL_WEIGHT - canary
        shares[self.spec.canary] = canary
        return shares

    def decide(self, action: str, reason: str, **figures: Figures | None) -> Decision:
        decision = Decision(now_iso(), action, self.canary_weight, reason, **figures)
        self.decisions.append(decision)
        return decision

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rollout:
        spec = data["spec"]
        return cls(
            spec=RolloutSpec(**{**spec, "steps": tuple(spec["steps"])}),
            stable=data["stable"],
            before=data["before"],
            status=data["status"],
            step=data["step"],
            window_started=data["window_started"],
            decisions=[_decision(d) for d in data["decisions"]],
        )


def _decision(data: dict[str, Any]) -> Decision:
    figures = {k: None if data[k] is None else Figures(**data[k]) for k in ("canary", "stable")}
    return Decision(data["at"], data["action"], data["weight"], data["reason"], **figures)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
