"""The edge's HTTP filters, one function each, in the order a request meets them
(`http_filters`), and the per-route and per-host settings that go with them.

Transcoding comes before authentication and authorization, so from there on a REST call
and a native gRPC call look alike (a gRPC method path) and one set of rules covers both.
"""

from __future__ import annotations

from typing import Any

from mesh.control.envoy import edge_access, filters
from mesh.control.envoy.edge_files import (
    DOCS_PATH,
    HEALTH_PATH,
    JWKS_PATH,
    OPENAPI_PATH,
    EdgeFiles,
)
from mesh.control.envoy.edge_replies import CLIENT_CONTENT_TYPE_KEY, CLIENT_METADATA_NAMESPACE
from mesh.control.envoy.edge_rules import HEALTH_PREFIX, REFLECTION_PREFIX, EdgeRules
from mesh.control.topology import Bucket, RateLimit, Topology
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.json_names import CLIENT_CERT_HEADER, REST_METHOD_HEADER

_FILTERS = "type.googleapis.com/envoy.extensions.filters.http"
_JWT_PROVIDER = "identity"
_JWT_PAYLOAD = "jwt_payload"
_JWT_FILTER = "envoy.filters.http.jwt_authn"
BUFFER_FILTER = "envoy.filters.http.buffer"
CORS_FILTER = "envoy.filters.http.cors"
#: Where the transcoder keeps the HTTP method of the REST call it turned into gRPC.
_ORIGINAL_METHOD = "x-envoy-original-method"

#: The edge's two rate limit filters: the total, before any other work is spent on a
#: request; the clients' buckets after the token is verified, which names the client.
TOTAL_LIMIT, CLIENT_LIMITS = "edge_total_rate_limit", "edge_client_rate_limits"
#: Distinct clients (token subjects, addresses) whose buckets are kept, least recently
#: seen forgotten first (a forgotten client starts again with a full bucket).
MAX_CLIENTS = 10_000

#: A route's settings that exempt it from both rate limits (health checks answer
#: whatever the clients do).
UNLIMITED = {
    name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    for name in (TOTAL_LIMIT, CLIENT_LIMITS)
}

_NOT_EMPTY = {"string_match": {"safe_regex": {"regex": ".+"}}}


def http_filters(
    topology: Topology, rules: EdgeRules, files: EdgeFiles, port: int
) -> list[dict[str, Any]]:
    """Every filter before the router, in order, for the edge on `port` serving `files`."""
    edge = topology.edge
    return [
        client_content_type_noted(),
        caller_claims_removed(),
        cors(),
        rate_limit(TOTAL_LIMIT, edge.rate_limit.total),
        buffer(edge.max_request_bytes),
        transcoder(str(files.descriptor_set), rules.grpc_services),
        edge_access.grpc_status_noted(),
        rest_call_marked(),
        jwt_authn(topology, rules, f"http://127.0.0.1:{port}{JWKS_PATH}"),
        client_limits(edge.rate_limit),
        authorization(rules),
        filters.grpc_stats(),
    ]


def client_content_type_noted() -> dict[str, Any]:
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


def caller_claims_removed() -> dict[str, Any]:
    """No client names the caller itself: only a verified token sets `x-shop-subject`,
    only a sidecar `x-forwarded-client-cert`; nor says how it called: only the transcoder
    sets `x-envoy-original-method`, and from it the edge `x-shop-rest-method`."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": f"{_FILTERS}.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {"remove": SUBJECT_METADATA_KEY},
                    {"remove": CLIENT_CERT_HEADER},
                    {"remove": _ORIGINAL_METHOD},
                    {"remove": REST_METHOD_HEADER},
                ]
            },
        },
    }


def rest_call_marked() -> dict[str, Any]:
    """A call the transcoder made from a REST call carries the client's HTTP method in
    `x-shop-rest-method`, so its service names fields in errors by their JSON names, as
    the client sent them; a native gRPC call has no transcoder's method, so no header (an
    empty value adds none)."""
    return {
        "name": "rest_call_marked",
        "typed_config": {
            "@type": f"{_FILTERS}.header_mutation.v3.HeaderMutation",
            "mutations": {
                "request_mutations": [
                    {
                        "append": {
                            "header": {
                                "key": REST_METHOD_HEADER,
                                "value": f"%REQ({_ORIGINAL_METHOD})%",
                            },
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                        }
                    }
                ]
            },
        },
    }


def cors() -> dict[str, Any]:
    """CORS, with its policy on the virtual host (`cors_policy`)."""
    return {"name": CORS_FILTER, "typed_config": {"@type": f"{_FILTERS}.cors.v3.Cors"}}


def cors_policy(topology: Topology) -> dict[str, Any]:
    """The origins mesh.yaml allows, and what a browser may send and read."""
    return {
        "@type": f"{_FILTERS}.cors.v3.CorsPolicy",
        "allow_origin_string_match": [{"exact": o} for o in topology.edge.cors_origins],
        "allow_methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": "authorization, content-type, grpc-timeout, x-grpc-web, x-user-agent",
        "expose_headers": "grpc-status, grpc-message, x-request-id",
        "max_age": "600",
        "forward_not_matching_preflights": False,
    }


def buffer(max_request_bytes: int) -> dict[str, Any]:
    """The whole request body, no larger than `max_request_bytes` (413)."""
    return {
        "name": BUFFER_FILTER,
        "typed_config": {
            "@type": f"{_FILTERS}.buffer.v3.Buffer",
            "max_request_bytes": max_request_bytes,
        },
    }


def buffer_disabled() -> dict[str, Any]:
    """A route's settings that let its body stream (a bidirectional stream)."""
    return {BUFFER_FILTER: {"@type": f"{_FILTERS}.buffer.v3.BufferPerRoute", "disabled": True}}


