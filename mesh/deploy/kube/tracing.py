"""Jaeger, which takes every span over OTLP/gRPC: one pod behind the Service `jaeger`."""

from __future__ import annotations

from typing import Any

from mesh.deploy import containers
from mesh.deploy.kube.objects import (
    RESTRICTED,
    http_probe,
    labels,
    meta,
    pod_security,
    resources,
    selector,
    service,
)

COMPONENT = "tracing"


def jaeger_objects() -> list[dict[str, Any]]:
    return [
        service(
            "jaeger",
            COMPONENT,
            [("otlp-grpc", containers.OTLP_PORT), ("ui", containers.JAEGER_UI_PORT)],
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta("jaeger", COMPONENT),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector("jaeger")},
                "template": {
                    "metadata": {"labels": labels("jaeger", COMPONENT)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security(),
                        "containers": [_jaeger()],
                    },
                },
            },
        },
    ]


def _jaeger() -> dict[str, Any]:
    health = http_probe("/status", containers.JAEGER_HEALTH_PORT, period=10, failures=3)
    return {
        "name": "jaeger",
        "image": containers.images()["jaeger"],
        "ports": [
            {"name": "otlp-grpc", "containerPort": containers.OTLP_PORT},
            {"name": "ui", "containerPort": containers.JAEGER_UI_PORT},
        ],
        "readinessProbe": health,
        "livenessProbe": health,
        "resources": resources("100m", "256Mi", "1Gi"),
        "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": False},
    }
