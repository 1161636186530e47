"""Kubernetes manifests, rendered from mesh.yaml (`meshctl render k8s`): a kustomize base
and two overlays under `deploy/k8s/`.

base (namespace `<mesh.yaml namespace>`):
* per service: a ServiceAccount, a headless Service (the sidecars' STRICT_DNS clusters
  resolve it to every ready pod), a Deployment of `replicas` pods and a
  PodDisruptionBudget. A pod is the app plus its Envoy sidecar, a native sidecar (an
  init container that keeps running: it is ready before the app starts and stops after
  it). Envoy's bootstrap and SDS files come from a ConfigMap, the identity from the
  Secret `<service>-identity` (`tls.crt`, `tls.key`, `ca.crt`); its admin interface is
  a unix socket on a volume of the Envoy container's own (`envoy-admin`), which the app
  container does not mount. The app listens on loopback only; the kubelet probes it
  with gRPC health through the sidecar's probe port (readiness: the whole path), and
  liveness runs the same check on loopback inside the app's container, so a sidecar
  restart never restarts the app.
* the edge (Envoy and its companion) behind the Service `edge`, its static files
  written by an init container;
* NATS: a three-server JetStream cluster (StatefulSet, a volume each, routes over mutual
  TLS), streams kept in three replicas, created with the consumers by the Job
  `events-init`;
* Jaeger for traces.

overlays/dev: one replica per service (each keeps its SQLite file on the pod's volume,
which replicas could not share). overlays/prod: Postgres per service (a StatefulSet
each), the services reading `SHOP_<SERVICE>_DATABASE_URL` from the Secret
`<service>-database`, and cert-manager issuing every identity (`Certificate` with the
SPIFFE URI) from the `Issuer` `shop-mesh-ca`.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from mesh.control import edge, natsconf
from mesh.control.api import Api
from mesh.control.pki import MeshPKI, service_dns_name
from mesh.control.plan import InstancePlan, MeshPlan
from mesh.control.topology import Topology
from mesh.deploy import containers
from mesh.deploy.containers import Certificate, Rendered, dump
from mesh.runtime.events import NatsSettings

K8S_DIR = Path("deploy/k8s")
BASE = K8S_DIR / "base"
DEV = K8S_DIR / "overlays" / "dev"
PROD = K8S_DIR / "overlays" / "prod"
#: The oldest Kubernetes release the manifests are for (native sidecars are GA in 1.33).
KUBERNETES_VERSION = "1.33"
CLUSTER_DOMAIN = "cluster.local"
IDENTITY_DIR = Path("/etc/shop/identity")
NATS_REPLICAS = 3
POSTGRES_IMAGE = "postgres:17.6-alpine"
_HEADER = (
    "# Rendered from mesh.yaml by `meshctl render k8s`: do not edit by hand\n"
    "# (`make test` fails when this file differs from a fresh rendering).\n"
)

#: The volume of an Envoy container's admin socket (`containers.ADMIN_SOCKET_DIR`),
#: mounted by no other container of the pod.
ENVOY_ADMIN_VOLUME = "envoy-admin"

_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def identity_secret(identity: str) -> str:
    return f"{identity}-identity"


def _certificate() -> Certificate:
    return Certificate(IDENTITY_DIR / "tls.crt", IDENTITY_DIR / "tls.key", IDENTITY_DIR / "ca.crt")


def _fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def nats_route_names(namespace: str) -> list[str]:
    """The DNS names the NATS servers reach each other by (their certificate carries them)."""
    return [f"nats-{i}.nats-cluster.{namespace}.svc.{CLUSTER_DOMAIN}" for i in range(NATS_REPLICAS)]


def identities(topology: Topology) -> list[str]:
    """Every identity with a Secret on Kubernetes: each service (shared by its pods), the
    edge, NATS and meshctl."""
    return [
        *sorted(topology.services), "edge", natsconf.SERVER_IDENTITY, natsconf.ADMIN_IDENTITY,
    ]  # fmt: skip


def _extra_dns_names(identity: str, namespace: str) -> list[str]:
    """Names an identity's certificate carries beyond its own: NATS's route hosts."""
    return nats_route_names(namespace) if identity == natsconf.SERVER_IDENTITY else []


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "shop-mesh",
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def _meta(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": _labels(name, component)}


def _resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def _http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _config_map(name: str, component: str, files: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name, component),
        "data": dict(sorted(files.items())),
    }


def _pdb(name: str, component: str, **budget: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, component),
        "spec": {"selector": {"matchLabels": _selector(name)}, **budget},
    }


def _service(
    name: str,
    component: str,
    ports: list[tuple[str, int]],
    selects: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, component),
        "spec": {
            "selector": _selector(selects or name),
            "ports": [
                {"name": port_name, "port": port, "targetPort": port, "protocol": "TCP"}
                for port_name, port in ports
            ],
            **spec,
        },
    }


def _pod_security() -> dict[str, Any]:
    user, group = (int(part) for part in containers.USER.split(":"))
    return {
        "runAsNonRoot": True,
        "runAsUser": user,
        "runAsGroup": group,
        "fsGroup": group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _millicores(millicores: int, share: float = 1.0) -> str:
    """A CPU request of `share` of `millicores`: under contention, a container's CPU is
    in proportion to its request (`containers.cpu_share`)."""
    return f"{max(1, round(millicores * share))}m"


def _envoy_container(
    config_map: str, ports: list[tuple[str, int]], cpu_share: float = 1.0
) -> dict[str, Any]:
    """The Envoy sidecar, as a native sidecar (an init container that keeps running)."""
    ready = _http_probe("/healthz/ready", containers.PROBE_PORT, period=10, failures=3)
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
        "resources": _resources(_millicores(50, cpu_share), "64Mi", "256Mi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {
                "name": "envoy-config",
                "mountPath": str(containers.ENVOY_CONFIG_DIR),
                "readOnly": True,
            },
            {"name": "identity", "mountPath": str(IDENTITY_DIR), "readOnly": True},
            # Envoy's admin socket: writable, and the Envoy container's only.
            {"name": ENVOY_ADMIN_VOLUME, "mountPath": str(containers.ADMIN_SOCKET_DIR)},
        ],
    }


def _env(variables: dict[str, str]) -> list[dict[str, Any]]:
    """Environment entries; the instance is the pod's name (the downward API)."""
    entries: list[dict[str, Any]] = []
    for name, value in variables.items():
        if name == "SHOP_INSTANCE":
            entries.append(
                {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            )
        else:
            entries.append({"name": name, "value": value})
    return entries


def _nats(topology: Topology, identity: str) -> NatsSettings:
    host = _fqdn("nats", topology.namespace)
    return containers.nats_settings(topology, host, identity, _certificate())


def _volumes(identity: str, config_map: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "envoy-config", "configMap": {"name": config_map}},
        {"name": "identity", "secret": {"secretName": identity_secret(identity)}},
        {"name": "tmp", "emptyDir": {}},
        {"name": ENVOY_ADMIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        *extra,
    ]


def _deployment(
    name: str, component: str, replicas: int, pod: dict[str, Any], config: str
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _selector(name)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": _labels(name, component),
                    # A changed Envoy configuration rolls the pods.
                    "annotations": {
                        "shop.mesh/config-hash": config,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(containers.PROBE_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": name,
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": 30,
                    **pod,
                },
            },
        },
    }


