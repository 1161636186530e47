"""The edge Envoy: the single entry point for clients, rendered from mesh.yaml and the contracts.

One port (on loopback locally, on every address in a container) speaks HTTP/1.1 and
h2c. A request goes through, in order (`edge_filters.http_filters`):

1. header mutation: any `x-shop-subject` the client sent is dropped (only a verified
   token may name the caller);
2. CORS, for the origins `mesh.yaml` allows;
3. the edge's total rate limit (a token bucket every request takes from) -> 429;
4. a body size limit -> 413;
5. REST<->gRPC transcoding of every public RPC (`google.api.http` rules, from the
   descriptor set), unknown query parameters refused, gRPC errors turned into their HTTP
   status with a `google.rpc.Status` JSON body, details included. From here on REST and
   native gRPC requests look alike: a gRPC method path;
6. JWT authentication (RS256 from identity, checked against identity's JWKS, which the
   edge serves itself at `/.well-known/jwks.json`): public methods take a token but do
   not need one, every other method needs a valid one; the token's subject is passed on
   as `x-shop-subject`;
7. the clients' rate limits -> 429: a bucket per token subject, and for calls without a
   token one per client address and one all of them share (`edge.rate_limit`); health
   checks are outside every bucket;
8. authorization: a verified token without a subject (`sub`) is refused, whatever the
   method (it would act for no one); then scopes, per method, as `mesh.yaml` declares;
9. routing (`_routes`): each public method to its service's instances, over mTLS with
   the edge's SPIFFE identity (internal methods have no route: 404 / UNIMPLEMENTED);
   reflection and health to the edge companion, and a health check the companion asks
   on behalf of a client to the instances of the public service it names
   (`edge_companion`); `/openapi.json`, `/docs` and `/healthz` answered by the edge
   itself.

With `edge.https`, a second port runs the same chain over TLS (`_fronts`): TLS 1.2 or
1.3, HTTP/2 or HTTP/1.1 by ALPN, so native gRPC works there as on plain HTTP; its
certificate comes from an SDS file in a watched directory (`tls.server_tls`,
`mesh.control.edge_tls`), so a new one is served without a restart. Plain HTTP then is
`on` (as above), `off`, or `redirect` (`_redirect_listener`: REST to HTTPS with a 308, gRPC
refused with the port to use); when it is not `on`, the chain also listens on a loopback
port of its own (`EdgePlan.internal_port`) for the edge's own calls: identity's JWKS for
its JWT filter, and the health checks its companion relays.

With `edge.cache`, a response cache sits after the total rate limit (`edge_cache`): it
answers repeated public reads itself, and fetches what it keeps through an internal
listener (`_cache_fill_listener`) that runs the rest of the chain and the same routes.

Every error the edge itself returns to a REST client is JSON (`edge_replies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import StatusCode

from mesh.control import deny_list
from mesh.control.api import Api, Method
from mesh.control.edge_tls import CopiedPair
from mesh.control.envoy import admin, edge_access, edge_cache, edge_files, edge_filters, splits
from mesh.control.envoy.bootstrap import LOOPBACK, bootstrap, duration, socket_address
from mesh.control.envoy.clusters import dependency_clusters, loopback_cluster, upstream
from mesh.control.envoy.connection_manager import connection_manager
from mesh.control.envoy.edge_files import (
    DOCS_ASSETS,
    DOCS_PATH,
    HEALTH_PATH,
    OPENAPI_PATH,
    EdgeFiles,
    files_in,
)
from mesh.control.envoy.edge_replies import local_reply_config
from mesh.control.envoy.edge_rules import (
    HEALTH_CHECK_PATH,
    HEALTH_CHECK_TIMEOUT,
    HEALTH_OF_HEADER,
    HEALTH_PREFIX,
    REFLECTION_PREFIX,
    REVOCATIONS_METHOD,
    EdgeRules,
    resolve_rules,
)
from mesh.control.envoy.listeners import probe_resources
from mesh.control.envoy.routes import method_policies, method_route, retry_policy
from mesh.control.envoy.tls import SdsFiles, server_tls
from mesh.control.envoy.tracing import trace_cluster, tracing
from mesh.control.plan import EdgePlan, MeshPlan
from mesh.control.topology import DEFAULT_CALL_POLICY, HTTP_ON, HTTP_REDIRECT, Topology

__all__ = [
    "EdgeFiles",
    "EdgeRules",
    "client_url",
    "companion_arguments",
    "edge_config",
    "files_in",
    "jwks_fetched",
    "resolve_rules",
    "write_files",
]

COMPANION = "edge_companion"
#: What the HTTPS listener tells browsers when plain HTTP is not for clients: keep to
#: HTTPS for this host for a year (not with plain HTTP on, where it would break its port).
HSTS = ("strict-transport-security", "max-age=31536000")
#: The largest page the edge answers itself (the Swagger UI bundle is about 1.5 MiB).
MAX_DIRECT_RESPONSE_BYTES = 8 * 1_048_576


def _method_routes(topology: Topology, api: Api, rules: EdgeRules) -> list[dict[str, Any]]:
    """Each public method to its service: the method's deadline (else `edge.timeout`) and
    the default call policy's retries."""
    routes = []
    for service, methods in sorted(rules.exposed.items()):
        declared = method_policies(topology, api, service)
        to = splits.target(topology, service)
        routes += [
            {
                "name": route_name(service, m),
                **method_route(to, DEFAULT_CALL_POLICY, m, declared[m.path], topology.edge.timeout),
            }
            for m in methods
        ]
    return routes


