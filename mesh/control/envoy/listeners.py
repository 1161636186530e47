"""A sidecar's listeners: inbound (mTLS, RBAC, to the app), one outbound per dependency
(plaintext from the app, the call policy, mTLS onwards), and in containers a probe
listener for the orchestrator. The edge's probe listener is the same."""

from __future__ import annotations

from typing import Any

from mesh.control.api import Api
from mesh.control.envoy import filters
from mesh.control.envoy.bootstrap import LOOPBACK, socket_address
from mesh.control.envoy.clusters import pipe_cluster, upstream
from mesh.control.envoy.connection_manager import connection_manager
from mesh.control.envoy.routes import inbound_routes, outbound_routes
from mesh.control.envoy.tls import SdsFiles, downstream_tls
from mesh.control.envoy.tracing import sidecar_name, tracing
from mesh.control.plan import InstancePlan, MeshPlan
from mesh.control.topology import Topology

#: The probe listener's path for "is this Envoy ready" (its admin `/ready`, re-exposed).
READY_PATH = "/healthz/ready"


def inbound(
    topology: Topology, plan: MeshPlan, api: Api, instance: InstancePlan, sds: SdsFiles
) -> dict[str, Any]:
    """Where other instances and the edge call this one: mTLS STRICT, RBAC, faults, then
    plaintext to the app on loopback with the caller's identity in
    `x-forwarded-client-cert`."""
    service = instance.service
    manager = connection_manager(
        "inbound",
        inbound_routes(topology, api, instance),
        [
            # Calls are counted as they arrive, the faults the sidecar injects included:
            # what the service's objectives are measured by (`mesh.control.alerting`) and
            # a version's rollout judged by (`mesh.control.rollouts`).
            filters.grpc_stats(),
            filters.rbac(topology, api, service),
            *filters.faults(topology.services[service].release(instance.version).faults),
        ],
        **tracing(topology, sidecar_name(service)),
        forward_client_cert_details="SANITIZE_SET",
        set_current_client_cert_details={"uri": True},
        local_reply_config=filters.not_applied_replies(),
    )
    return {
        "name": "inbound",
        "address": socket_address(instance.inbound_port, plan.listen_host),
        "traffic_direction": "INBOUND",
        "filter_chains": [
            {
                "transport_socket": downstream_tls(sds, topology.trust_domain),
                "filters": [manager],
            }
        ],
    }


def outbound(
    topology: Topology, service: str, dependency: str, port: int, api: Api
) -> dict[str, Any]:
    """Where `service`'s app calls `dependency`: plaintext gRPC on loopback."""
    policy = topology.services[service].calls[dependency]
    manager = connection_manager(
        f"outbound_{dependency}",
        outbound_routes(topology, dependency, policy, api),
        [filters.grpc_stats()],
        **tracing(topology, sidecar_name(service)),
    )
    return {
        "name": f"outbound-{dependency}",
        "address": socket_address(port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [manager]}],
    }


def _get(path: str, cluster: str, rewrite: str | None = None) -> dict[str, Any]:
    rewritten = {"prefix_rewrite": rewrite} if rewrite else {}
    return {
        "match": {
            "path": path,
            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "route": {"cluster": cluster, "timeout": "5s", **rewritten},
    }


def probe_resources(
    plan: MeshPlan, port: int, admin_socket: str, app_cluster: str, metrics_port: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A plaintext listener for an orchestrator's probes and scrapes (which come from
    outside the pod), and the clusters it needs.

    Only these answer, and none takes a request body: `GET /healthz/ready` (Envoy's
    admin `/ready`: the proxy has its configuration and certificates), gRPC health
    `Check` of the app behind it (the kubelet's gRPC probe), `GET /metrics` (the app's
    Prometheus metrics) and `GET /stats/prometheus` (Envoy's). The admin interface stays
    on its unix socket (`admin_socket`, which the two admin routes lead to), the app on
    loopback.
    """
    routes = [
        _get(READY_PATH, "admin", "/ready"),
        _get("/stats/prometheus", "admin"),
        {
            "match": {"path": "/grpc.health.v1.Health/Check"},
            "route": {"cluster": app_cluster, "timeout": "2s", "priority": "HIGH"},
        },
    ]
    clusters = [pipe_cluster("admin", admin_socket)]
    if metrics_port:
        routes.append(_get("/metrics", "app_metrics"))
        clusters.append(upstream("app_metrics", [(LOOPBACK, metrics_port)]))
    listener = {
        "name": "probe",
        "address": socket_address(port, plan.listen_host),
        "filter_chains": [{"filters": [connection_manager("probe", routes, [])]}],
    }
    return listener, clusters
