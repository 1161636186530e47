"""Routes: the call policy of mesh.yaml per method (timeouts passed on as deadlines,
retries as safe as the contracts say the method is), and a sidecar's routes to its app
and to each of its dependencies."""

from __future__ import annotations

from typing import Any

from mesh.control.api import Api, Method
from mesh.control.envoy import splits
from mesh.control.envoy.bootstrap import duration
from mesh.control.envoy.clusters import LOCAL_APP, LOCAL_APP_EXPENSIVE
from mesh.control.plan import InstancePlan
from mesh.control.routing import VERSION_HEADER
from mesh.control.topology import (
    CHEAP,
    EXPENSIVE,
    CallPolicy,
    MethodPolicy,
    Topology,
)
from mesh.runtime import admission
from mesh.runtime.metrics import PLATFORM_PREFIX

#: How often a retry may re-pick a host before it settles for one it already tried.
HOST_SELECTION_ATTEMPTS = 20

#: Retry conditions for requests that never reached the callee's app.
RETRY_ON_NOT_APPLIED = "connect-failure,refused-stream,reset-before-request,retriable-headers"
#: Retry conditions for methods the contracts mark idempotent: also failures after which
#: the request may or may not have been applied (gRPC UNAVAILABLE and the like, resets,
#: gateway errors including the per-try timeout).
RETRY_ON_IDEMPOTENT = (
    f"{RETRY_ON_NOT_APPLIED},unavailable,cancelled,resource-exhausted,reset,gateway-error"
)


def _previous_hosts() -> dict[str, Any]:
    """A retry's host predicate: another host than those already tried, where there is one."""
    return {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host"
            ".previous_hosts.v3.PreviousHostsPredicate"
        },
    }


def method_policies(topology: Topology, api: Api, service: str) -> dict[str, MethodPolicy]:
    """What mesh.yaml says of each method of `service`, by gRPC path (the methods it names
    are the contracts': `mesh.control.conformance`)."""
    return {m.path: topology.services[service].method(m.name) for m in api.of(service)}


def route_timeout(method: MethodPolicy, fallback: float) -> float:
    """How long a caller waits for `method`: its own timeout, else `fallback` (the
    call's, or at the edge `edge.timeout`)."""
    return method.timeout if method.timeout is not None else fallback


def retry_policy(
    policy: CallPolicy, method: Method | None, timeout: float, cost: str = CHEAP
) -> dict[str, Any]:
    """Envoy's retries of a call to `method` (None: one the contracts do not name).

    Every method is retried where its request never reached an app (or an app refused
    it unstarted: `admission.NOT_APPLIED_HEADER`). Only a method that is safe to repeat
    and cheap is also retried after failures that may have done its work, a per-try
    timeout among them:
    an expensive one (password hashing) sent again while its first try still runs would
    double the work of a service that is already slow.
    """
    retries = policy.retries
    safe = method is not None and method.idempotency.retry_safe and cost != EXPENSIVE
    # A per-try timeout only helps where the try that timed out is retried and another
    # try still fits in the call's timeout; otherwise the one try gets the whole timeout.
    per_try = (
        {"per_try_timeout": duration(retries.per_try_timeout)}
        if safe and retries.per_try_timeout < timeout
        else {}
    )
    return {
        "retry_on": RETRY_ON_IDEMPOTENT if safe else RETRY_ON_NOT_APPLIED,
        "retriable_headers": [{"name": admission.NOT_APPLIED_HEADER, "present_match": True}],
        "num_retries": retries.attempts,
        **per_try,
        "retry_back_off": {
            "base_interval": duration(retries.backoff_base),
            "max_interval": duration(retries.backoff_max),
        },
        "retry_host_predicate": [_previous_hosts()],
        # A host that fails fast (its app was just killed) has the fewest requests in
        # flight, so least-request picks it again and again; with a few tries the retry
        # lands back on it. Picks are cheap: try until another host comes up.
        "host_selection_retry_max_attempts": HOST_SELECTION_ATTEMPTS,
    }


def deadline(timeout: float) -> dict[str, Any]:
    """A route's timeout as a deadline passed on: the caller's own `grpc-timeout` when it
    is sooner, else `timeout`. Envoy enforces it and forwards what is left of it as
    `grpc-timeout` (adding one to a request that had none), so the app, and every hop
    after it, knows how long its caller still waits (`mesh.runtime.deadlines`)."""
    limit = duration(timeout)
    return {
        "timeout": limit,
        "max_stream_duration": {"max_stream_duration": limit, "grpc_timeout_header_max": limit},
    }


def method_route(
    target: dict[str, Any],
    policy: CallPolicy,
    method: Method,
    declared: MethodPolicy,
    fallback: float,
) -> dict[str, Any]:
    """The route of one method to `target` (`splits.target`): its deadline (its own
    timeout, else `fallback`) and its retries; the span is named after the method."""
    timeout = route_timeout(declared, fallback)
    return {
        "match": {"path": method.path},
        "route": {
            **target,
            **deadline(timeout),
            "retry_policy": retry_policy(policy, method, timeout, declared.cost),
        },
        "decorator": {"operation": method.path},
    }


def outbound_routes(
    topology: Topology, dependency: str, policy: CallPolicy, api: Api
) -> list[dict[str, Any]]:
    """A sidecar's routes to `dependency`: one per method, then anything the contracts
    do not name, with the call's timeout and no risky retry; split between its versions,
    or pinned to one (`splits`)."""
    declared = method_policies(topology, api, dependency)
    to = splits.target(topology, dependency)
    unknown = {
        "match": {"prefix": "/"},
        "route": {
            **to,
            **deadline(policy.timeout),
            "retry_policy": retry_policy(policy, None, policy.timeout),
        },
        "decorator": {"operation": f"{dependency} (unknown)"},
    }
    routes = [
        *(
            method_route(to, policy, m, declared[m.path], policy.timeout)
            for m in api.of(dependency)
        ),
        unknown,
    ]
    return splits.with_pins(topology, routes)


def inbound_routes(topology: Topology, api: Api, instance: InstancePlan) -> list[dict[str, Any]]:
    """A sidecar's routes to its app, never timed out here (the caller's deadline rules):
    the platform's own methods (health) first and at HIGH priority, so they always pass;
    expensive methods to their own, smaller, cluster; everything else to the app."""
    operation: dict[str, Any] = {"decorator": {"operation": f"{instance.service} inbound"}}
    if instance.version:  # which version answered, for testers and the edge's clients
        header = {"key": VERSION_HEADER, "value": instance.version}
        overwrite = "OVERWRITE_IF_EXISTS_OR_ADD"
        operation["response_headers_to_add"] = [{"header": header, "append_action": overwrite}]
    expensive = [
        path
        for path, policy in method_policies(topology, api, instance.service).items()
        if policy.cost == EXPENSIVE
    ]

    def to_app(match: dict[str, Any], cluster: str, **route: Any) -> dict[str, Any]:
        return {
            "match": match,
            "route": {"cluster": cluster, "timeout": "0s", **route},
            **operation,
        }

    return [
        to_app({"prefix": PLATFORM_PREFIX}, LOCAL_APP, priority="HIGH"),
        *(to_app({"path": path}, LOCAL_APP_EXPENSIVE) for path in expensive),
        to_app({"prefix": "/"}, LOCAL_APP),
    ]