def route_name(service: str, method: Method) -> str:
    """A method's route, as the access log names it: `catalog.v2.GetProduct`."""
    return f"{service}.{method.package.rpartition('.')[2]}.{method.name}"


def _page(path: str, file: Path, content_type: str) -> dict[str, Any]:
    """A page the edge answers itself, from `file`."""
    return {
        "match": {"path": path},
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            _header("content-type", content_type),
            _header("cache-control", "no-cache"),
        ],
    }


def _pages(files: EdgeFiles) -> list[dict[str, Any]]:
    """The OpenAPI document, the docs page and the Swagger UI files it loads."""
    html = "text/html; charset=utf-8"
    return [
        _page(OPENAPI_PATH, files.openapi, "application/json"),
        _page(DOCS_PATH, files.docs_page, html),
        _page(f"{DOCS_PATH}/", files.docs_page, html),
        *(
            _page(f"{DOCS_PATH}/{name}", files.docs_assets / name, content_type)
            for name, content_type in DOCS_ASSETS.items()
        ),
    ]


def _companion_routes() -> list[dict[str, Any]]:
    """Reflection (a bidirectional stream: no whole-body buffering, no timeout) and gRPC
    health (outside every rate limit), both answered by the edge companion."""
    return [
        {
            "match": {"prefix": REFLECTION_PREFIX},
            "route": {"cluster": COMPANION, "timeout": "0s"},
            "typed_per_filter_config": edge_filters.buffer_disabled(),
        },
        {
            "match": {"prefix": HEALTH_PREFIX},
            "route": {"cluster": COMPANION},
            "typed_per_filter_config": edge_filters.UNLIMITED,
        },
    ]


def _service_health_routes(topology: Topology, rules: EdgeRules) -> list[dict[str, Any]]:
    """A health check that names a public service in `HEALTH_OF_HEADER` (the companion
    sets it) to that service's instances, as its calls go; outside every rate limit, and
    at HIGH priority, so a busy service's circuit breaker lets its health checks pass."""
    services = {
        method.path.split("/")[1]: service
        for service, methods in rules.exposed.items()
        for method in methods
    }
    return [
        {
            "match": {
                "path": HEALTH_CHECK_PATH,
                "headers": [{"name": HEALTH_OF_HEADER, "string_match": {"exact": name}}],
            },
            "route": {
                **splits.target(topology, service),
                "timeout": duration(HEALTH_CHECK_TIMEOUT),
                "priority": "HIGH",
                "retry_policy": retry_policy(DEFAULT_CALL_POLICY, None, HEALTH_CHECK_TIMEOUT),
            },
            "typed_per_filter_config": edge_filters.UNLIMITED,
        }
        for name, service in sorted(services.items())
    ]


