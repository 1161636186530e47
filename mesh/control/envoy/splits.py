"""Routes to a service with versions: a split by the weights in Envoy's runtime, and the
same routes pinned to one version by a header or a cookie (`mesh.control.routing`)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mesh.control.routing import (
    RUNTIME_PREFIX,
    VERSION_COOKIE,
    VERSION_HEADER,
    cluster_name,
)
from mesh.control.topology import Topology


def target(topology: Topology, service: str) -> dict[str, Any]:
    """Where a route to `service` goes: its one cluster, or a split between its versions'
    clusters, each weighted by the runtime key `routing.<cluster>` (the weight in
    mesh.yaml until a layer names one)."""
    versions = topology.services[service].versions
    if not versions:
        return {"cluster": cluster_name(service, "")}
    clusters = [
        {"name": cluster_name(service, version.name), "weight": version.weight}
        for version in versions
    ]
    return {"weighted_clusters": {"runtime_key_prefix": RUNTIME_PREFIX, "clusters": clusters}}


def _pin_header(version: str) -> dict[str, Any]:
    return {"name": VERSION_HEADER, "string_match": {"exact": version}}


def _pin_cookie(version: str) -> dict[str, Any]:
    cookie = re.escape(f"{VERSION_COOKIE}={version}")
    return {"name": "cookie", "string_match": {"safe_regex": {"regex": f"(.*;)? *{cookie}(;.*)?"}}}


def with_pins(
    topology: Topology, routes: list[dict[str, Any]], cookie: bool = False
) -> list[dict[str, Any]]:
    """`routes`, after a copy of each split route per version that goes to that version
    alone when the request names it in `x-shop-version` (or, with `cookie`, in the cookie
    `shop-version`)."""
    pins = [_pin_header, *([_pin_cookie] if cookie else [])]
    versions = {
        cluster_name(name, version.name): version.name
        for name, service in topology.services.items()
        for version in service.versions
    }
    pinned = [
        _pinned(route, cluster["name"], pin(versions[cluster["name"]]))
        for route in routes
        if "weighted_clusters" in route.get("route", {})
        for pin in pins
        for cluster in route["route"]["weighted_clusters"]["clusters"]
    ]
    return [*pinned, *routes]


def _pinned(route: dict[str, Any], cluster: str, header: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(route)
    copied["match"].setdefault("headers", []).append(header)
    del copied["route"]["weighted_clusters"]
    copied["route"]["cluster"] = cluster
    return copied


def runtime(topology: Topology, root: str | Path, callees: Iterable[str]) -> dict[str, Any]:
    """The bootstrap's `layered_runtime` of an Envoy that calls `callees`: the split,
    read through the link `root`, when one of them has versions; nothing otherwise."""
    if not any(topology.services[callee].versions for callee in callees):
        return {}
    disk = {"symlink_root": str(root), "subdirectory": "", "append_service_cluster": False}
    return {"layered_runtime": {"layers": [{"name": "split", "disk_layer": disk}]}}
