"""The overlays of the base, each a kustomization (file names relative to its directory).

dev: one replica per service, or per version of a service with versions (each keeps its
SQLite file on the pod's volume, which replicas could not share). prod: Postgres per
service (a StatefulSet each), the services (each version's Deployment too) reading
`SHOP_<SERVICE>_DATABASE_URL` from the Secret `<service>-database`, and cert-manager
issuing every identity, and the edge's HTTPS certificate unless mesh.yaml names the
user's own (whose Secret `edge-tls` the user creates, or `meshctl render k8s-secrets`
prints).
"""

from __future__ import annotations

from typing import Any

from mesh.control import edge_tls
from mesh.control.topology import Topology
from mesh.deploy.containers import dump
from mesh.deploy.kube import autoscaling
from mesh.deploy.kube.identity import certificate_request, edge_tls_request, identities
from mesh.deploy.kube.objects import (
    RESTRICTED,
    data_volume_claim,
    documents,
    kustomization,
    labels,
    meta,
    pod_security,
    release_name,
    resources,
    selector,
    service,
)

POSTGRES_IMAGE = "postgres:17.6-alpine"
#: The user and group of the Postgres image.
_POSTGRES_USER = 70


def _deployments(topology: Topology) -> list[tuple[str, str]]:
    """(service, Deployment) of every release of every service (`catalog`, `catalog-v2`)."""
    return [
        (name, release_name(name, version.name))
        for name in sorted(topology.services)
        for version in topology.services[name].releases
    ]


def dev(topology: Topology) -> dict[str, str]:
    """One replica per Deployment: each keeps its SQLite file on its pod's volume."""
    patches = [_replicas_patch(name, 1) for _, name in _deployments(topology)]
    return {"kustomization.yaml": kustomization(["../../base"], patches=patches)}


def _replicas_patch(name: str, replicas: int) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "name": name},
        "patch": dump([{"op": "replace", "path": "/spec/replicas", "value": replicas}]),
    }


def prod(topology: Topology) -> dict[str, str]:
    """Postgres per service, identities from cert-manager, autoscalers
    (`mesh.deploy.kube.autoscaling`)."""
    services = sorted(topology.services)
    objects = [certificate_request(topology, identity) for identity in identities(topology)]
    if topology.edge.expose and edge_tls.mesh_ca_issues(topology):
        objects.append(edge_tls_request(topology))
    for name in services:
        objects += _postgres_objects(name)
    objects += autoscaling.scaling_objects(topology)
    patches = [
        {"patch": dump(_database_url_patch(name, deployment))}
        for name, deployment in _deployments(topology)
    ]
    patches += autoscaling.replicas_patches(topology)
    return {
        "prod.yaml": documents(objects),
        "kustomization.yaml": kustomization(
            ["../../base", "prod.yaml"], topology.namespace, patches=patches
        ),
    }


def _database_url_patch(service: str, deployment: str) -> dict[str, Any]:
    """The service's app (in each of its versions' Deployments) reads its database's URL
    from the Secret `<service>-database`."""
    url = {"secretKeyRef": {"name": f"{service}-database", "key": "url"}}
    variable = {"name": f"SHOP_{service.upper()}_DATABASE_URL", "valueFrom": url}
    app = {"name": "app", "env": [variable]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment},
        "spec": {"template": {"spec": {"containers": [app]}}},
    }


def _postgres_objects(service_name: str) -> list[dict[str, Any]]:
    name = f"{service_name}-postgres"
    return [
        service(name, "database", [("postgres", 5432)], clusterIP="None"),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta(name, "database"),
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": selector(name)},
                "template": {
                    "metadata": {"labels": labels(name, "database")},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            **pod_security(),
                            "runAsUser": _POSTGRES_USER,
                            "runAsGroup": _POSTGRES_USER,
                            "fsGroup": _POSTGRES_USER,
                        },
                        "containers": [_postgres(service_name)],
                    },
                },
                "volumeClaimTemplates": [data_volume_claim()],
            },
        },
    ]


def _postgres(service: str) -> dict[str, Any]:
    """Postgres with one database and user, both named after `service`."""
    password = {"secretKeyRef": {"name": f"{service}-database", "key": "password"}}
    ready = {
        "exec": {"command": ["pg_isready", "-U", service, "-d", service]},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    return {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "env": [
            {"name": "POSTGRES_DB", "value": service},
            {"name": "POSTGRES_USER", "value": service},
            {"name": "POSTGRES_PASSWORD", "valueFrom": password},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "readinessProbe": ready,
        "livenessProbe": {**ready, "periodSeconds": 30},
        "resources": resources("100m", "256Mi", "1Gi"),
        "securityContext": {**RESTRICTED, "readOnlyRootFilesystem": False},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }
