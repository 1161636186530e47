"""The edge Envoy: the single entry point for clients, rendered from mesh.yaml and the contracts.

One port (on loopback locally, on every address in a container) speaks HTTP/1.1 and
h2c. A request goes through, in order:

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
9. routing: each public method to its service's instances, over mTLS with the edge's
   SPIFFE identity (internal methods have no route: 404 / UNIMPLEMENTED); reflection and
   health to the edge companion; `/openapi.json`, `/docs` and `/healthz` answered by the
   edge itself.

Every error the edge itself returns to a REST client is JSON shaped like
`google.rpc.Status`: `{"code": <gRPC code>, "status": "<NAME>", "message": "..."}`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import swagger_ui_bundle  # type: ignore[import-untyped]
from google.protobuf import descriptor_pb2

from mesh.control import envoy, openapi
from mesh.control.api import Api, Method
from mesh.control.plan import EdgePlan, MeshPlan
from mesh.control.topology import DEFAULT_CALL_POLICY, Bucket, RateLimit, Topology
from mesh.runtime import admission
from mesh.runtime.caller import SUBJECT_METADATA_KEY

#: The edge's own pages; they need no token.
OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
HEALTH_PATH = "/healthz"
JWKS_PATH = "/.well-known/jwks.json"
#: Swagger UI's files the docs page loads, served under /docs/.
DOCS_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
}

#: Where the edge notes the content type the client sent (dynamic metadata), before
#: transcoding makes every request look like gRPC: it decides how the edge's own replies look.
CLIENT_METADATA_NAMESPACE = "shop.edge"
CLIENT_CONTENT_TYPE_KEY = "client_content_type"
_JWT_PROVIDER = "identity"
_JWT_PAYLOAD = "jwt_payload"
_JWT_FILTER = "envoy.filters.http.jwt_authn"
_FILTERS = "type.googleapis.com/envoy.extensions.filters.http"

#: HTTP statuses of the edge's own replies -> the gRPC code their JSON body carries.
_LOCAL_REPLY_CODES = {
    400: ("INVALID_ARGUMENT", 3),
    401: ("UNAUTHENTICATED", 16),
    403: ("PERMISSION_DENIED", 7),
    404: ("NOT_FOUND", 5),
    405: ("UNIMPLEMENTED", 12),
    413: ("INVALID_ARGUMENT", 3),
    429: ("RESOURCE_EXHAUSTED", 8),
    500: ("INTERNAL", 13),
    502: ("UNAVAILABLE", 14),
    503: ("UNAVAILABLE", 14),
    504: ("DEADLINE_EXCEEDED", 4),
}


class EdgeConfigError(ValueError):
    """mesh.yaml's edge section does not fit the contracts."""


@dataclass(frozen=True)
class EdgeFiles:
    """What the edge serves itself, rendered into the run directory."""

    descriptor_set: Path
    openapi: Path
    docs_page: Path
    docs_assets: Path


@dataclass(frozen=True)
class EdgeRules:
    """mesh.yaml's edge auth rules, resolved to gRPC method paths."""

    exposed: Mapping[str, tuple[Method, ...]]
    public: frozenset[str]
    scopes: Mapping[str, str]

    @property
    def grpc_services(self) -> list[str]:
        """The full names of the exposed gRPC services (`shop.catalog.v1.CatalogService`)."""
        return sorted({m.path.split("/")[1] for ms in self.exposed.values() for m in ms})


