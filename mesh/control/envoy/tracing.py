"""Tracing, the same in every Envoy: OpenTelemetry spans exported over OTLP/gRPC to the
mesh's trace store, or to the collector mesh.yaml names."""

from __future__ import annotations

from typing import Any

from mesh.control.envoy.clusters import HTTP2_UPSTREAM, loopback_cluster, upstream
from mesh.control.plan import MeshPlan
from mesh.control.topology import Topology

#: The cluster every Envoy sends its spans to (the mesh's trace store, or a collector).
TRACE_CLUSTER = "trace_store"


def sidecar_name(service: str) -> str:
    """How a sidecar's spans name it: beside its app's, told apart (`orders-sidecar`)."""
    return f"{service}-sidecar"


def tracing(topology: Topology, service_name: str) -> dict[str, Any]:
    """An HTTP connection manager's tracing settings (none when mesh.yaml turns it off):
    OpenTelemetry, exported over OTLP/gRPC.

    Envoy continues the caller's W3C `traceparent` (or starts a trace, sampled at
    `telemetry.sampling_percent`), makes one span per request (a server span on an
    INBOUND listener, a client span on an OUTBOUND one) and passes the context on.
    """
    if not topology.telemetry.tracing:
        return {}
    provider = {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
            "grpc_service": {"envoy_grpc": {"cluster_name": TRACE_CLUSTER}, "timeout": "1s"},
            "service_name": service_name,
        },
    }
    sampling = {"value": topology.telemetry.sampling_percent}
    return {"tracing": {"provider": provider, "random_sampling": sampling}}


def trace_cluster(topology: Topology, plan: MeshPlan) -> dict[str, Any]:
    """Where spans go (OTLP/gRPC): the collector mesh.yaml names, or the trace store."""
    collector = topology.telemetry.endpoint()
    if collector is None:
        return loopback_cluster(TRACE_CLUSTER, plan.trace_port)
    return {
        **upstream(TRACE_CLUSTER, [collector]),
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
    }
