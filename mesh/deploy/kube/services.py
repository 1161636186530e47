"""A service's objects: its ServiceAccount, the ConfigMap of its sidecar's files, a
headless Service, a Deployment of pods (the app and its Envoy as a native sidecar) and a
PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from mesh.control.api import Api
from mesh.control.plan import InstancePlan, MeshPlan
from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.kube.objects import (
    IDENTITY_MOUNT,
    RESTRICTED,
    TMP_MOUNT,
    certificate,
    config_hash,
    config_map,
    deployment,
    env,
    envoy_container,
    envoy_pod_volumes,
    millicores,
    nats_settings,
    pdb,
    resources,
    selector,
    service,
    service_account,
)

COMPONENT = "service"


def service_objects(
    topology: Topology, plan: MeshPlan, api: Api, instance: InstancePlan
) -> list[dict[str, Any]]:
    name = instance.service
    files = containers.sidecar_files(topology, plan, instance, api, certificate())
    replicas = topology.services[name].replicas
    return [
        service_account(name, COMPONENT),
        config_map(_config_map_name(name), COMPONENT, files),
        service(name, COMPONENT, [("mesh", containers.INBOUND_PORT)], clusterIP="None"),
        deployment(name, COMPONENT, replicas, _pod(topology, instance), config_hash(files)),
        pdb(name, COMPONENT, maxUnavailable=1),
    ]


def _config_map_name(service: str) -> str:
    return f"{service}-envoy"


def _pod(topology: Topology, instance: InstancePlan) -> dict[str, Any]:
    name = instance.service
    share = containers.cpu_share(topology, name)
    sidecar = envoy_container(
        _config_map_name(name),
        [("mesh", containers.INBOUND_PORT), ("probe", containers.PROBE_PORT)],
        share,
    )
    return {
        "initContainers": [sidecar],
        "containers": [_app_container(topology, instance, share)],
        "volumes": envoy_pod_volumes(
            name, _config_map_name(name), {"name": "data", "emptyDir": {}}
        ),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(name)},
            }
        ],
    }


def _app_container(topology: Topology, instance: InstancePlan, share: float) -> dict[str, Any]:
    name = instance.service
    environment = containers.app_environment(topology, instance, nats_settings(topology, name))
    return {
        "name": "app",
        "image": containers.images()["shop"],
        "command": containers.app_command(name),
        "env": env(environment),
        **_app_probes(),
        "resources": resources(millicores(100, share), "128Mi", "512Mi"),
        "securityContext": RESTRICTED,
        "volumeMounts": [
            IDENTITY_MOUNT,
            {"name": "data", "mountPath": str(containers.RUN_DIR)},
            TMP_MOUNT,
        ],
    }


def _app_probes() -> dict[str, Any]:
    """Readiness and start-up through the sidecar's probe port (the whole path); liveness
    on loopback inside the app's container, so a sidecar restart never restarts the app."""
    through_sidecar = {"grpc": {"port": containers.PROBE_PORT}}
    app_check = ["python", "-m", "mesh.control.probe", "grpc", f"127.0.0.1:{containers.APP_PORT}"]
    return {
        "readinessProbe": {**through_sidecar, "periodSeconds": 5, "failureThreshold": 3},
        "startupProbe": {**through_sidecar, "periodSeconds": 1, "failureThreshold": 120},
        "livenessProbe": {
            "exec": {"command": app_check},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }
