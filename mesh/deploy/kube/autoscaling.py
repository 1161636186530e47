"""Autoscaled services on Kubernetes (`autoscale:` in mesh.yaml), in the prod overlay,
whose services share a Postgres each (dev's replicas keep SQLite files of their own, so
dev runs one): a HorizontalPodAutoscaler for `cpu` (the app container's use, per pod),
and KEDA `ScaledObject`s for the others: `consumer_lag` from NATS JetStream's monitoring
(the service's durable consumer), `in_flight` from Prometheus (the calls the sidecars'
apps worked on at once, as the local mesh measures it). Each scales the service's
Deployment between `min` and `max` and removes replicas only after `cooldown` (the HPA's
scale-down stabilization), one pod at a time; the Deployment leaves its replicas to it.
"""

from __future__ import annotations

from typing import Any

from mesh.control.topology import Topology
from mesh.control.topology.model import CONSUMER_LAG, CPU, Autoscale
from mesh.deploy import containers
from mesh.deploy.containers import dump
from mesh.deploy.kube.objects import fqdn, meta
from mesh.runtime.events import EVENTS_STREAM

COMPONENT = "autoscaling"
#: Where KEDA asks Prometheus: the Prometheus Operator's Prometheus (its governing Service
#: `prometheus-operated`) in the namespace `monitoring`.
PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
#: NATS's account without accounts configured: the global one.
NATS_ACCOUNT = "$G"


def autoscaled(topology: Topology) -> dict[str, Autoscale]:
    return {
        name: service.autoscale
        for name, service in sorted(topology.services.items())
        if service.autoscale is not None
    }


def consumers_scale(topology: Topology) -> bool:
    """Whether a service scales on its consumer's lag (KEDA reads NATS's monitoring)."""
    return any(spec.metric == CONSUMER_LAG for spec in autoscaled(topology).values())


def scaling_objects(topology: Topology) -> list[dict[str, Any]]:
    """The HPA or ScaledObject of each autoscaled service."""
    return [
        _hpa(name, spec) if spec.metric == CPU else _scaled_object(topology, name, spec)
        for name, spec in autoscaled(topology).items()
    ]


def replicas_patches(topology: Topology) -> list[dict[str, Any]]:
    """Patches that leave each autoscaled Deployment's replicas to its autoscaler."""
    return [
        {
            "target": {"kind": "Deployment", "name": name},
            "patch": dump([{"op": "remove", "path": "/spec/replicas"}]),
        }
        for name in autoscaled(topology)
    ]


def _behavior(spec: Autoscale) -> dict[str, Any]:
    return {
        "scaleDown": {
            "stabilizationWindowSeconds": round(spec.cooldown),
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}],
        }
    }


def _hpa(name: str, spec: Autoscale) -> dict[str, Any]:
    millicores = round(spec.target * 10)  # percent of one core
    target = {"type": "AverageValue", "averageValue": f"{millicores}m"}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.min,
            "maxReplicas": spec.max,
            "metrics": [
                {
                    "type": "ContainerResource",
                    "containerResource": {"name": "cpu", "container": "app", "target": target},
                }
            ],
            "behavior": _behavior(spec),
        },
    }


def _scaled_object(topology: Topology, name: str, spec: Autoscale) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": spec.min,
            "maxReplicaCount": spec.max,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [_trigger(topology, name, spec)],
        },
    }


def _trigger(topology: Topology, name: str, spec: Autoscale) -> dict[str, Any]:
    if spec.metric == CONSUMER_LAG:
        monitor = f"{fqdn('nats', topology.namespace)}:{containers.NATS_MONITOR_PORT}"
        metadata = {
            "natsServerMonitoringEndpoint": monitor,
            "account": NATS_ACCOUNT,
            "stream": EVENTS_STREAM,
            "consumer": name,
            "lagThreshold": f"{spec.target:g}",
        }
        return {"type": "nats-jetstream", "metadata": metadata}
    busy = (
        f'sum(rate(envoy_cluster_upstream_rq_time_sum{{service="{name}", '
        f'envoy_cluster_name=~"local_app.*"}}[1m])) / 1000'
    )
    metadata = {"serverAddress": PROMETHEUS_URL, "query": busy, "threshold": f"{spec.target:g}"}
    return {"type": "prometheus", "metadata": metadata}