def _hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def _service_objects(
    topology: Topology, plan: MeshPlan, api: Api, instance: InstancePlan
) -> list[dict[str, Any]]:
    name = instance.service
    files = containers.sidecar_files(topology, plan, instance, api, _certificate())
    config_map = f"{name}-envoy"
    environment = containers.app_environment(topology, instance, _nats(topology, name))
    share = containers.cpu_share(topology, name)
    app_check = ["python", "-m", "mesh.control.probe", "grpc", f"127.0.0.1:{containers.APP_PORT}"]
    app = {
        "name": "app",
        "image": containers.images()["shop"],
        "command": containers.app_command(name),
        "env": _env(environment),
        "readinessProbe": {
            "grpc": {"port": containers.PROBE_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "grpc": {"port": containers.PROBE_PORT},
            "periodSeconds": 1,
            "failureThreshold": 120,
        },
        "livenessProbe": {
            "exec": {"command": app_check},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": _resources(_millicores(100, share), "128Mi", "512Mi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {"name": "identity", "mountPath": str(IDENTITY_DIR), "readOnly": True},
            {"name": "data", "mountPath": str(containers.RUN_DIR)},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    sidecar = _envoy_container(
        config_map,
        [("mesh", containers.INBOUND_PORT), ("probe", containers.PROBE_PORT)],
        share,
    )
    pod = {
        "initContainers": [sidecar],
        "containers": [app],
        "volumes": _volumes(name, config_map, {"name": "data", "emptyDir": {}}),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": _selector(name)},
            }
        ],
    }
    replicas = topology.services[name].replicas
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, "service")},
        _config_map(config_map, "service", files),
        _service(
            name,
            "service",
            [("mesh", containers.INBOUND_PORT)],
            clusterIP="None",
        ),
        _deployment(name, "service", replicas, pod, _hash(files)),
        _pdb(name, "service", maxUnavailable=1),
    ]