def transcoder(descriptor_set: str, services: list[str]) -> dict[str, Any]:
    """REST<->gRPC for `services` (their `google.api.http` rules): unknown query parameters
    refused, a `+` in a query parameter read as a space (as HTML forms, browsers and most
    HTTP clients write it: `filter=category+%3D+%22books%22`), a gRPC error turned into its
    HTTP status with a `google.rpc.Status` body."""
    return {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": f"{_FILTERS}.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": descriptor_set,
            "services": services,
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": False,
                "always_print_enums_as_ints": False,
                "preserve_proto_field_names": False,
            },
            "convert_grpc_status": True,
            "query_param_unescape_plus": True,
            "request_validation_options": {"reject_unknown_query_parameters": True},
        },
    }


def _jwks(uri: str) -> dict[str, Any]:
    """Identity's JWKS, which the edge serves itself at `uri`."""
    return {
        "http_uri": {"uri": uri, "cluster": "edge_self", "timeout": "5s"},
        "cache_duration": "300s",
        # The listener must not wait for a JWKS it serves itself.
        "async_fetch": {"fast_listener": True},
        # The edge fetches from itself: retry briskly while it starts.
        "retry_policy": {
            "num_retries": 20,
            "retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"},
        },
    }


def _provider(topology: Topology, jwks_uri: str) -> dict[str, Any]:
    """RS256 tokens from identity; the subject passed on as `x-shop-subject`, the claims
    kept for authorization."""
    auth = topology.edge.auth
    return {
        "issuer": auth.issuer,
        "audiences": [auth.audience],
        "remote_jwks": _jwks(jwks_uri),
        "forward": False,
        "claim_to_headers": [{"header_name": SUBJECT_METADATA_KEY, "claim_name": "sub"}],
        "payload_in_metadata": _JWT_PAYLOAD,
    }


def _token_optional() -> dict[str, Any]:
    """A token is checked when present, but none is needed."""
    return {
        "requires_any": {"requirements": [{"provider_name": _JWT_PROVIDER}, {"allow_missing": {}}]}
    }


def jwt_authn(topology: Topology, rules: EdgeRules, jwks_uri: str) -> dict[str, Any]:
    """Public methods, the edge's own pages, reflection and health take a token but need
    none; every other method the edge routes needs a valid one. Paths it does not route
    match no rule here and end in a 404, with or without a token."""
    paths = [*sorted(rules.public), OPENAPI_PATH, HEALTH_PATH]
    prefixes = [REFLECTION_PREFIX, HEALTH_PREFIX, DOCS_PATH]
    return {
        "name": _JWT_FILTER,
        "typed_config": {
            "@type": f"{_FILTERS}.jwt_authn.v3.JwtAuthentication",
            "providers": {_JWT_PROVIDER: _provider(topology, jwks_uri)},
            "rules": [
                *({"match": {"path": p}, "requires": _token_optional()} for p in paths),
                *({"match": {"prefix": p}, "requires": _token_optional()} for p in prefixes),
                *(
                    {"match": {"path": p}, "requires": {"provider_name": _JWT_PROVIDER}}
                    for p in rules.secured
                ),
            ],
        },
    }


def _bucket(bucket: Bucket) -> dict[str, Any]:
    return {
        "max_tokens": bucket.burst,
        "tokens_per_fill": bucket.requests_per_second,
        "fill_interval": "1s",
    }


def _always(key: str) -> dict[str, Any]:
    return {"runtime_key": key, "default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def rate_limit(name: str, total: Bucket, **extra: Any) -> dict[str, Any]:
    """A local rate limit filter whose own bucket is `total` (every request takes from it)."""
    return {
        "name": name,
        "typed_config": {
            "@type": f"{_FILTERS}.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": name,
            "token_bucket": _bucket(total),
            "filter_enabled": _always(f"{name}_enabled"),
            "filter_enforced": _always(f"{name}_enforced"),
            "rate_limited_as_resource_exhausted": True,
            **extra,
        },
    }


def client_limits(limits: RateLimit) -> dict[str, Any]:
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
    return rate_limit(
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


def _claim(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """A principal: the verified token's claim `name` matches `value`. The claims are in
    the stream's dynamic metadata, where `jwt_authn` put them (`payload_in_metadata`)."""
    return {
        "sourced_metadata": {
            "metadata_matcher": {
                "filter": _JWT_FILTER,
                "path": [{"key": _JWT_PAYLOAD}, {"key": name}],
                "value": value,
            },
            "metadata_source": "DYNAMIC",
        }
    }


def _scope_regex(scope: str) -> str:
    return f"(^|.* ){scope.replace('.', '[.]')}( .*|$)"


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
    no_subject = {"not_id": _claim("sub", _NOT_EMPTY)}
    return {
        "permissions": [{"any": True}],
        "principals": [{"and_ids": {"ids": [_claim("iss", {"present_match": True}), no_subject]}}],
    }


def authorization(rules: EdgeRules) -> dict[str, Any]:
    """RBAC, denying: a token without a subject, whatever the method; then each scoped
    method to a token without its scope."""
    scoped = {
        f"needs-{scope}-for-{path}": _needs_scope(path, scope)
        for path, scope in sorted(rules.scopes.items())
    }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": f"{_FILTERS}.rbac.v3.RBAC",
            "rules": {
                "action": "DENY",
                "policies": {"token-without-subject": _token_without_subject(), **scoped},
            },
        },
    }
