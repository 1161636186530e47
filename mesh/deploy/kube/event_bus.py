"""NATS on Kubernetes: a three-server JetStream cluster (a StatefulSet, a volume each,
routes over mutual TLS) behind the Services `nats` (clients) and `nats-cluster` (routes),
and the Job `events-init`, which creates the streams in three replicas and the consumers."""

from __future__ import annotations

from typing import Any

from mesh.control import natsconf
from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.kube import autoscaling
from mesh.deploy.kube.objects import (
    CLUSTER_DOMAIN,
    IDENTITY_MOUNT,
    RESTRICTED,
    TMP_MOUNT,
    certificate,
    config_map,
    data_volume_claim,
    env,
    http_probe,
    identity_secret,
    labels,
    meta,
    nats_settings,
    pdb,
    pod_name_env,
    pod_security,
    resources,
    selector,
    service,
)

NATS_REPLICAS = 3
COMPONENT = "event-bus"


def nats_route_names(namespace: str) -> list[str]:
    """The DNS names the NATS servers reach each other by (their certificate carries them)."""
    return [f"nats-{i}.nats-cluster.{namespace}.svc.{CLUSTER_DOMAIN}" for i in range(NATS_REPLICAS)]


def nats_objects(topology: Topology) -> list[dict[str, Any]]:
    return [
        config_map("nats-config", COMPONENT, {"nats.conf": _config(topology)}),
        service("nats", COMPONENT, _service_ports(topology)),
        service(
            "nats-cluster",
            COMPONENT,
            [("cluster", containers.NATS_CLUSTER_PORT)],
            selects="nats",
            clusterIP="None",
            publishNotReadyAddresses=True,
        ),
        _statefulset(),
        pdb("nats", COMPONENT, maxUnavailable=1),
        _events_job(topology),
    ]


def _config(topology: Topology) -> str:
    """nats.conf: each server names itself after its pod and routes to all three."""
    routes = [
        f"nats-route://{host}:{containers.NATS_CLUSTER_PORT}"
        for host in nats_route_names(topology.namespace)
    ]
    return containers.nats_config(
        topology,
        certificate(),
        server_name="$POD_NAME",
        cluster=natsconf.Cluster(port=containers.NATS_CLUSTER_PORT, routes=routes),
    )


def _statefulset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta("nats", COMPONENT),
        "spec": {
            "serviceName": "nats-cluster",
            "replicas": NATS_REPLICAS,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector("nats")},
            "template": {
                "metadata": {"labels": labels("nats", COMPONENT)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": 60,
                    "containers": [_server()],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "nats-config"}},
                        {"name": "identity", "secret": {"secretName": identity_secret("nats")}},
                    ],
                },
            },
            "volumeClaimTemplates": [data_volume_claim()],
        },
    }


def _server() -> dict[str, Any]:
    monitor = containers.NATS_MONITOR_PORT
    health = http_probe("/healthz?js-enabled-only=true", monitor, period=10, failures=3)
    return {
        "name": "nats",
        "image": containers.images()["nats"],
        "command": ["nats-server", "--config", f"{containers.NATS_CONFIG_DIR}/nats.conf"],
        "env": [pod_name_env("POD_NAME")],
        "ports": [
            {"name": "client", "containerPort": containers.NATS_PORT},
            {"name": "cluster", "containerPort": containers.NATS_CLUSTER_PORT},
            {"name": "monitor", "containerPort": monitor},
        ],
        "startupProbe": {**health, "periodSeconds": 2, "failureThreshold": 90},
        "readinessProbe": health,
        "livenessProbe": http_probe("/healthz?js-server-only=true", monitor, period=20, failures=3),
        "resources": resources("100m", "256Mi", "1Gi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [
            {"name": "config", "mountPath": str(containers.NATS_CONFIG_DIR), "readOnly": True},
            IDENTITY_MOUNT,
            {"name": "data", "mountPath": str(containers.NATS_DATA_DIR)},
        ],
    }


def _events_job(topology: Topology) -> dict[str, Any]:
    """Creates the streams (three replicas) and the consumers; re-run by every apply."""
    admin = natsconf.ADMIN_IDENTITY
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta("events-init", COMPONENT),
        "spec": {
            "backoffLimit": 20,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels("events-init", COMPONENT)},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [_events_init(topology)],
                    "volumes": [
                        {"name": "identity", "secret": {"secretName": identity_secret(admin)}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def _events_init(topology: Topology) -> dict[str, Any]:
    return {
        "name": "events-init",
        "image": containers.images()["shop"],
        "command": ["meshctl", "events", "init", "--replicas", str(NATS_REPLICAS)],
        "env": env(nats_settings(topology, natsconf.ADMIN_IDENTITY).environment()),
        "resources": resources("50m", "64Mi", "256Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [IDENTITY_MOUNT, TMP_MOUNT],
    }


def _service_ports(topology: Topology) -> list[tuple[str, int]]:
    """NATS's clients; and its monitoring, which KEDA reads a consumer's lag from, when a
    service scales on it (`mesh.deploy.kube.autoscaling`)."""
    ports = [("client", containers.NATS_PORT)]
    if autoscaling.consumers_scale(topology):
        ports.append(("monitor", containers.NATS_MONITOR_PORT))
    return ports
