"""A sidecar's HTTP filters: on its inbound listener, in order, RBAC on the caller's SPIFFE
identity, then the faults mesh.yaml injects, and the replies it makes itself; on each
outbound listener (and the edge), the gRPC statistics of the calls it sends."""

from __future__ import annotations

from typing import Any

import grpc

from mesh.control.api import Api
from mesh.control.envoy.bootstrap import duration
from mesh.control.envoy.edge_rules import HEALTH_CHECK_PATH, REVOCATIONS_METHOD
from mesh.control.topology import ALL_METHODS, PUBLIC_METHODS, Faults, Topology
from mesh.runtime import admission

#: A sidecar adds `admission.NOT_APPLIED_HEADER` to its own error replies when the
#: request never reached its app (it could not connect, or had no healthy app), as an
#: app does to the calls it refuses unstarted: a caller's sidecar may then retry even a
#: request that must not be applied twice. The Envoy response flags of those replies:
#: upstream connection failure, no healthy upstream, upstream overflow (circuit breaker).
_NOT_APPLIED_FLAGS = ["UF", "UH", "UO"]


def principal(spiffe_id: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": spiffe_id}}}


def _methods(paths: list[str]) -> list[dict[str, Any]]:
    return [{"url_path": {"path": {"exact": path}}} for path in paths]


def _granted(topology: Topology, api: Api, caller: str, service: str) -> list[dict[str, Any]]:
    """RBAC permissions for the methods of `service` that `caller`'s `calls:` entry names
    (the contracts', `mesh.control.conformance`)."""
    grant = topology.services[caller].grants[service]
    if grant == ALL_METHODS:
        return [{"any": True}]
    methods = api.public(service) if grant == PUBLIC_METHODS else api.named(service, grant)
    return _methods([m.path for m in methods])


def _edge_own_calls(topology: Topology, api: Api, service: str) -> list[str]:
    """The internal methods of `service` the edge calls itself: identity's deny list of API
    keys, when the edge takes them."""
    owner, _, method = REVOCATIONS_METHOD.partition(".")
    if service != owner or not topology.edge.api_keys.plans:
        return []
    return [m.path for m in api.named(service, [method])]


def rbac(topology: Topology, api: Api, service: str) -> dict[str, Any]:
    """Who may call `service`'s sidecar, and which methods: each declared caller the
    methods its `calls:` entry grants, the edge the public ones; anyone else gets
    PERMISSION_DENIED."""
    policies: dict[str, Any] = {}
    for caller in topology.callers_of(service):
        policies[f"caller-{caller}"] = {
            "permissions": _granted(topology, api, caller, service),
            "principals": [principal(topology.spiffe_id(caller))],
        }
    public = api.public(service)
    if service in topology.edge.expose and public:
        policies["edge-public-methods"] = {
            # The health checks a client asks of the edge (`edge_companion`) too, and the
            # deny list of API keys its companion follows.
            "permissions": _methods(
                [
                    *(m.path for m in public),
                    HEALTH_CHECK_PATH,
                    *_edge_own_calls(topology, api, service),
                ]
            ),
            "principals": [principal(topology.spiffe_id("edge"))],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        },
    }


def _share(percent: float) -> dict[str, Any]:
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}


def faults(injected: Faults | None) -> list[dict[str, Any]]:
    """Envoy's fault filter for `injected` (after RBAC: only admitted calls are failed)."""
    if injected is None:
        return []
    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    }
    if injected.abort_percent:
        config["abort"] = {
            "grpc_status": grpc.StatusCode[injected.abort_status].value[0],
            "percentage": _share(injected.abort_percent),
        }
    if injected.delay_percent:
        config["delay"] = {
            "fixed_delay": duration(injected.delay),
            "percentage": _share(injected.delay_percent),
        }
    return [{"name": "envoy.filters.http.fault", "typed_config": config}]


def not_applied_replies() -> dict[str, Any]:
    """The sidecar's own error replies for a request its app never saw, marked so
    (`admission.NOT_APPLIED_HEADER`) that the caller's sidecar may retry them."""
    marked = {
        "header": {"key": admission.NOT_APPLIED_HEADER, "value": "1"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    }
    never_reached = {"response_flag_filter": {"flags": _NOT_APPLIED_FLAGS}}
    return {"mappers": [{"filter": never_reached, "headers_to_add": [marked]}]}


def grpc_stats() -> dict[str, Any]:
    """Count the calls sent to each cluster and those that failed (a gRPC status other
    than OK) as `cluster.<name>.grpc.{total,success,failure,<status code>}`: one set per
    cluster, not per method, which the console's map reads (`mesh.control.console.measure`)
    and, in a sidecar's inbound, the objectives' alerts and the rollouts
    (`mesh.control.envoy.stats.served_counts`)."""
    return {
        "name": "envoy.filters.http.grpc_stats",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "stats_for_all_methods": False,
        },
    }
