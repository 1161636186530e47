"""Kubernetes manifests, rendered from mesh.yaml (`meshctl render k8s`): a kustomize base
and two overlays under `deploy/k8s/`.

base (namespace `<mesh.yaml namespace>`):
* per service: a ServiceAccount, a headless Service (the sidecars' STRICT_DNS clusters
  resolve it to every ready pod), a Deployment of `replicas` pods and a
  PodDisruptionBudget; for a service with versions, its ServiceAccount, then a headless
  Service, a Deployment and a budget per version (`catalog-v2`, the pods labelled
  `app: catalog`, `version: v2`), each caller's cluster of that version resolving its
  Service. A pod is the app plus its Envoy sidecar, a native sidecar (an
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
* Jaeger for traces;
* with versions, the ConfigMap `mesh-routing`: the split (a file per version's cluster,
  holding its percent), mounted into every Envoy that routes to a service with versions,
  which reads it through the mount's `..data` link; `kubectl apply` of a changed split
  reaches them without a restart (the kubelet swaps the link; pods do not roll).

monitoring (`kubectl apply -k deploy/k8s/monitoring`, where the Prometheus Operator runs):
a `PodMonitor` of every service pod (the app's metrics and the sidecar's statistics), the
alert rules as a `PrometheusRule` (`mesh.deploy.monitoring`, `mesh.control.alerting`) and
the Grafana dashboards in a ConfigMap labelled for Grafana's dashboard sidecar.

overlays/dev: one replica per service (each keeps its SQLite file on the pod's volume,
which replicas could not share). overlays/prod: Postgres per service (a StatefulSet
each), the services reading `SHOP_<SERVICE>_DATABASE_URL` from the Secret
`<service>-database`, and cert-manager issuing every identity (`Certificate` with the
SPIFFE URI) from the `Issuer` `shop-mesh-ca`.

The modules: `objects` (what every part is made of), `services`, `edge`, `event_bus`,
`tracing`, `identity` (Secrets and cert-manager Certificates) and `overlays`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mesh.control.api import Api
from mesh.control.topology import Topology
from mesh.deploy import containers, monitoring
from mesh.deploy.containers import Rendered
from mesh.deploy.kube import overlays
from mesh.deploy.kube.edge import edge_objects
from mesh.deploy.kube.event_bus import NATS_REPLICAS, nats_objects, nats_route_names
from mesh.deploy.kube.identity import secrets
from mesh.deploy.kube.objects import (
    ROUTING_CONFIG_MAP,
    ROUTING_ROOT,
    config_map,
    documents,
    fqdn,
    kustomization,
    meta,
    release_name,
)
from mesh.deploy.kube.services import COMPONENT as SERVICE_COMPONENT
from mesh.deploy.kube.services import service_objects
from mesh.deploy.kube.tracing import jaeger_objects

__all__ = [
    "BASE",
    "DEV",
    "K8S_DIR",
    "KUBERNETES_VERSION",
    "NATS_REPLICAS",
    "PROD",
    "nats_route_names",
    "render",
    "secrets",
]

K8S_DIR = Path("deploy/k8s")
BASE = K8S_DIR / "base"
DEV = K8S_DIR / "overlays" / "dev"
PROD = K8S_DIR / "overlays" / "prod"
MONITORING = K8S_DIR / "monitoring"
#: The oldest Kubernetes release the manifests are for (native sidecars are GA in 1.33).
KUBERNETES_VERSION = "1.33"


def render(topology: Topology, api: Api) -> Rendered:
    """The base and the dev and prod overlays for `topology`."""
    files = _base(topology, api)
    files.update({DEV / name: text for name, text in overlays.dev(topology).items()})
    files.update({PROD / name: text for name, text in overlays.prod(topology).items()})
    files.update(_monitoring(topology))
    return Rendered(files, owned=(K8S_DIR,))


def _dashboards(topology: Topology) -> dict[str, Any]:
    """The dashboards' ConfigMap, which Grafana's dashboard sidecar finds by its label."""
    board = config_map("shop-dashboards", "monitoring", monitoring.dashboard_files(topology))
    board["metadata"]["labels"].update(monitoring.DASHBOARD_LABEL)
    return board


def _monitoring(topology: Topology) -> dict[Path, str]:
    """The Prometheus Operator's objects: apart from the base, which needs no operator."""
    parts = {
        "podmonitor.yaml": [monitoring.pod_monitor(topology.namespace, SERVICE_COMPONENT)],
        "rules.yaml": [monitoring.prometheus_rule(topology)],
        "dashboards.yaml": [_dashboards(topology)],
    }
    files = {MONITORING / name: documents(objects) for name, objects in parts.items()}
    files[MONITORING / "kustomization.yaml"] = kustomization(list(parts), topology.namespace)
    return files


def _base(topology: Topology, api: Api) -> dict[Path, str]:
    """One file of objects for each part of the mesh, and their kustomization."""
    namespace = topology.namespace
    topology = containers.with_collector(topology, fqdn("jaeger", namespace))
    plan = containers.plan(
        topology,
        lambda instance: fqdn(release_name(instance.service, instance.version), namespace),
        routing_root=ROUTING_ROOT,
        replicas=False,
    )
    parts = {
        "namespace.yaml": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(namespace, "namespace")}
        ]
    }
    for name in topology.start_order():
        parts[f"{name}.yaml"] = service_objects(topology, plan, api, name)
    if plan.edge is not None:
        parts["edge.yaml"] = edge_objects(topology, plan, api)
    parts["nats.yaml"] = nats_objects(topology)
    parts["jaeger.yaml"] = jaeger_objects()
    split = containers.split_files(topology)
    if split:
        parts["routing.yaml"] = [config_map(ROUTING_CONFIG_MAP, "routing", split)]
    files = {BASE / name: documents(objects) for name, objects in parts.items()}
    files[BASE / "kustomization.yaml"] = kustomization(
        list(parts), namespace, labels=[{"pairs": {"app.kubernetes.io/part-of": "shop-mesh"}}]
    )
    return files
