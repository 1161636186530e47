"""What `meshctl rollout` does to a running mesh: start a rollout, undo one, set a split by
hand. Each reads and changes the split and the rollout's state under `routing.changing`,
so it never races the supervisor's `RolloutController`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mesh.control import routing
from mesh.control.rollouts import store
from mesh.control.rollouts.model import (
    BLUE_GREEN,
    PROGRESSING,
    PROMOTED,
    UNDONE,
    Rollout,
    RolloutSpec,
)
from mesh.control.topology import Topology


class RolloutError(RuntimeError):
    """A rollout cannot be started or undone as asked; the message says why."""


def current_weights(run_dir: Path, topology: Topology) -> dict[str, dict[str, int]]:
    """The split the mesh follows now (mesh.yaml's where no layer names one)."""
    return routing.checked(topology, routing.read_weights(routing.routing_root(run_dir)))


def start(
    run_dir: Path,
    topology: Topology,
    spec: RolloutSpec,
    instances: Sequence[Mapping[str, Any]],
) -> Rollout:
    """Move the first step of calls (blue-green: every call, once every instance of the
    canary is SERVING) to the canary; the supervisor's controller takes it from there.
    `instances` are `state.json`'s."""
    known = versions(topology, spec.service)
    if spec.canary not in known:
        raise RolloutError(
            f"{spec.service} has no version {spec.canary!r} (its versions: {', '.join(known)})"
        )
    with routing.changing(run_dir):
        previous = store.load(run_dir, spec.service)
        if previous is not None and previous.status == PROGRESSING:
            raise RolloutError(
                f"a rollout of {spec.service} to {previous.spec.canary} is in progress; "
                "`meshctl rollout undo` it first"
            )
        before = current_weights(run_dir, topology)[spec.service]
        stable = max(before, key=lambda version: before[version])
        if stable == spec.canary:
            raise RolloutError(f"{spec.canary} already takes {before[stable]}% of the calls")
        if spec.strategy == BLUE_GREEN:
            _smoke_check(spec, instances)
        rollout = Rollout(spec, stable, before)
        step = "every call" if spec.strategy == BLUE_GREEN else f"{spec.steps[0]}% of the calls"
        rollout.decide("start", f"{step} to {spec.canary}, the rest to {stable}")
        apply(run_dir, topology, rollout)
    return rollout


def undo(run_dir: Path, topology: Topology, service: str) -> Rollout:
    """Stop the rollout of `service` in progress, or reverse the last one promoted: the
    split it started from, at once (the old version kept running)."""
    versions(topology, service)
    with routing.changing(run_dir):
        rollout = store.load(run_dir, service)
        if rollout is None or rollout.status not in (PROGRESSING, PROMOTED):
            said = "no rollout" if rollout is None else f"its last rollout was {rollout.status}"
            raise RolloutError(f"nothing to undo for {service}: {said}")
        rollout.status = UNDONE
        split = ", ".join(f"{version} {share}%" for version, share in rollout.before.items())
        rollout.decide("undo", f"back to {split}")
        apply(run_dir, topology, rollout)
    return rollout


def set_weights(run_dir: Path, topology: Topology, service: str, shares: Mapping[str, int]) -> None:
    """Split `service`'s calls as `shares` says, by hand; refused during a rollout."""
    versions(topology, service)
    with routing.changing(run_dir):
        rollout = store.load(run_dir, service)
        if rollout is not None and rollout.status == PROGRESSING:
            raise RolloutError(
                f"a rollout of {service} is in progress; `meshctl rollout undo {service}` first"
            )
        weights = current_weights(run_dir, topology)
        try:
            weights.update(routing.checked(topology, {service: shares}))
        except routing.WeightsError as error:
            raise RolloutError(str(error)) from None
        routing.write_weights(run_dir, weights)


def apply(run_dir: Path, topology: Topology, rollout: Rollout) -> None:
    """Write `rollout`'s split and state; the caller holds `routing.changing`."""
    weights = current_weights(run_dir, topology)
    weights[rollout.spec.service] = rollout.weights()
    routing.write_weights(run_dir, weights)
    store.save(run_dir, rollout)


def versions(topology: Topology, service: str) -> list[str]:
    """The versions of `service`; RolloutError if it is no service, or has none."""
    if service not in topology.services:
        raise RolloutError(f"no service {service!r} (services: {', '.join(topology.services)})")
    versions = [v.name for v in topology.services[service].versions]
    if not versions:
        raise RolloutError(f"{service} has no versions: give it `versions:` in mesh.yaml")
    return versions


def _smoke_check(spec: RolloutSpec, instances: Sequence[Mapping[str, Any]]) -> None:
    """Every instance of the canary is up and answers its health checks."""
    mine = [
        i for i in instances if i["service"] == spec.service and i.get("version") == spec.canary
    ]
    sick = [f"{i['instance']} {i['health']}" for i in mine if i["health"] != "SERVING"]
    if not mine or sick:
        raise RolloutError(
            f"the smoke check of {spec.canary} failed: {', '.join(sick) or 'no instance runs'}; "
            "nothing switched"
        )