def _preflight() -> dict[str, Any]:
    """CORS preflights name REST paths, which have no route of their own. The CORS filter
    answers every preflight itself (it stands aside on direct responses, hence a cluster
    here, which it never forwards to)."""
    options = {"name": ":method", "string_match": {"exact": "OPTIONS"}}
    return {"match": {"prefix": "/", "headers": [options]}, "route": {"cluster": COMPANION}}


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}}


def _health_reply() -> dict[str, Any]:
    """The edge's own health."""
    return {
        "match": {"path": HEALTH_PATH},
        "direct_response": {"status": 200, "body": {"inline_string": '{"status":"SERVING"}'}},
        "response_headers_to_add": [_header("content-type", "application/json")],
    }


def _healthz() -> dict[str, Any]:
    """The edge's own health, outside every rate limit."""
    return {**_health_reply(), "typed_per_filter_config": edge_filters.UNLIMITED}


def _routes(
    topology: Topology, api: Api, rules: EdgeRules, files: EdgeFiles
) -> list[dict[str, Any]]:
    return [
        *splits.with_pins(
            topology,
            [*_method_routes(topology, api, rules), *_service_health_routes(topology, rules)],
            cookie=True,
        ),
        *_companion_routes(),
        *_pages(files),
        _preflight(),
        _healthz(),
    ]


@dataclass(frozen=True)
class _Front:
    """A listener that runs the edge's whole chain: its name, where it listens, and with
    which TLS and extra response headers."""

    name: str
    address: dict[str, Any]
    transport_socket: dict[str, Any] | None = None
    response_headers: tuple[dict[str, Any], ...] = ()


def _fronts(topology: Topology, plan: MeshPlan, sds: SdsFiles) -> list[_Front]:
    """Plain HTTP for clients (`edge.http: on`), else for the edge's own calls on loopback
    only; and HTTPS, telling browsers to keep to it (HSTS) once plain HTTP is not theirs."""
    assert plan.edge is not None
    edge = plan.edge
    if topology.edge.http == HTTP_ON:
        fronts = [_Front("edge", socket_address(edge.port, plan.listen_host))]
    else:
        fronts = [_Front("edge_internal", socket_address(edge.internal_port))]
    if edge.https_port:
        hsts = () if topology.edge.http == HTTP_ON else (_header(*HSTS),)
        address = socket_address(edge.https_port, plan.listen_host)
        fronts.append(_Front("edge_https", address, server_tls(sds), hsts))
    return fronts


def _redirect_listener(plan: MeshPlan) -> dict[str, Any]:
    """Plain HTTP with `edge.http: redirect`: `/healthz` answered; every other request
    sent to HTTPS on the same host and path (308, so a POST stays a POST), but a gRPC
    call, which no gRPC client follows a redirect for, refused as FAILED_PRECONDITION
    (a trailers-only answer) with the port to use instead."""
    assert plan.edge is not None
    port = plan.edge.https_port
    grpc = {"name": "content-type", "string_match": {"prefix": "application/grpc"}}
    refused = {
        "match": {"prefix": "/", "headers": [grpc]},
        "direct_response": {"status": 200},
        "response_headers_to_add": [
            _header("content-type", "application/grpc"),
            _header("grpc-status", str(StatusCode.FAILED_PRECONDITION.value[0])),
            _header("grpc-message", f"plain HTTP is not served here: use TLS on port {port}"),
        ],
    }
    redirect = {
        "https_redirect": True,
        "port_redirect": port,
        "response_code": "PERMANENT_REDIRECT",
    }
    routes = [_health_reply(), refused, {"match": {"prefix": "/"}, "redirect": redirect}]
    return {
        "name": "edge_redirect",
        "address": socket_address(plan.edge.port, plan.listen_host),
        "traffic_direction": "INBOUND",
        "filter_chains": [{"filters": [connection_manager("edge_redirect", routes, [])]}],
    }


