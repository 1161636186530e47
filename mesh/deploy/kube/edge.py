"""The edge's objects: a Deployment of two pods (Envoy, its companion, and an init
container that writes the files the edge serves) behind the Service `edge`."""

from __future__ import annotations

from typing import Any

from mesh.control.api import Api
from mesh.control.envoy import edge
from mesh.control.plan import MeshPlan
from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.kube.objects import (
    RESTRICTED,
    TMP_MOUNT,
    certificate,
    config_map,
    deployment,
    envoy_container,
    envoy_pod_volumes,
    pdb,
    resources,
    service,
    service_account,
    split_free_hash,
)

NAME = "edge"
CONFIG_MAP = "edge-envoy"
FILES_VOLUME = "edge-files"
_FILES_MOUNT = {"name": FILES_VOLUME, "mountPath": str(containers.EDGE_FILES_DIR)}


def edge_objects(topology: Topology, plan: MeshPlan, api: Api) -> list[dict[str, Any]]:
    assert plan.edge is not None
    edge_files = edge.files_in(containers.EDGE_FILES_DIR)

    def render(of: Topology) -> dict[str, str]:
        return containers.envoy_files(
            lambda sds: edge.edge_config(of, plan, api, sds, edge_files), certificate()
        )

    files = render(topology)
    split = containers.reads_split(files)
    companion = _companion(edge.resolve_rules(topology, api), edge_files)
    files_volume = {"name": FILES_VOLUME, "emptyDir": {}}
    pod = {
        "initContainers": [_write_files(), _envoy(split)],
        "containers": [companion],
        "volumes": envoy_pod_volumes(NAME, CONFIG_MAP, files_volume, split=split),
    }
    return [
        service_account(NAME, NAME),
        config_map(CONFIG_MAP, NAME, files),
        service(NAME, NAME, [("http", containers.EDGE_PORT)]),
        deployment(NAME, NAME, 2, pod, split_free_hash(topology, render)),
        pdb(NAME, NAME, minAvailable=1),
    ]


def _write_files() -> dict[str, Any]:
    """Writes the descriptor set, OpenAPI document and docs page the edge serves."""
    return {
        "name": FILES_VOLUME,
        "image": containers.images()["shop"],
        "command": ["meshctl", "render", "edge-files", str(containers.EDGE_FILES_DIR)],
        "resources": resources("50m", "64Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [_FILES_MOUNT, TMP_MOUNT],
    }


def _envoy(split: bool) -> dict[str, Any]:
    envoy = envoy_container(
        CONFIG_MAP, [("http", containers.EDGE_PORT), ("probe", containers.PROBE_PORT)], split=split
    )
    envoy["volumeMounts"].append({**_FILES_MOUNT, "readOnly": True})
    return envoy


def _companion(rules: edge.EdgeRules, edge_files: edge.EdgeFiles) -> dict[str, Any]:
    """Reflection of the public API and health."""
    check = {"grpc": {"port": containers.PROBE_PORT}, "periodSeconds": 5}
    arguments = edge.companion_arguments(
        rules, containers.COMPANION_PORT, containers.EDGE_PORT, edge_files.descriptor_set
    )
    return {
        "name": "companion",
        "image": containers.images()["shop"],
        "command": ["python", *arguments],
        "readinessProbe": check,
        "livenessProbe": {**check, "periodSeconds": 20, "failureThreshold": 3},
        "resources": resources("50m", "96Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [{**_FILES_MOUNT, "readOnly": True}, TMP_MOUNT],
    }