def _edge_objects(topology: Topology, plan: MeshPlan, api: Api) -> list[dict[str, Any]]:
    assert plan.edge is not None
    rules = edge.resolve_rules(topology, api)
    files_dir = containers.EDGE_FILES_DIR
    edge_files = edge.files_in(files_dir)
    files = containers.envoy_files(
        lambda sds: edge.edge_config(topology, plan, api, sds, edge_files), _certificate()
    )
    image = containers.images()["shop"]
    files_mount = {"name": "edge-files", "mountPath": str(files_dir)}
    write_files = {
        "name": "edge-files",
        "image": image,
        "command": ["meshctl", "render", "edge-files", str(files_dir)],
        "resources": _resources("50m", "64Mi", "256Mi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [files_mount, {"name": "tmp", "mountPath": "/tmp"}],
    }
    companion_check = {"grpc": {"port": containers.PROBE_PORT}, "periodSeconds": 5}
    companion = {
        "name": "companion",
        "image": image,
        "command": [
            "python",
            *edge.companion_arguments(rules, containers.COMPANION_PORT, edge_files.descriptor_set),
        ],
        "readinessProbe": companion_check,
        "livenessProbe": {**companion_check, "periodSeconds": 20, "failureThreshold": 3},
        "resources": _resources("50m", "96Mi", "256Mi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [{**files_mount, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    envoy = _envoy_container(
        "edge-envoy", [("http", containers.EDGE_PORT), ("probe", containers.PROBE_PORT)]
    )
    envoy["volumeMounts"].append({**files_mount, "readOnly": True})
    pod = {
        "initContainers": [write_files, envoy],
        "containers": [companion],
        "volumes": _volumes("edge", "edge-envoy", {"name": "edge-files", "emptyDir": {}}),
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("edge", "edge")},
        _config_map("edge-envoy", "edge", files),
        _service("edge", "edge", [("http", containers.EDGE_PORT)]),
        _deployment("edge", "edge", 2, pod, _hash(files)),
        _pdb("edge", "edge", minAvailable=1),
    ]


def _nats_objects(topology: Topology) -> list[dict[str, Any]]:
    namespace = topology.namespace
    routes = [
        f"nats-route://{host}:{containers.NATS_CLUSTER_PORT}"
        for host in nats_route_names(namespace)
    ]
    config = containers.nats_config(
        topology,
        _certificate(),
        server_name="$POD_NAME",
        cluster=natsconf.Cluster(port=containers.NATS_CLUSTER_PORT, routes=routes),
    )
    health = _http_probe(
        "/healthz?js-enabled-only=true", containers.NATS_MONITOR_PORT, period=10, failures=3
    )
    server = {
        "name": "nats",
        "image": containers.images()["nats"],
        "command": ["nats-server", "--config", f"{containers.NATS_CONFIG_DIR}/nats.conf"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [
            {"name": "client", "containerPort": containers.NATS_PORT},
            {"name": "cluster", "containerPort": containers.NATS_CLUSTER_PORT},
            {"name": "monitor", "containerPort": containers.NATS_MONITOR_PORT},
        ],
        "startupProbe": {**health, "periodSeconds": 2, "failureThreshold": 90},
        "readinessProbe": health,
        "livenessProbe": _http_probe(
            "/healthz?js-server-only=true", containers.NATS_MONITOR_PORT, period=20, failures=3
        ),
        "resources": _resources("100m", "256Mi", "1Gi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {"name": "config", "mountPath": str(containers.NATS_CONFIG_DIR), "readOnly": True},
            {"name": "identity", "mountPath": str(IDENTITY_DIR), "readOnly": True},
            {"name": "data", "mountPath": str(containers.NATS_DATA_DIR)},
        ],
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("nats", "event-bus"),
        "spec": {
            "serviceName": "nats-cluster",
            "replicas": NATS_REPLICAS,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": _selector("nats")},
            "template": {
                "metadata": {"labels": _labels("nats", "event-bus")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": 60,
                    "containers": [server],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "nats-config"}},
                        {"name": "identity", "secret": {"secretName": identity_secret("nats")}},
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}},
                    },
                }
            ],
        },
    }
    return [
        _config_map("nats-config", "event-bus", {"nats.conf": config}),
        _service("nats", "event-bus", [("client", containers.NATS_PORT)]),
        _service(
            "nats-cluster",
            "event-bus",
            [("cluster", containers.NATS_CLUSTER_PORT)],
            selects="nats",
            clusterIP="None",
            publishNotReadyAddresses=True,
        ),
        statefulset,
        _pdb("nats", "event-bus", maxUnavailable=1),
        _events_job(topology),
    ]


def _events_job(topology: Topology) -> dict[str, Any]:
    """Creates the streams (three replicas) and the consumers; re-run by every apply."""
    admin = natsconf.ADMIN_IDENTITY
    init = {
        "name": "events-init",
        "image": containers.images()["shop"],
        "command": ["meshctl", "events", "init", "--replicas", str(NATS_REPLICAS)],
        "env": _env(_nats(topology, admin).environment()),
        "resources": _resources("50m", "64Mi", "256Mi"),
        "securityContext": _RESTRICTED,
        "volumeMounts": [
            {"name": "identity", "mountPath": str(IDENTITY_DIR), "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta("events-init", "event-bus"),
        "spec": {
            "backoffLimit": 20,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": _labels("events-init", "event-bus")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(),
                    "containers": [init],
                    "volumes": [
                        {"name": "identity", "secret": {"secretName": identity_secret(admin)}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def _jaeger_objects() -> list[dict[str, Any]]:
    health = _http_probe("/status", containers.JAEGER_HEALTH_PORT, period=10, failures=3)
    jaeger = {
        "name": "jaeger",
        "image": containers.images()["jaeger"],
        "ports": [
            {"name": "otlp-grpc", "containerPort": containers.OTLP_PORT},
            {"name": "ui", "containerPort": containers.JAEGER_UI_PORT},
        ],
        "readinessProbe": health,
        "livenessProbe": health,
        "resources": _resources("100m", "256Mi", "1Gi"),
        "securityContext": {**_RESTRICTED, "readOnlyRootFilesystem": False},
    }
    return [
        _service(
            "jaeger",
            "tracing",
            [("otlp-grpc", containers.OTLP_PORT), ("ui", containers.JAEGER_UI_PORT)],
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("jaeger", "tracing"),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": _selector("jaeger")},
                "template": {
                    "metadata": {"labels": _labels("jaeger", "tracing")},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(),
                        "containers": [jaeger],
                    },
                },
            },
        },
    ]


def _documents(objects: list[dict[str, Any]]) -> str:
    return _HEADER + "---\n".join(dump(item) for item in objects)


def _kustomization(resources: list[str], namespace: str | None = None, **extra: Any) -> str:
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    if namespace:
        document["namespace"] = namespace
    document["resources"] = resources
    document.update(extra)
    return _HEADER + dump(document)


def render(topology: Topology, api: Api) -> Rendered:
    """The base and the dev and prod overlays for `topology`."""
    namespace = topology.namespace
    topology = containers.with_collector(topology, _fqdn("jaeger", namespace))
    plan = containers.plan(topology, lambda service, _: _fqdn(service, namespace), replicas=False)
    files: dict[Path, str] = {}
    resources = ["namespace.yaml"]
    files[BASE / "namespace.yaml"] = _documents(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace, "namespace")}]
    )
    for instance in plan.instances:
        name = f"{instance.service}.yaml"
        files[BASE / name] = _documents(_service_objects(topology, plan, api, instance))
        resources.append(name)
    if plan.edge is not None:
        files[BASE / "edge.yaml"] = _documents(_edge_objects(topology, plan, api))
        resources.append("edge.yaml")
    files[BASE / "nats.yaml"] = _documents(_nats_objects(topology))
    files[BASE / "jaeger.yaml"] = _documents(_jaeger_objects())
    resources += ["nats.yaml", "jaeger.yaml"]
    files[BASE / "kustomization.yaml"] = _kustomization(
        resources, namespace, labels=[{"pairs": {"app.kubernetes.io/part-of": "shop-mesh"}}]
    )
    files.update(_dev(topology))
    files.update(_prod(topology))
    return Rendered(files, owned=(K8S_DIR,))


def _replicas_patch(name: str, replicas: int) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "name": name},
        "patch": dump([{"op": "replace", "path": "/spec/replicas", "value": replicas}]),
    }