def _deny_list_listener(topology: Topology, plan: MeshPlan, method: Method) -> dict[str, Any]:
    """On loopback only, where the edge companion asks identity, as the edge, for the API
    keys it revoked (`method`): no client reaches this port, and it routes nothing else."""
    assert plan.edge is not None
    service = REVOCATIONS_METHOD.partition(".")[0]
    route = {
        "match": {"path": method.path},
        "route": {**splits.target(topology, service), "timeout": "5s"},
    }
    return {
        "name": "edge_deny_list",
        "address": socket_address(plan.edge.deny_list_port),
        "traffic_direction": "INBOUND",
        "filter_chains": [{"filters": [connection_manager("edge_deny_list", [route], [])]}],
    }


def _listener(
    topology: Topology,
    plan: MeshPlan,
    api: Api,
    rules: EdgeRules,
    files: EdgeFiles,
    front: _Front,
) -> dict[str, Any]:
    assert plan.edge is not None
    manager = connection_manager(
        front.name,
        _routes(topology, api, rules, files),
        edge_filters.http_filters(topology, rules, files, plan.edge.own_port, plan.edge.deny_list),
        local_reply_config=local_reply_config(),
        stream_idle_timeout="60s",
        request_headers_timeout="10s",
        use_remote_address=True,
        access_log=edge_access.access_logs(),
        **tracing(topology, "edge"),
    )
    # The edge's route table also answers pages itself and carries the CORS policy.
    route_config = manager["typed_config"]["route_config"]
    virtual_host = route_config["virtual_hosts"][0]
    virtual_host["typed_per_filter_config"] = {
        edge_filters.CORS_FILTER: edge_filters.cors_policy(topology)
    }
    if front.response_headers:
        virtual_host["response_headers_to_add"] = list(front.response_headers)
    route_config["max_direct_response_body_size_bytes"] = MAX_DIRECT_RESPONSE_BYTES
    tls = {"transport_socket": front.transport_socket} if front.transport_socket else {}
    return {
        "name": front.name,
        "address": front.address,
        "traffic_direction": "INBOUND",
        "filter_chains": [{**tls, "filters": [manager]}],
    }


def _cache_fill_listener(
    topology: Topology, plan: MeshPlan, api: Api, rules: EdgeRules, files: EdgeFiles
) -> dict[str, Any]:
    """The internal listener the edge's cache fetches through (`edge_cache`): the front's
    routes, a cached read's asking for a cacheable answer, and its filters past the cache."""
    assert plan.edge is not None
    return edge_cache.fill_listener(
        edge_cache.fill_routes(_routes(topology, api, rules, files), rules.cached),
        edge_filters.served_filters(
            topology, rules, files, plan.edge.own_port, plan.edge.deny_list, shared=True
        ),
        MAX_DIRECT_RESPONSE_BYTES,
        **tracing(topology, "edge"),
    )


