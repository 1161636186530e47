"""How calls are split between a service's versions, and how the split changes while the
mesh runs, without restarting anything.

Every caller of a service with `versions:` (its callers' sidecars and the edge) reaches
each version as an Envoy cluster of its own (`cluster_name`: `catalog_v2`) and picks one
per call by weight (Envoy's weighted clusters). The weights live outside the Envoys'
configuration, in Envoy's runtime: a directory of small files, one per version's cluster
(`routing.catalog_v2`, holding a percent), which each Envoy reads through a symbolic link
(`layered_runtime.disk_layer.symlink_root`). A new split is a new directory and the link
swapped onto it in one rename, which every Envoy notices at once (inotify) and reads
whole, so no call sees half a change. In Kubernetes the directory is a ConfigMap, whose
mount the kubelet swaps the same way (`..data`).

A caller picks a version itself with the header `x-shop-version: <version>`, or a browser
with the cookie `shop-version=<version>` at the edge (testers, a blue-green smoke check);
a version the service does not have is ignored. Every response of a service with versions
says which one answered (`x-shop-version`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from mesh.control.topology import TOTAL_WEIGHT, Topology

#: The runtime keys' prefix (`WeightedCluster.runtime_key_prefix`).
RUNTIME_PREFIX = "routing"
#: The request header that picks a version, and the response header that names it.
VERSION_HEADER = "x-shop-version"
#: The cookie that picks a version at the edge.
VERSION_COOKIE = "shop-version"
#: Where a run directory keeps the split: `layers/<n>/` and the link `current` to one.
ROUTING_DIR = "routing"
CURRENT = "current"
#: Layers kept besides the current one, for an Envoy still reading the one before.
KEPT_LAYERS = 2

#: Each versioned service's weights: service -> version -> percent.
Weights = Mapping[str, Mapping[str, int]]


class WeightsError(ValueError):
    """A split that does not fit the topology; the message says why."""


def cluster_name(service: str, version: str) -> str:
    """The Envoy cluster of one release: the service's name, with `_<version>` for a
    service with versions (service and version names have no underscore)."""
    return f"{service}_{version}" if version else service


def runtime_key(service: str, version: str) -> str:
    return f"{RUNTIME_PREFIX}.{cluster_name(service, version)}"


def routing_root(run_dir: Path) -> Path:
    """The link every local Envoy reads the split through."""
    return run_dir.absolute() / ROUTING_DIR / CURRENT


def initial_weights(topology: Topology) -> dict[str, dict[str, int]]:
    """The split mesh.yaml starts with, for each service with versions."""
    return {
        name: {v.name: v.weight for v in service.versions}
        for name, service in topology.services.items()
        if service.versions
    }


def checked(topology: Topology, weights: Weights) -> dict[str, dict[str, int]]:
    """`weights` for every service with versions, each service's shares naming only its
    versions (those left out get 0) and adding up to 100; WeightsError if not."""
    found = initial_weights(topology)
    for service, shares in weights.items():
        if service not in found:
            versioned = ", ".join(sorted(found)) or "none"
            raise WeightsError(f"{service!r} has no versions (services with versions: {versioned})")
        unknown = set(shares) - set(found[service])
        if unknown:
            raise WeightsError(
                f"{service} has no version {', '.join(sorted(unknown))} "
                f"(its versions: {', '.join(found[service])})"
            )
        if any(not 0 <= share <= TOTAL_WEIGHT for share in shares.values()):
            raise WeightsError(f"{service}: a weight is a percent, from 0 to {TOTAL_WEIGHT}")
        if sum(shares.values()) != TOTAL_WEIGHT:
            raise WeightsError(
                f"{service}: the weights add up to {sum(shares.values())}, not {TOTAL_WEIGHT}"
            )
        found[service] = {version: shares.get(version, 0) for version in found[service]}
    return found


def runtime_files(weights: Weights) -> dict[str, str]:
    """The runtime layer of a split: file (runtime key) -> content (percent)."""
    return {
        runtime_key(service, version): str(share)
        for service, shares in sorted(weights.items())
        for version, share in shares.items()
    }


def read_weights(root: Path) -> dict[str, dict[str, int]]:
    """The split the layer at `root` holds."""
    weights: dict[str, dict[str, int]] = {}
    if not root.exists():
        return weights
    for path in sorted(root.iterdir()):
        prefix, _, cluster = path.name.partition(".")
        service, _, version = cluster.partition("_")
        if prefix == RUNTIME_PREFIX and version:
            weights.setdefault(service, {})[version] = int(path.read_text())
    return weights


def write_weights(run_dir: Path, weights: Weights) -> Path:
    """Make `weights` the split every Envoy of the mesh at `run_dir` follows: a new layer,
    then the link swapped onto it in one rename. Take `changing` around it."""
    routing = run_dir.absolute() / ROUTING_DIR
    layers = routing / "layers"
    layers.mkdir(parents=True, exist_ok=True)
    layer = Path(tempfile.mkdtemp(prefix="layer-", dir=layers))
    for name, text in runtime_files(weights).items():
        (layer / name).write_text(text + "\n")
    layer.chmod(0o755)
    swap_link(routing / CURRENT, str(layer.relative_to(routing)))
    _prune(layers, layer)
    return layer


def swap_link(link: Path, target: str) -> None:
    """Point the symbolic link `link` at `target` in one rename, so whoever reads through
    it (an Envoy's runtime) sees the old target or the new one, never neither."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(f".{link.name}.new")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


@contextlib.contextmanager
def changing(run_dir: Path) -> Iterator[None]:
    """Hold the split of the mesh at `run_dir` while reading and changing it (and a
    rollout's state with it): the supervisor's rollouts and `meshctl rollout` take turns."""
    routing = run_dir.absolute() / ROUTING_DIR
    routing.mkdir(parents=True, exist_ok=True)
    with (routing / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _prune(layers: Path, current: Path) -> None:
    """Remove all but the newest layers (by change time), never `current`."""
    older = sorted(
        (p for p in layers.iterdir() if p != current), key=lambda p: p.stat().st_mtime_ns
    )
    for stale in older[: max(0, len(older) - KEPT_LAYERS)]:
        shutil.rmtree(stale, ignore_errors=True)
