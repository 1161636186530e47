"""Where the splits and rollouts of a mesh stand, as `meshctl rollout status` and
`meshctl status` print them."""

from __future__ import annotations

from pathlib import Path

from mesh.control.rollouts import actions, store
from mesh.control.rollouts.model import Decision, Rollout
from mesh.control.topology import Topology


def status_lines(
    where: Path, topology: Topology, service: str | None = None, last: int | None = None
) -> list[str]:
    """The split of each service with versions (of `service` alone, if given) and where
    its last rollout stands, with its decisions (the `last` ones, if given)."""
    if service is not None:
        actions.versions(topology, service)
    weights = actions.current_weights(where, topology)
    lines = []
    for name, shares in sorted(weights.items()):
        if service not in (None, name):
            continue
        split = ", ".join(f"{version} {share}%" for version, share in shares.items())
        lines.append(f"{name}: {split}")
        rollout = store.load(where, name)
        if rollout is not None:
            spec = rollout.spec
            lines.append(
                f"  rollout to {spec.canary} ({spec.strategy}, from {rollout.stable}): "
                f"{rollout.status}, step {rollout.step + 1} of {len(spec.steps)}"
            )
            shown = rollout.decisions[-last:] if last else rollout.decisions
            lines += [f"    {decision_line(d, rollout)}" for d in shown]
    if not lines:
        lines.append("no service has versions (give one `versions:` in mesh.yaml)")
    return lines


def decision_line(decision: Decision, rollout: Rollout) -> str:
    figures = [
        f"{name}: {found.describe()}"
        for name, found in (
            (rollout.spec.canary, decision.canary),
            (rollout.stable, decision.stable),
        )
        if found is not None
    ]
    said = f"{decision.at} {decision.action}: {rollout.spec.canary} {decision.weight}%"
    return "; ".join([f"{said} ({decision.reason})" if decision.reason else said, *figures])
