"""The edge's objects: a Deployment of two pods (Envoy, its companion, and an init
container that writes the files the edge serves) behind the Service `edge`, with a port
for plain HTTP (unless `edge.http: off`) and one for HTTPS (with `edge.https`). The
HTTPS certificate is the Secret `edge-tls` (`identity.edge_tls_secret`), mounted whole:
the kubelet updates a changed Secret by renaming a link into the mount, which Envoy
watches, so a renewed or replaced certificate is served without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.control.api import Api
from mesh.control.envoy import edge
from mesh.control.plan import EdgePlan, MeshPlan
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
#: The Secret (and the volume) of the edge's HTTPS certificate, and where it is mounted.
TLS_SECRET = "edge-tls"
TLS_DIR = Path("/etc/shop/edge-tls")
_TLS_MOUNT = {"name": TLS_SECRET, "mountPath": str(TLS_DIR), "readOnly": True}
#: The volume the companion writes the deny list of API keys into, for the edge.
KEYS_VOLUME = "edge-keys"
_KEYS_MOUNT = {"name": KEYS_VOLUME, "mountPath": str(containers.EDGE_KEYS_DIR)}


def edge_objects(topology: Topology, plan: MeshPlan, api: Api) -> list[dict[str, Any]]:
    assert plan.edge is not None
    edge_files = edge.files_in(containers.EDGE_FILES_DIR)
    https = bool(plan.edge.https_port)
    server = (TLS_DIR / "tls.crt", TLS_DIR / "tls.key") if https else None

    def render(of: Topology) -> dict[str, str]:
        return containers.envoy_files(
            lambda sds: edge.edge_config(of, plan, api, sds, edge_files), certificate(), server
        )

    files = render(topology)
    split = containers.reads_split(files)
    rules = edge.resolve_rules(topology, api)
    companion = _companion(rules, edge_files, plan.edge)
    volumes = [{"name": FILES_VOLUME, "emptyDir": {}}]
    if https:
        volumes.append({"name": TLS_SECRET, "secret": {"secretName": TLS_SECRET}})
    if plan.edge.deny_list is not None:
        volumes.append({"name": KEYS_VOLUME, "emptyDir": {}})
    pod = {
        "initContainers": [_write_files(plan.edge), _envoy(plan, split)],
        "containers": [companion],
        "volumes": envoy_pod_volumes(NAME, CONFIG_MAP, *volumes, split=split),
    }
    return [
        service_account(NAME, NAME),
        config_map(CONFIG_MAP, NAME, files),
        service(NAME, NAME, _ports(plan)),
        deployment(NAME, NAME, 2, pod, split_free_hash(topology, render)),
        pdb(NAME, NAME, minAvailable=1),
    ]


def _write_files(edge_plan: EdgePlan) -> dict[str, Any]:
    """Writes the descriptor set, OpenAPI document and docs page the edge serves, and the
    deny list of API keys it starts with."""
    mounts = [_FILES_MOUNT, TMP_MOUNT]
    if edge_plan.deny_list is not None:
        mounts.append(_KEYS_MOUNT)
    return {
        "name": FILES_VOLUME,
        "image": containers.images()["shop"],
        "command": [
            "meshctl",
            "render",
            "edge-files",
            str(containers.EDGE_FILES_DIR),
            *containers.deny_list_arguments(edge_plan),
        ],
        "resources": resources("50m", "64Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": mounts,
    }


def _ports(plan: MeshPlan) -> list[tuple[str, int]]:
    """The edge's ports for clients: plain HTTP unless off, HTTPS if any."""
    assert plan.edge is not None
    ports = [("http", containers.EDGE_PORT)] if plan.edge.port else []
    return ports + ([("https", containers.EDGE_HTTPS_PORT)] if plan.edge.https_port else [])


def _envoy(plan: MeshPlan, split: bool) -> dict[str, Any]:
    assert plan.edge is not None
    ports = [*_ports(plan), ("probe", containers.PROBE_PORT)]
    envoy = envoy_container(CONFIG_MAP, ports, split=split)
    envoy["volumeMounts"].append({**_FILES_MOUNT, "readOnly": True})
    if plan.edge.https_port:
        envoy["volumeMounts"].append(_TLS_MOUNT)
    if plan.edge.deny_list is not None:
        envoy["volumeMounts"].append({**_KEYS_MOUNT, "readOnly": True})
    return envoy


def _companion(
    rules: edge.EdgeRules, edge_files: edge.EdgeFiles, edge_plan: EdgePlan
) -> dict[str, Any]:
    """Reflection of the public API and health; the deny list of API keys, written into a
    volume the edge's Envoy reads."""
    check = {"grpc": {"port": containers.PROBE_PORT}, "periodSeconds": 5}
    arguments = edge.companion_arguments(rules, edge_plan, edge_files.descriptor_set)
    mounts = [{**_FILES_MOUNT, "readOnly": True}, TMP_MOUNT]
    if edge_plan.deny_list is not None:
        mounts.append(_KEYS_MOUNT)
    return {
        "name": "companion",
        "image": containers.images()["shop"],
        "command": ["python", *arguments],
        "readinessProbe": check,
        "livenessProbe": {**check, "periodSeconds": 20, "failureThreshold": 3},
        "resources": resources("50m", "96Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": mounts,
    }
