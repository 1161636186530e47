"""A service's objects: its ServiceAccount (its identity), and for each of its releases
(the service itself, or each of its versions: `catalog-v2`) the ConfigMap of its sidecar's
files, a headless Service, a Deployment of pods (the app and its Envoy as a native
sidecar) and a PodDisruptionBudget."""

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
    config_map,
    deployment,
    env,
    envoy_container,
    envoy_pod_volumes,
    millicores,
    nats_settings,
    pdb,
    release_labels,
    release_name,
    resources,
    selector,
    service,
    service_account,
    split_free_hash,
)

COMPONENT = "service"


def service_objects(
    topology: Topology, plan: MeshPlan, api: Api, name: str
) -> list[dict[str, Any]]:
    """The objects of the service `name`: one ServiceAccount, then those of each release,
    whose template is its instance in `plan` (one per release)."""
    objects = [service_account(name, COMPONENT)]
    for instance in plan.of(name):
        objects += _release_objects(topology, plan, api, instance)
    return objects


def _release_objects(
    topology: Topology, plan: MeshPlan, api: Api, instance: InstancePlan
) -> list[dict[str, Any]]:
    """A release's sidecar files, headless Service (what callers' clusters resolve, its pods
    only), Deployment and budget."""
    name = release_name(instance.service, instance.version)
    release = release_labels(instance.service, instance.version)

    def render(of: Topology) -> dict[str, str]:
        return containers.sidecar_files(of, plan, instance, api, certificate())

    files = render(topology)
    split = containers.reads_split(files)
    replicas = topology.services[instance.service].release(instance.version).replicas
    pod = _pod(topology, instance, split)
    config = split_free_hash(topology, render)
    return [
        config_map(_config_map_name(name), COMPONENT, files, release),
        service(
            name, COMPONENT, [("mesh", containers.INBOUND_PORT)], release=release, clusterIP="None"
        ),
        deployment(name, COMPONENT, replicas, pod, config, release),
        pdb(name, COMPONENT, release, maxUnavailable=1),
    ]


def _config_map_name(release: str) -> str:
    return f"{release}-envoy"


def _pod(topology: Topology, instance: InstancePlan, split: bool) -> dict[str, Any]:
    name = release_name(instance.service, instance.version)
    share = containers.cpu_share(topology, instance.service)
    sidecar = envoy_container(
        _config_map_name(name),
        [("mesh", containers.INBOUND_PORT), ("probe", containers.PROBE_PORT)],
        share,
        split=split,
    )
    volumes = envoy_pod_volumes(
        instance.service, _config_map_name(name), {"name": "data", "emptyDir": {}}, split=split
    )
    spread = release_labels(instance.service, instance.version) or selector(name)
    return {
        "initContainers": [sidecar],
        "containers": [_app_container(topology, instance, share)],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": spread},
            }
        ],
    }


def _app_container(topology: Topology, instance: InstancePlan, share: float) -> dict[str, Any]:
    nats = nats_settings(topology, instance.service)
    environment = containers.app_environment(topology, instance, nats)
    return {
        "name": "app",
        "image": containers.images()["shop"],
        "command": containers.app_command(topology, instance),
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
