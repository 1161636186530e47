"""The Kubernetes objects every part of the mesh is made of: metadata, Services,
ConfigMaps, Deployments, disruption budgets, and the pieces of a pod (security, resources,
probes, the Envoy sidecar, volumes).

A service's release (`Service.releases`) is what one Deployment runs: the service itself
(`catalog`), or one of its versions (`catalog-v2`), whose objects carry and select the
labels `app` and `version` (`release_labels`), as Istio's bookinfo labels its versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.containers import Certificate, dump
from mesh.runtime.events import NatsSettings

CLUSTER_DOMAIN = "cluster.local"
IDENTITY_DIR = Path("/etc/shop/identity")
HEADER = (
    "# Rendered from mesh.yaml by `meshctl render k8s`: do not edit by hand\n"
    "# (`make test` fails when this file differs from a fresh rendering).\n"
)

#: The volume of an Envoy container's admin socket (`containers.ADMIN_SOCKET_DIR`),
#: mounted by no other container of the pod.
ENVOY_ADMIN_VOLUME = "envoy-admin"
#: The ConfigMap of the split between services' versions (`containers.split_files`),
#: mounted at `containers.ROUTING_DIR` in every Envoy that routes to a service with versions.
ROUTING_CONFIG_MAP = "mesh-routing"
ROUTING_VOLUME = "routing"
#: The link the kubelet swaps in one rename onto a ConfigMap mount's new files when the
#: ConfigMap changes: Envoy's routing layer is read through it (`MeshPlan.routing_root`).
ROUTING_ROOT = containers.ROUTING_DIR / "..data"

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
IDENTITY_MOUNT = {"name": "identity", "mountPath": str(IDENTITY_DIR), "readOnly": True}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def identity_secret(identity: str) -> str:
    return f"{identity}-identity"


def certificate() -> Certificate:
    """Where a pod finds its identity: the Secret `<identity>-identity`, mounted."""
    return Certificate(IDENTITY_DIR / "tls.crt", IDENTITY_DIR / "tls.key", IDENTITY_DIR / "ca.crt")


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def nats_settings(topology: Topology, identity: str) -> NatsSettings:
    host = fqdn("nats", topology.namespace)
    return containers.nats_settings(topology, host, identity, certificate())


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "shop-mesh",
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def release_name(service: str, version: str) -> str:
    """The name of a release's Deployment, Service and budget: `catalog`, `catalog-v2`."""
    return f"{service}-{version}" if version else service


def release_labels(service: str, version: str) -> dict[str, str] | None:
    """The labels that pick the pods of one version of `service`; None without a version
    (its pods are picked by name, `selector`)."""
    return {"app": service, "version": version} if version else None


def meta(name: str, component: str, release: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {**labels(name, component), **(release or {})}}


def resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def millicores(amount: int, share: float = 1.0) -> str:
    """A CPU request of `share` of `amount` millicores: under contention, a container's CPU is
    in proportion to its request (`containers.cpu_share`)."""
    return f"{max(1, round(amount * share))}m"


def pod_name_env(name: str) -> dict[str, Any]:
    """The variable `name`, holding the pod's name (the downward API)."""
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def env(variables: dict[str, str]) -> list[dict[str, Any]]:
    """Environment entries; the instance is the pod's name."""
    return [
        pod_name_env(name) if name == "SHOP_INSTANCE" else {"name": name, "value": value}
        for name, value in variables.items()
    ]


def pod_security() -> dict[str, Any]:
    user, group = (int(part) for part in containers.USER.split(":"))
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def envoy_container(
    config_map: str, ports: list[tuple[str, int]], cpu_share: float = 1.0, *, split: bool = False
) -> dict[str, Any]:
    """The Envoy sidecar, as a native sidecar (an init container that keeps running); with
    `split`, it reads the routing layer (`containers.reads_split`)."""
    ready = http_probe("/healthz/ready", containers.PROBE_PORT, period=10, failures=3)
    return {
        "name": "envoy",
        "image": containers.images()["envoy"],
        "restartPolicy": "Always",
        "command": ["/usr/local/bin/envoy"],
        "args": containers.envoy_command(),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports],
        "startupProbe": {**ready, "periodSeconds": 1, "failureThreshold": 60},
        "readinessProbe": ready,
        "livenessProbe": ready,
        "resources": resources(millicores(50, cpu_share), "64Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [
            {
                "name": "envoy-config",
                "mountPath": str(containers.ENVOY_CONFIG_DIR),
                "readOnly": True,
            },
            IDENTITY_MOUNT,
            # Envoy's admin socket: writable, and the Envoy container's only.
            {"name": ENVOY_ADMIN_VOLUME, "mountPath": str(containers.ADMIN_SOCKET_DIR)},
            *([_ROUTING_MOUNT] if split else []),
        ],
    }