def _dev(topology: Topology) -> dict[Path, str]:
    """One replica per service: each keeps its SQLite file on its pod's volume."""
    patches = [_replicas_patch(name, 1) for name in sorted(topology.services)]
    return {DEV / "kustomization.yaml": _kustomization(["../../base"], patches=patches)}


def _prod(topology: Topology) -> dict[Path, str]:
    """Postgres per service, identities from cert-manager."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta(identity_secret(identity), "identity"),
            "spec": {
                "secretName": identity_secret(identity),
                "commonName": identity,
                "uris": [f"spiffe://{topology.trust_domain}/ns/{topology.namespace}/sa/{identity}"],
                "dnsNames": [
                    service_dns_name(identity, topology.namespace),
                    *_extra_dns_names(identity, topology.namespace),
                ],
                "duration": "24h",
                "renewBefore": "12h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["digital signature", "server auth", "client auth"],
                "issuerRef": {"name": "shop-mesh-ca", "kind": "Issuer"},
            },
        }
        for identity in identities(topology)
    ]
    patches = []
    for name in sorted(topology.services):
        objects += _postgres_objects(name)
        variable = f"SHOP_{name.upper()}_DATABASE_URL"
        patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "env": [
                                    {
                                        "name": variable,
                                        "valueFrom": {
                                            "secretKeyRef": {
                                                "name": f"{name}-database",
                                                "key": "url",
                                            }
                                        },
                                    }
                                ],
                            }
                        ]
                    }
                }
            },
        }
        patches.append({"patch": dump(patch)})
    return {
        PROD / "prod.yaml": _documents(objects),
        PROD / "kustomization.yaml": _kustomization(
            ["../../base", "prod.yaml"], topology.namespace, patches=patches
        ),
    }


def _postgres_objects(service: str) -> list[dict[str, Any]]:
    name = f"{service}-postgres"
    secret = {"secretKeyRef": {"name": f"{service}-database", "key": "password"}}
    ready = {
        "exec": {"command": ["pg_isready", "-U", service, "-d", service]},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    postgres = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "env": [
            {"name": "POSTGRES_DB", "value": service},
            {"name": "POSTGRES_USER", "value": service},
            {"name": "POSTGRES_PASSWORD", "valueFrom": secret},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
        ],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        "readinessProbe": ready,
        "livenessProbe": {**ready, "periodSeconds": 30},
        "resources": _resources("100m", "256Mi", "1Gi"),
        "securityContext": {**_RESTRICTED, "readOnlyRootFilesystem": False},
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }
    return [
        _service(name, "database", [("postgres", 5432)], clusterIP="None"),
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(name, "database"),
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": _selector(name)},
                "template": {
                    "metadata": {"labels": _labels(name, "database")},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            **_pod_security(),
                            "runAsUser": 70,
                            "runAsGroup": 70,
                            "fsGroup": 70,
                        },
                        "containers": [postgres],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }
                ],
            },
        },
    ]


def secrets(topology: Topology, pki: MeshPKI) -> str:
    """The identity Secrets of the dev overlay, issued by the mesh CA in `pki` (kept
    there, so running it again reuses them); prod has cert-manager issue them instead."""

    def encoded(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    objects = []
    for identity in identities(topology):
        extra = _extra_dns_names(identity, topology.namespace)
        info = pki.ensure(identity, identity, dns_names=extra)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": identity_secret(identity),
                    "namespace": topology.namespace,
                    "labels": _labels(identity_secret(identity), "identity"),
                },
                "data": {
                    "tls.crt": encoded(info.cert_path),
                    "tls.key": encoded(info.key_path),
                    "ca.crt": encoded(pki.ca_path),
                },
            }
        )
    return "---\n".join(dump(item) for item in objects)