def edge_config(
    topology: Topology, plan: MeshPlan, api: Api, sds: SdsFiles, files: EdgeFiles
) -> dict[str, Any]:
    """The edge Envoy's bootstrap."""
    assert plan.edge is not None, "the plan has no edge: nothing is exposed"
    edge_plan = plan.edge
    rules = resolve_rules(topology, api)
    listeners = [
        _listener(topology, plan, api, rules, files, front)
        for front in _fronts(topology, plan, sds)
    ]
    if topology.edge.http == HTTP_REDIRECT:
        listeners.append(_redirect_listener(plan))
    if rules.revocations is not None:
        listeners.append(_deny_list_listener(topology, plan, rules.revocations))
    clusters = [
        *(
            cluster
            for service in sorted(rules.exposed)
            for cluster in dependency_clusters(topology, plan, service, DEFAULT_CALL_POLICY, sds)
        ),
        loopback_cluster(COMPANION, edge_plan.companion_port),
        trace_cluster(topology, plan),
        # The edge serves identity's JWKS to its own JWT filter.
        upstream("edge_self", [(LOOPBACK, edge_plan.own_port)]),
    ]
    if edge_plan.probe_port:
        probe, probe_clusters = probe_resources(
            plan, edge_plan.probe_port, edge_plan.admin_socket, COMPANION
        )
        listeners.append(probe)
        clusters += probe_clusters
    if rules.cached:  # the listener the cache fetches through, and the way to it
        listeners.append(_cache_fill_listener(topology, plan, api, rules, files))
        clusters.append(edge_cache.fill_cluster())
    split = splits.runtime(topology, plan.routing_root, rules.exposed)
    config = bootstrap("edge", "edge", edge_plan.admin_socket, listeners, clusters, split)
    if rules.cached:
        config["bootstrap_extensions"] = edge_cache.BOOTSTRAP_EXTENSIONS
    return config


def write_files(
    directory: Path,
    descriptor_set: Path,
    topology: Topology,
    rules: EdgeRules,
    url: str,
    deny_list_dir: Path | None,
) -> EdgeFiles:
    """What the edge reads besides its configuration, before it starts: the files it
    serves (`edge_files`, in `directory`; the OpenAPI document names the edge at `url`)
    and, with API keys, the deny list it starts with in `deny_list_dir` (every key refused
    until its companion has read identity's, `mesh.control.deny_list`)."""
    files = edge_files.write_files(directory, descriptor_set, topology, rules, url)
    if deny_list_dir is not None:
        deny_list_dir.mkdir(parents=True, exist_ok=True)
        deny_list.write(deny_list_dir, None)
    return files


def client_url(topology: Topology, edge_plan: EdgePlan) -> str:
    """Where clients reach the edge on loopback: plain HTTP when it serves them
    (`edge.http: on`), else HTTPS."""
    if topology.edge.http == HTTP_ON:
        return f"http://{LOOPBACK}:{edge_plan.port}"
    return f"https://{LOOPBACK}:{edge_plan.https_port}"


def companion_arguments(
    rules: EdgeRules,
    edge_plan: EdgePlan,
    descriptor_set: Path,
    copied: CopiedPair | None = None,
) -> list[str]:
    """The edge companion's arguments after the Python interpreter: it listens on its port
    and asks the edge, on loopback (`EdgePlan.own_port`), for the health of public
    services; with `copied`, it keeps the user's certificate copied for HTTPS; with API
    keys, it keeps the edge's deny list."""
    deny_list = []
    if rules.revocations is not None and edge_plan.deny_list is not None:
        deny_list = [
            "--deny-list-port", str(edge_plan.deny_list_port),
            "--deny-list-dir", str(edge_plan.deny_list_dir),
        ]  # fmt: skip
    return [
        "-m", "mesh.control.edge_companion",
        "--port", str(edge_plan.companion_port),
        "--edge-port", str(edge_plan.own_port),
        "--descriptor-set", str(descriptor_set),
        *(arg for service in rules.grpc_services for arg in ("--service", service)),
        *(copied.arguments() if copied else []),
        *deny_list,
    ]  # fmt: skip


def jwks_fetched(admin_socket: str) -> bool:
    """Whether the edge (its admin at the unix socket `admin_socket`) has loaded
    identity's JWKS (so tokens can be verified)."""
    try:
        fetched = admin.admin_stats(admin_socket, "jwks_fetch_success", timeout=1)
    except OSError:
        return False
    return any(count > 0 for count in fetched.values())