def resolve_rules(topology: Topology, api: Api) -> EdgeRules:
    """The public and scoped method paths; an unknown method name is an error at its line."""
    auth = topology.edge.auth
    exposed = {service: api.public(service) for service in topology.edge.expose}
    by_name = {
        f"{service}.{m.path.rsplit('/', 1)[1]}": m.path
        for service, methods in exposed.items()
        for m in methods
    }
    source = topology.source or "mesh.yaml"

    def path_of(name: str) -> str:
        if name not in by_name:
            line = auth.lines.get(name)
            where = f"{source}:{line}" if line else str(source)
            raise EdgeConfigError(f"{where}: {name} is not a public method of an exposed service")
        return by_name[name]

    public = frozenset(path_of(name) for name in auth.public)
    scopes = {path_of(name): scope for name, scope in auth.scopes.items()}
    jwks = by_name.get("identity.GetJwks")
    if jwks is None or jwks not in public:
        raise EdgeConfigError(
            f"{source}: the edge verifies tokens with identity's JWKS, so identity must be "
            "exposed and identity.GetJwks public"
        )
    return EdgeRules(exposed, public, scopes)


#: What the edge says when its own reply would otherwise have no message.
_DEFAULT_MESSAGES = {404: "no such route", 405: "method not allowed here"}


def _from_grpc_client() -> dict[str, Any]:
    """Matches a request whose client spoke gRPC: the edge's own replies to it are a gRPC
    status (Envoy's, or the refusal's message); to any other client, JSON."""
    return {
        "metadata_filter": {
            "matcher": {
                "filter": CLIENT_METADATA_NAMESPACE,
                "path": [{"key": CLIENT_CONTENT_TYPE_KEY}],
                "value": {"string_match": {"prefix": "application/grpc"}},
            },
            "match_if_key_not_found": False,
        }
    }


def _json_body(status: int) -> dict[str, Any]:
    name, code = _LOCAL_REPLY_CODES[status]
    return {
        "body_format_override": {
            "json_format": {"code": code, "status": name, "message": "%LOCAL_REPLY_BODY%"},
            "content_type": "application/json",
        }
    }


#: A call the edge's circuit breaker refused (UO: the service's apps admit no more).
_OVERFLOW = {"response_flag_filter": {"flags": ["UO"]}}


