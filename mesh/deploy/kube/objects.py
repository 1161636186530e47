"""The Kubernetes objects every part of the mesh is made of: metadata, Services,
ConfigMaps, Deployments, disruption budgets, and the pieces of a pod (security, resources,
probes, the Envoy sidecar, volumes)."""

from __future__ import annotations

import hashlib
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


def meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": labels(name, component)}


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
    config_map: str, ports: list[tuple[str, int]], cpu_share: float = 1.0
) -> dict[str, Any]:
    """The Envoy sidecar, as a native sidecar (an init container that keeps running)."""
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
        ],
    }


def envoy_pod_volumes(
    identity: str, config_map: str, *extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """The volumes of a pod with an Envoy container, and `extra`."""
    return [
        {"name": "envoy-config", "configMap": {"name": config_map}},
        {"name": "identity", "secret": {"secretName": identity_secret(identity)}},
        {"name": "tmp", "emptyDir": {}},
        {"name": ENVOY_ADMIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        *extra,
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


def config_map(name: str, component: str, files: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, component),
        "data": dict(sorted(files.items())),
    }


def pdb(name: str, component: str, **budget: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, component),
        "spec": {"selector": {"matchLabels": selector(name)}, **budget},
    }


def service(
    name: str,
    component: str,
    ports: list[tuple[str, int]],
    selects: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, component),
        "spec": {
            "selector": selector(selects or name),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
                for port_name, port in ports
            ],
            **spec,
        },
    }


def deployment(
    name: str, component: str, replicas: int, pod: dict[str, Any], config: str
) -> dict[str, Any]:
    """A Deployment of pods with an Envoy container whose files hash to `config`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(name)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels(name, component),
                    "annotations": _pod_annotations(config),
                },
                "spec": {
                    "serviceAccountName": name,
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


def config_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


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
