"""Envoy's clusters: the app behind a sidecar, the dependencies it calls, and the
processes on loopback or a unix socket an Envoy reaches on its own behalf.

Peers are reached at fixed addresses locally (loopback ports) and by name in containers
(`upstream`: a Compose service name, a Kubernetes headless Service).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh.control.envoy import endpoints
from mesh.control.envoy.bootstrap import LOOPBACK, duration, pipe_address, socket_address
from mesh.control.envoy.tls import SdsFiles, upstream_tls
from mesh.control.plan import MeshPlan
from mesh.control.routing import cluster_name
from mesh.control.topology import (
    CallPolicy,
    CircuitBreaker,
    OutlierDetection,
    RetryPolicy,
    Service,
    Topology,
)

#: Every gRPC upstream speaks HTTP/2, which Envoy uses only when told.
HTTP2_UPSTREAM = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}

#: Requests a loopback cluster takes at once unless it says otherwise; its HIGH priority
#: routes (health, reflection) always get this many.
LOOPBACK_MAX_REQUESTS = 4096

#: The sidecar's clusters of its app: every call, and calls to its expensive methods.
LOCAL_APP, LOCAL_APP_EXPENSIVE = "local_app", "local_app_expensive"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def upstream(name: str, addresses: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """A cluster's discovery and endpoints: fixed addresses, or names resolved by DNS.

    A name is re-resolved every few seconds and every address it returns is a host
    (STRICT_DNS): a Kubernetes headless Service name yields one host per ready pod.
    """
    discovery: dict[str, Any] = {"type": "STATIC"}
    if not all(_is_ip(host) for host, _ in addresses):
        discovery = {"type": "STRICT_DNS", "dns_lookup_family": "V4_PREFERRED"}
    endpoints = [{"endpoint": {"address": socket_address(port, host)}} for host, port in addresses]
    return {
        "name": name,
        **discovery,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


def pipe_cluster(name: str, socket_path: str | Path) -> dict[str, Any]:
    """A cluster of one HTTP/1.1 server on a unix socket (an Envoy's own admin)."""
    endpoint = {"endpoint": {"address": pipe_address(socket_path)}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


def _loopback_limits(priority: str, requests: int) -> dict[str, Any]:
    return {
        "priority": priority,
        "max_connections": LOOPBACK_MAX_REQUESTS,
        "max_pending_requests": LOOPBACK_MAX_REQUESTS,
        "max_requests": requests,
    }


def loopback_cluster(
    name: str, port: int, max_requests: int = LOOPBACK_MAX_REQUESTS
) -> dict[str, Any]:
    """A plaintext HTTP/2 cluster of one process on loopback (an app behind its sidecar)
    that takes `max_requests` requests at once; one more is refused at once (503, UO)."""
    return {
        **upstream(name, [(LOOPBACK, port)]),
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
        "circuit_breakers": {
            "thresholds": [
                _loopback_limits("DEFAULT", max_requests),
                _loopback_limits("HIGH", LOOPBACK_MAX_REQUESTS),
            ]
        },
    }


def local_app_clusters(service: Service, port: int) -> list[dict[str, Any]]:
    """The app behind a sidecar, as the clusters its inbound routes go to: admitting what
    the app admits (`mesh.runtime.admission`), so a sidecar holds back what its app would
    refuse and refuses it itself, before the app spends anything on it."""
    admitted = service.admission
    clusters = [loopback_cluster(LOCAL_APP, port, admitted.max_in_flight)]
    if service.expensive_methods:
        clusters.append(loopback_cluster(LOCAL_APP_EXPENSIVE, port, admitted.expensive_in_flight))
    return clusters


def admitted(topology: Topology, service: str, version: str | None = None) -> int:
    """How many calls all of `service`'s apps (those of its release `version`, when
    given) admit at once: more in flight from one caller would only be refused by the
    callee's sidecars, so the caller's Envoy refuses them itself, at once and without a
    hop (503, UO)."""
    callee = topology.services[service]
    replicas = callee.replicas if version is None else callee.release(version).replicas
    if callee.autoscale is not None:
        replicas = callee.autoscale.max  # as many as it may come to run
    return replicas * callee.admission.max_in_flight


def _circuit_breakers(limits: CircuitBreaker, retries: RetryPolicy, admits: int) -> dict[str, Any]:
    """No more in flight than the callee's apps admit (`admits`), and a retry budget in
    place of Envoy's default of 3 concurrent retries."""
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": limits.max_connections,
                "max_pending_requests": limits.max_pending_requests,
                "max_requests": min(limits.max_requests, admits),
                "retry_budget": {
                    "budget_percent": {"value": retries.budget_percent},
                    "min_retry_concurrency": retries.min_retry_concurrency,
                },
            }
        ]
    }


def _outlier_detection(outliers: OutlierDetection) -> dict[str, Any]:
    return {
        "consecutive_5xx": outliers.consecutive_5xx,
        "consecutive_gateway_failure": outliers.consecutive_gateway_failure,
        "interval": duration(outliers.interval),
        "base_ejection_time": duration(outliers.base_ejection_time),
        "max_ejection_percent": outliers.max_ejection_percent,
    }


def _discovered(topology: Topology, plan: MeshPlan, service: str, version: str) -> dict[str, Any]:
    """Where a cluster of `service` finds its endpoints: the plan's, or, for a service
    that autoscales in the local mesh, the file the supervisor keeps (`endpoints`)."""
    name = cluster_name(service, version)
    if plan.endpoints_dir and topology.services[service].autoscale is not None:
        return endpoints.discovery(name, plan.endpoints_dir)
    return upstream(name, plan.endpoints_of(service, version))


def dependency_clusters(
    topology: Topology, plan: MeshPlan, dependency: str, policy: CallPolicy, sds: SdsFiles
) -> list[dict[str, Any]]:
    """A cluster of every instance of each release of `dependency` (one cluster, named
    after it, when it has no versions: `mesh.control.routing`), balanced by least
    requests, over mTLS to its identity only, with the call policy's circuit breakers
    and outlier detection."""
    return [
        {
            **_discovered(topology, plan, dependency, version.name),
            "lb_policy": "LEAST_REQUEST",
            "typed_extension_protocol_options": HTTP2_UPSTREAM,
            "circuit_breakers": _circuit_breakers(
                policy.circuit_breaker,
                policy.retries,
                admitted(topology, dependency, version.name),
            ),
            "outlier_detection": _outlier_detection(policy.outlier_detection),
            "transport_socket": upstream_tls(sds, topology.spiffe_id(dependency)),
        }
        for version in topology.services[dependency].releases
    ]