def _refused_for_load(matched: dict[str, Any], body_format: dict[str, Any]) -> dict[str, Any]:
    """The refusal of a call that `matched` (an overflow): the apps' own words for it
    instead of Envoy's, and when to try again."""
    return {
        "filter": matched,
        "body": {"inline_string": admission.REFUSAL_MESSAGE},
        "headers_to_add": [
            {
                "header": {"key": "retry-after", "value": str(admission.RETRY_AFTER_SECONDS)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        **body_format,
    }


def _local_reply_config() -> dict[str, Any]:
    """The first mapper that matches rewrites a reply: to a gRPC client, the refusal as its
    status message and otherwise Envoy's own status; to a REST client, JSON."""
    overflow_to_grpc = {"and_filter": {"filters": [_OVERFLOW, _from_grpc_client()]}}
    mappers = [
        _refused_for_load(overflow_to_grpc, {}),
        {"filter": _from_grpc_client()},
        _refused_for_load(_OVERFLOW, _json_body(503)),
    ]
    for status in sorted(_LOCAL_REPLY_CODES):
        status_is = {
            "status_code_filter": {
                "comparison": {
                    "op": "EQ",
                    "value": {"default_value": status, "runtime_key": f"edge.{status}"},
                }
            }
        }
        mappers.append(
            {
                "filter": status_is,
                **_json_body(status),
                **(
                    {"body": {"inline_string": _DEFAULT_MESSAGES[status]}}
                    if status in _DEFAULT_MESSAGES
                    else {}
                ),
            }
        )
    return {"mappers": mappers}


def _scope_regex(scope: str) -> str:
    return f"(^|.* ){scope.replace('.', '[.]')}( .*|$)"


def _client_content_type_noted() -> dict[str, Any]:
    """The content type the client sent, in the stream's metadata: not a header, which would
    travel upstream, and whatever removed it on the way would remove it before the router's
    own replies (a refusal, a timeout) are made."""
    noted = {"metadata_namespace": CLIENT_METADATA_NAMESPACE, "key": CLIENT_CONTENT_TYPE_KEY}
    return {
        "name": "envoy.filters.http.header_to_metadata",
        "typed_config": {
            "@type": f"{_FILTERS}.header_to_metadata.v3.Config",
            "request_rules": [{"header": "content-type", "on_header_present": noted}],
        },
    }


def _http_filters(
    topology: Topology, plan: EdgePlan, rules: EdgeRules, files: EdgeFiles
) -> list[dict[str, Any]]:
    edge = topology.edge
    public_prefixes = ["/grpc.reflection.", "/grpc.health.v1.Health/", DOCS_PATH]
    public_paths = [*sorted(rules.public), OPENAPI_PATH, HEALTH_PATH]
    scoped = sorted(rules.scopes.items())
    secured_paths = sorted(
        m.path for ms in rules.exposed.values() for m in ms if m.path not in rules.public
    )
    return [
        _client_content_type_noted(),
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": f"{_FILTERS}.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "request_mutations": [
                        {"remove": SUBJECT_METADATA_KEY},
                        {"remove": "x-forwarded-client-cert"},
                    ]
                },
            },
        },
        {
            "name": "envoy.filters.http.cors",
            "typed_config": {"@type": f"{_FILTERS}.cors.v3.Cors"},
        },
        _rate_limit(TOTAL_LIMIT, edge.rate_limit.total),
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": f"{_FILTERS}.buffer.v3.Buffer",
                "max_request_bytes": edge.max_request_bytes,
            },
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": {
                "@type": f"{_FILTERS}.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                "proto_descriptor": str(files.descriptor_set),
                "services": rules.grpc_services,
                "print_options": {
                    "add_whitespace": False,
                    "always_print_primitive_fields": False,
                    "always_print_enums_as_ints": False,
                    "preserve_proto_field_names": False,
                },
                "convert_grpc_status": True,
                "request_validation_options": {"reject_unknown_query_parameters": True},
            },
        },
        {
            "name": _JWT_FILTER,
            "typed_config": {
                "@type": f"{_FILTERS}.jwt_authn.v3.JwtAuthentication",
                "providers": {
                    _JWT_PROVIDER: {
                        "issuer": edge.auth.issuer,
                        "audiences": [edge.auth.audience],
                        "remote_jwks": {
                            "http_uri": {
                                "uri": f"http://127.0.0.1:{plan.port}{JWKS_PATH}",
                                "cluster": "edge_self",
                                "timeout": "5s",
                            },
                            "cache_duration": "300s",
                            # The listener must not wait for a JWKS it serves itself.
                            "async_fetch": {"fast_listener": True},
                            # The edge fetches from itself: retry briskly while it starts.
                            "retry_policy": {
                                "num_retries": 20,
                                "retry_back_off": {
                                    "base_interval": "0.1s",
                                    "max_interval": "0.5s",
                                },
                            },
                        },
                        "forward": False,
                        "claim_to_headers": [
                            {"header_name": SUBJECT_METADATA_KEY, "claim_name": "sub"}
                        ],
                        "payload_in_metadata": _JWT_PAYLOAD,
                    }
                },
                "rules": [
                    *(
                        {"match": {"path": path}, "requires": _token_optional()}
                        for path in public_paths
                    ),
                    *(
                        {"match": {"prefix": prefix}, "requires": _token_optional()}
                        for prefix in public_prefixes
                    ),
                    # Every other method the edge routes needs a token. Paths it does not
                    # route match no rule here and end in a 404, with or without a token.
                    *(
                        {"match": {"path": path}, "requires": {"provider_name": _JWT_PROVIDER}}
                        for path in secured_paths
                    ),
                ],
            },
        },
        _client_limits(edge.rate_limit),
        {
            "name": "envoy.filters.http.rbac",
            "typed_config": {
                "@type": f"{_FILTERS}.rbac.v3.RBAC",
                "rules": {
                    "action": "DENY",
                    "policies": {
                        "token-without-subject": _token_without_subject(),
                        **{
                            f"needs-{scope}-for-{path}": _needs_scope(path, scope)
                            for path, scope in scoped
                        },
                    },
                },
            },
        },
    ]