#: The whole ConfigMap (never a `subPath`, which the kubelet does not update).
_ROUTING_MOUNT = {
    "name": ROUTING_VOLUME,
    "mountPath": str(containers.ROUTING_DIR),
    "readOnly": True,
}


def envoy_pod_volumes(
    identity: str, config_map: str, *extra: dict[str, Any], split: bool = False
) -> list[dict[str, Any]]:
    """The volumes of a pod with an Envoy container, and `extra`; with `split`, the routing
    layer's ConfigMap."""
    return [
        {"name": "envoy-config", "configMap": {"name": config_map}},
        {"name": "identity", "secret": {"secretName": identity_secret(identity)}},
        {"name": "tmp", "emptyDir": {}},
        {"name": ENVOY_ADMIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        *extra,
        *([{"name": ROUTING_VOLUME, "configMap": {"name": ROUTING_CONFIG_MAP}}] if split else []),
    ]


def data_volume_claim() -> dict[str, Any]:
    """A StatefulSet pod's own volume `data`."""
    return {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }


def service_account(name: str, component: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, component)}


def config_map(
    name: str,
    component: str,
    files: Mapping[str, str],
    release: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, component, release),
        "data": dict(sorted(files.items())),
    }


def pdb(
    name: str, component: str, release: Mapping[str, str] | None = None, **budget: Any
) -> dict[str, Any]:
    """The disruption budget of the pods of `name` (of a version: of its `release` labels)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, component, release),
        "spec": {"selector": {"matchLabels": release or selector(name)}, **budget},
    }


def service(
    name: str,
    component: str,
    ports: list[tuple[str, int]],
    selects: str | None = None,
    release: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The Service `name` of the pods of `selects` (default `name`), or of one version's
    pods, those with its `release` labels."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, component, release),
        "spec": {
            "selector": release or selector(selects or name),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
                for port_name, port in ports
            ],
            **spec,
        },
    }


def deployment(
    name: str,
    component: str,
    replicas: int,
    pod: dict[str, Any],
    config: str,
    release: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment of pods with an Envoy container whose files hash to `config`; for one
    version of a service, its pods carry its `release` labels, and the service's account."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, component, release),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": release or selector(name)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": meta(name, component, release)["labels"],
                    "annotations": _pod_annotations(config),
                },
                "spec": {
                    # A version's pods have its service's identity, as every version has.
                    "serviceAccountName": release["app"] if release else name,
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    **pod,
                },
            },
        },
    }


def _pod_annotations(config: str) -> dict[str, str]:
    return {
        # A changed Envoy configuration rolls the pods.
        "shop.mesh/config-hash": config,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(containers.PROBE_PORT),
        "prometheus.io/path": "/metrics",
    }


def config_hash(files: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def split_free_hash(topology: Topology, render: Callable[[Topology], Mapping[str, str]]) -> str:
    """The `config_hash` of the Envoy files `render` makes of `topology`, apart from the
    weights of its splits: those Envoy reads from the routing layer (`ROUTING_CONFIG_MAP`),
    so a changed split changes that ConfigMap only, and rolls no pod."""
    return config_hash(render(_unweighted(topology)))


def _unweighted(topology: Topology) -> Topology:
    """`topology` with every version's weight 0 (what its splits are apart from the split)."""
    services = {
        name: dataclasses.replace(
            service, versions=tuple(dataclasses.replace(v, weight=0) for v in service.versions)
        )
        for name, service in topology.services.items()
    }
    return dataclasses.replace(topology, services=services)


def documents(objects: list[dict[str, Any]]) -> str:
    """One rendered file of `objects`."""
    return HEADER + "---\n".join(dump(item) for item in objects)


def kustomization(resources: list[str], namespace: str | None = None, **extra: Any) -> str:
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if namespace:
        document["namespace"] = namespace
    document["resources"] = resources
    document.update(extra)
    return HEADER + dump(document)