#: The edge's two rate limit filters: the total, before any other work is spent on a
#: request; the clients' buckets after the token is verified, which names the client.
TOTAL_LIMIT, CLIENT_LIMITS = "edge_total_rate_limit", "edge_client_rate_limits"
#: Distinct clients (token subjects, addresses) whose buckets are kept, least recently
#: seen forgotten first (a forgotten client starts again with a full bucket).
MAX_CLIENTS = 10_000


def _rate_limit(name: str, total: Bucket, **extra: Any) -> dict[str, Any]:
    """A local rate limit filter whose own bucket is `total` (every request takes from it)."""

    def always(key: str) -> dict[str, Any]:
        return {
            "runtime_key": key,
            "default_value": {"numerator": 100, "denominator": "HUNDRED"},
        }

    return {
        "name": name,
        "typed_config": {
            "@type": f"{_FILTERS}.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": name,
            "token_bucket": _bucket(total),
            "filter_enabled": always(f"{name}_enabled"),
            "filter_enforced": always(f"{name}_enforced"),
            "rate_limited_as_resource_exhausted": True,
            **extra,
        },
    }


def _bucket(bucket: Bucket) -> dict[str, Any]:
    return {
        "max_tokens": bucket.burst,
        "tokens_per_fill": bucket.requests_per_second,
        "fill_interval": "1s",
    }


def _client_limits(limits: RateLimit) -> dict[str, Any]:
    """A bucket per token subject (`x-shop-subject`, which only a verified token sets),
    and for calls without a token one per client address plus one they all share."""
    no_subject = {
        "header_value_match": {
            "descriptor_key": "anonymous",
            "descriptor_value": "yes",
            "expect_match": False,
            "headers": [{"name": SUBJECT_METADATA_KEY, "present_match": True}],
        }
    }
    return _rate_limit(
        CLIENT_LIMITS,
        # Its own bucket never empties: the clients' buckets below decide.
        Bucket(1_000_000, 10_000_000),
        always_consume_default_token_bucket=False,
        max_dynamic_descriptors=MAX_CLIENTS,
        enable_x_ratelimit_headers="DRAFT_VERSION_03",
        rate_limits=[
            {"actions": [{"request_headers": {"header_name": SUBJECT_METADATA_KEY,
                                              "descriptor_key": "subject"}}]},
            {"actions": [no_subject, {"remote_address": {}}]},
            {"actions": [no_subject]},
        ],
        descriptors=[
            {"entries": [{"key": "subject"}], "token_bucket": _bucket(limits.per_client)},
            {"entries": [{"key": "anonymous", "value": "yes"}, {"key": "remote_address"}],
             "token_bucket": _bucket(limits.per_client)},
            {"entries": [{"key": "anonymous", "value": "yes"}],
             "token_bucket": _bucket(limits.anonymous)},
        ],
    )  # fmt: skip


#: Health checks answer whatever the clients do: no rate limit applies to them.
_UNLIMITED = {
    name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    for name in (TOTAL_LIMIT, CLIENT_LIMITS)
}


_NOT_EMPTY = {"string_match": {"safe_regex": {"regex": ".+"}}}


def _claim(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """A principal: the verified token's claim `name` matches `value`."""
    return {
        "metadata": {
            "filter": _JWT_FILTER,
            "path": [{"key": _JWT_PAYLOAD}, {"key": name}],
            "value": value,
        }
    }


def _needs_scope(path: str, scope: str) -> dict[str, Any]:
    """The method `path` without a verified token that grants `scope`."""
    regex = {"string_match": {"safe_regex": {"regex": _scope_regex(scope)}}}
    return {
        "permissions": [{"url_path": {"path": {"exact": path}}}],
        "principals": [{"not_id": _claim("scope", regex)}],
    }


def _token_without_subject() -> dict[str, Any]:
    """Any request with a verified token (it has an issuer: the provider checks it) whose
    `sub` is missing or empty: it would act for no one, so it may not act at all."""
    return {
        "permissions": [{"any": True}],
        "principals": [
            {
                "and_ids": {
                    "ids": [
                        _claim("iss", {"present_match": True}),
                        {"not_id": _claim("sub", _NOT_EMPTY)},
                    ]
                }
            }
        ],
    }


def _token_optional() -> dict[str, Any]:
    """A token is checked when present, but none is needed."""
    return {
        "requires_any": {"requirements": [{"provider_name": _JWT_PROVIDER}, {"allow_missing": {}}]}
    }


def _direct(path: str, file: Path, content_type: str, *, prefix: bool = False) -> dict[str, Any]:
    return {
        "match": {"prefix" if prefix else "path": path},
        "direct_response": {"status": 200, "body": {"filename": str(file)}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": content_type}},
            {"header": {"key": "cache-control", "value": "no-cache"}},
        ],
    }


def _routes(
    topology: Topology, api: Api, rules: EdgeRules, files: EdgeFiles
) -> list[dict[str, Any]]:
    policy = DEFAULT_CALL_POLICY
    routes: list[dict[str, Any]] = []
    for service, methods in sorted(rules.exposed.items()):
        declared = envoy.method_policies(topology, api, service)
        for method in methods:
            cost = declared[method.path]
            timeout = envoy.route_timeout(cost, topology.edge.timeout)
            routes.append(
                {
                    "match": {"path": method.path},
                    "route": {
                        "cluster": service,
                        **envoy.deadline(timeout),
                        "retry_policy": envoy.retry_policy(policy, method, timeout, cost.cost),
                    },
                    "decorator": {"operation": method.path},
                }
            )
    routes += [
        {
            # Reflection is a bidirectional stream: no whole-body buffering, no timeout.
            "match": {"prefix": "/grpc.reflection."},
            "route": {"cluster": "edge_companion", "timeout": "0s"},
            "typed_per_filter_config": {
                "envoy.filters.http.buffer": {
                    "@type": f"{_FILTERS}.buffer.v3.BufferPerRoute",
                    "disabled": True,
                }
            },
        },
        {
            "match": {"prefix": "/grpc.health.v1.Health/"},
            "route": {"cluster": "edge_companion"},
            "typed_per_filter_config": _UNLIMITED,
        },
        _direct(OPENAPI_PATH, files.openapi, "application/json"),
        _direct(DOCS_PATH, files.docs_page, "text/html; charset=utf-8"),
        _direct(f"{DOCS_PATH}/", files.docs_page, "text/html; charset=utf-8"),
        *(
            _direct(f"{DOCS_PATH}/{name}", files.docs_assets / name, content_type)
            for name, content_type in DOCS_ASSETS.items()
        ),
        {
            # CORS preflights name REST paths, which have no route of their own. The CORS
            # filter answers every preflight itself (it stands aside on direct responses,
            # hence a cluster here, which it never forwards to).
            "match": {
                "prefix": "/",
                "headers": [{"name": ":method", "string_match": {"exact": "OPTIONS"}}],
            },
            "route": {"cluster": "edge_companion"},
        },
        {
            "match": {"path": HEALTH_PATH},
            "direct_response": {"status": 200, "body": {"inline_string": '{"status":"SERVING"}'}},
            "response_headers_to_add": [
                {"header": {"key": "content-type", "value": "application/json"}}
            ],
            "typed_per_filter_config": _UNLIMITED,
        },
    ]
    return routes


def _cors_policy(topology: Topology) -> dict[str, Any]:
    return {
        "@type": f"{_FILTERS}.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in topology.edge.cors_origins],
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": "authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent",
        "expose_headers": "grpc-status, grpc-message, x-request-id",
        "max_age": "600",
        "forward_not_matching_preflights": False,
    }


def edge_config(
    topology: Topology,
    plan: MeshPlan,
    api: Api,
    sds: envoy.SdsFiles,
    files: EdgeFiles,
) -> dict[str, Any]:
    """The edge Envoy's bootstrap."""
    assert plan.edge is not None, "the plan has no edge: nothing is exposed"
    edge_plan = plan.edge
    rules = resolve_rules(topology, api)
    manager = envoy.connection_manager("edge", _routes(topology, api, rules, files), [])
    config = manager["typed_config"]
    config["http_filters"] = [*_http_filters(topology, edge_plan, rules, files), envoy.ROUTER]
    config["local_reply_config"] = _local_reply_config()
    config["route_config"]["max_direct_response_body_size_bytes"] = 8 * 1_048_576
    config["route_config"]["virtual_hosts"][0]["typed_per_filter_config"] = {
        "envoy.filters.http.cors": _cors_policy(topology)
    }
    config["stream_idle_timeout"] = "60s"
    config["request_headers_timeout"] = "10s"
    config["use_remote_address"] = True
    config.update(envoy.tracing(topology, "edge"))
    listeners = [
        {
            "name": "edge",
            "address": envoy.socket_address(edge_plan.port, plan.listen_host),
            "traffic_direction": "INBOUND",
            "filter_chains": [{"filters": [manager]}],
        }
    ]
    clusters = [
        *(
            envoy.dependency_cluster(topology, plan, service, DEFAULT_CALL_POLICY, sds)
            for service in sorted(rules.exposed)
        ),
        envoy.loopback_cluster("edge_companion", edge_plan.companion_port),
        envoy.trace_cluster(topology, plan),
        envoy.upstream("edge_self", [(envoy.LOOPBACK, edge_plan.port)]),
    ]
    if edge_plan.probe_port:
        probe, probe_clusters = envoy.probe_resources(
            plan, edge_plan.probe_port, edge_plan.admin_socket, "edge_companion"
        )
        listeners.append(probe)
        clusters += probe_clusters
    return {
        "node": {"id": "edge", "cluster": "edge"},
        "admin": envoy.admin(edge_plan.admin_socket),
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{openapi}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
"""


def files_in(directory: Path) -> EdgeFiles:
    """Where `write_files` puts the edge's files in `directory`."""
    return EdgeFiles(
        descriptor_set=directory / "descriptors.binpb",
        openapi=directory / "openapi.json",
        docs_page=directory / "docs.html",
        docs_assets=directory / "docs",
    )


def write_files(
    directory: Path, descriptor_set: Path, topology: Topology, rules: EdgeRules, port: int
) -> EdgeFiles:
    """The descriptor set, OpenAPI document, docs page and Swagger UI assets the edge serves
    (the OpenAPI document names the edge on `port`)."""
    files = files_in(directory)
    files.docs_assets.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(descriptor_set, files.descriptor_set)
    document = openapi.build_openapi(
        descriptor_pb2.FileDescriptorSet.FromString(files.descriptor_set.read_bytes()),
        services=rules.exposed.keys(),
        public_methods=rules.public,
        scopes=rules.scopes,
        server_url=f"http://127.0.0.1:{port}",
    )
    openapi.write_openapi(document, files.openapi)
    files.docs_page.write_text(
        _DOCS_PAGE.format(title=document["info"]["title"], openapi=OPENAPI_PATH)
    )
    for name in DOCS_ASSETS:
        shutil.copyfile(Path(swagger_ui_bundle.swagger_ui_path) / name, files.docs_assets / name)
    return files


def companion_arguments(rules: EdgeRules, port: int, descriptor_set: Path) -> list[str]:
    """The edge companion's arguments after the Python interpreter."""
    return [
        "-m", "mesh.control.edge_companion",
        "--port", str(port),
        "--descriptor-set", str(descriptor_set),
        *(arg for service in rules.grpc_services for arg in ("--service", service)),
    ]  # fmt: skip


def jwks_fetched(admin_socket: str) -> bool:
    """Whether the edge (its admin at the unix socket `admin_socket`) has loaded
    identity's JWKS (so tokens can be verified)."""
    try:
        fetched = envoy.admin_stats(admin_socket, "jwks_fetch_success", timeout=1)
    except OSError:
        return False
    return any(count > 0 for count in fetched.values())
