"""The edge's HTTP filters, one function each, in the order a request meets them
(`http_filters`), and the per-route and per-host settings that go with them.

Transcoding comes before authentication and authorization, so from there on a REST call
and a native gRPC call look alike (a gRPC method path) and one set of rules covers both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from mesh.control.envoy import edge_access, edge_cache, filters, matchers
from mesh.control.envoy.edge_files import (
    DOCS_PATH,
    HEALTH_PATH,
    JWKS_PATH,
    OPENAPI_PATH,
    EdgeFiles,
)
from mesh.control.envoy.edge_replies import CLIENT_CONTENT_TYPE_KEY, CLIENT_METADATA_NAMESPACE
from mesh.control.envoy.edge_rules import HEALTH_PREFIX, REFLECTION_PREFIX, EdgeRules
from mesh.control.topology import API_KEY_AUDIENCE, ApiKeys, Bucket, Plan, RateLimit, Topology
from mesh.runtime.cacheable import CACHE_HEADER
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.json_names import CLIENT_CERT_HEADER, REST_METHOD_HEADER

_FILTERS = "type.googleapis.com/envoy.extensions.filters.http"
_JWT_PROVIDER = "identity"
_API_KEY_PROVIDER = "api_keys"
#: Where a machine consumer sends its API key.
API_KEY_HEADER = "x-api-key"
_JWT_PAYLOAD = "jwt_payload"
_JWT_FILTER = "envoy.filters.http.jwt_authn"
#: The filter that refuses revoked API keys, from the deny list's file in its directory.
REVOCATIONS = "api_key_revocations"
DENY_LIST_FILE = "revocations.json"
BUFFER_FILTER = "envoy.filters.http.buffer"
CORS_FILTER = "envoy.filters.http.cors"
#: Where the transcoder keeps the HTTP method of the REST call it turned into gRPC.
_ORIGINAL_METHOD = "x-envoy-original-method"

#: The edge's two rate limit filters: the total, before any other work is spent on a
#: request; the clients' buckets after the token is verified, which names the client.
TOTAL_LIMIT, CLIENT_LIMITS = "edge_total_rate_limit", "edge_client_rate_limits"
#: The day allowances of API keys' consumers, after the per-second buckets.
API_KEY_QUOTAS = "edge_api_key_quotas"
#: The Lua filter that says when a refused client may try again.
THROTTLED_REPLIES = "throttled_replies"
#: Marks a refusal for an API key's day allowance, for `throttled_replies` (never sent).
QUOTA_HEADER = "x-shop-quota"
#: The plan of a credential without one (an access token), in the rate limits' descriptors.
_NO_PLAN = "-"
#: Distinct clients (token subjects, addresses) whose buckets are kept, least recently
#: seen forgotten first (a forgotten client starts again with a full bucket).
MAX_CLIENTS = 10_000

#: A route's settings that exempt it from both rate limits (health checks answer
#: whatever the clients do).
UNLIMITED = {
    name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}
    for name in (TOTAL_LIMIT, CLIENT_LIMITS, API_KEY_QUOTAS)
}

_NOT_EMPTY = {"string_match": {"safe_regex": {"regex": ".+"}}}


def http_filters(
    topology: Topology, rules: EdgeRules, files: EdgeFiles, port: int, deny_list: Path | None
) -> list[dict[str, Any]]:
    """Every filter before the router, in order, for the edge on `port` serving `files`,
    API keys checked against the deny list in the file `deny_list` (None: no API keys):
    what every request meets, then with `edge.cache` the response cache (`edge_cache`),
    then what serves a request the cache does not answer (`served_filters`)."""
    edge = topology.edge
    keys = edge.api_keys if deny_list is not None else ApiKeys()
    return [
        client_content_type_noted(),
        throttled_replies(keys),
        caller_claims_removed(),
        cors(),
        rate_limit(TOTAL_LIMIT, edge.rate_limit.total),
        *edge_cache.front_filters(rules, credentials=("authorization", API_KEY_HEADER)),
        *served_filters(topology, rules, files, port, deny_list),
    ]


def served_filters(
    topology: Topology,
    rules: EdgeRules,
    files: EdgeFiles,
    port: int,
    deny_list: Path | None,
    *,
    shared: bool = False,
) -> list[dict[str, Any]]:
    """The filters that serve a request the edge's cache does not answer, in order: on the
    front listeners past the cache, and on the listener the cache fetches through
    (`edge_cache.fill_listener`), so a request is served alike on either; there (`shared`)
    the answer may be kept for every client, so it tells no client's rate limits."""
    edge = topology.edge
    keys = edge.api_keys if deny_list is not None else ApiKeys()
    return [
        buffer(edge.max_request_bytes),
        transcoder(str(files.descriptor_set), rules.grpc_services),
        edge_access.grpc_status_noted(),
        rest_call_marked(),
        *([single_credential()] if keys.plans else []),
        jwt_authn(topology, rules, f"http://127.0.0.1:{port}{JWKS_PATH}"),
        *([revocations(deny_list)] if deny_list is not None and keys.plans else []),
        client_limits(edge.rate_limit, keys, headers=not shared),
        *api_key_quotas(keys),
        authorization(rules, keys),
        filters.grpc_stats(),
    ]


def _lua_table(api_keys: ApiKeys) -> str:
    """The day allowance of each plan and how long one more call takes to refill, in Lua."""
    entries = (
        f'["{name}"] = {{limit = "{plan.requests_per_day}", '
        f'reset = "{plan.seconds_per_day_token}"}}'
        for name, plan in sorted(api_keys.plans.items())
    )
    return "{" + ", ".join(entries) + "}"


_THROTTLED = """
local quotas = %(quotas)s
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get("%(quota)s") ~= nil then
    headers:remove("%(quota)s")
    local credential = handle:streamInfo():dynamicMetadata():get("%(jwt)s")
    local claims = credential and credential["%(payload)s"]
    local quota = claims and quotas[claims["plan"]]
    if quota ~= nil then
      headers:replace("x-ratelimit-limit", quota.limit)
      headers:replace("x-ratelimit-remaining", "0")
      headers:replace("x-ratelimit-reset", quota.reset)
    end
  end
  if headers:get("retry-after") == nil then
    headers:add("retry-after", headers:get("x-ratelimit-reset") or "1")
  end
end
"""


def throttled_replies(api_keys: ApiKeys) -> dict[str, Any]:
    """Every 429 says when to try again (`retry-after`): when the bucket that refused it
    has a token again (its `x-ratelimit-reset`), else in a second. A refusal for an API
    key's day allowance (marked `QUOTA_HEADER`) tells that allowance, not the second's.
    First in the chain, so it sees every other filter's reply; skipped for any other
    status, so an answer pays no Lua."""
    code = _THROTTLED % {
        "quotas": _lua_table(api_keys),
        "quota": QUOTA_HEADER,
        "jwt": _JWT_FILTER,
        "payload": _JWT_PAYLOAD,
    }
    lua = {"@type": f"{_FILTERS}.lua.v3.Lua", "default_source_code": {"inline_string": code}}
    not_throttled = matchers.not_(matchers.response_header(":status", "429"))
    return matchers.skipped_when(
        [not_throttled], THROTTLED_REPLIES, {"name": "envoy.filters.http.lua", "typed_config": lua}
    )


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
    sets `x-envoy-original-method`, and from it the edge `x-shop-rest-method`; nor asks
    a service for an answer the edge may cache (`x-shop-cache`: only the edge's cache does)."""
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
                    {"remove": CACHE_HEADER},
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
        "allow_headers": (
            f"authorization, {API_KEY_HEADER}, content-type, grpc-timeout, x-grpc-web, x-user-agent"
        ),
        "expose_headers": (
            "grpc-status, grpc-message, x-request-id, retry-after, "
            "x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset"
        ),
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


def _api_key_provider(topology: Topology, jwks_uri: str) -> dict[str, Any]:
    """API keys (`x-api-key`): ES256 tokens identity signs for its keys' audience, checked
    against the same JWKS; the claims kept where a token's are, so the same rules apply."""
    return {
        **_provider(topology, jwks_uri),
        "audiences": [API_KEY_AUDIENCE],
        "from_headers": [{"name": API_KEY_HEADER}],
    }


def _providers(topology: Topology, jwks_uri: str) -> dict[str, Any]:
    """Tokens, and API keys when mesh.yaml has plans for them."""
    providers = {_JWT_PROVIDER: _provider(topology, jwks_uri)}
    if topology.edge.api_keys.plans:
        providers[_API_KEY_PROVIDER] = _api_key_provider(topology, jwks_uri)
    return providers


def _credential(providers: dict[str, Any], *, needed: bool) -> dict[str, Any]:
    """A token or an API key, whichever the request has, checked; none at all only when
    not `needed`."""
    requirements: list[dict[str, Any]] = [{"provider_name": name} for name in providers]
    if not needed:
        requirements.append({"allow_missing": {}})
    if len(requirements) == 1:
        return requirements[0]
    return {"requires_any": {"requirements": requirements}}


def jwt_authn(topology: Topology, rules: EdgeRules, jwks_uri: str) -> dict[str, Any]:
    """Public methods, the edge's own pages, reflection and health take a token (or an API
    key) but need none; every other method the edge routes needs a valid one. Paths it does
    not route match no rule here and end in a 404, with or without a credential."""
    paths = [*sorted(rules.public), OPENAPI_PATH, HEALTH_PATH]
    prefixes = [REFLECTION_PREFIX, HEALTH_PREFIX, DOCS_PATH]
    providers = _providers(topology, jwks_uri)
    optional = _credential(providers, needed=False)
    needed = _credential(providers, needed=True)
    return {
        "name": _JWT_FILTER,
        "typed_config": {
            "@type": f"{_FILTERS}.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [
                *({"match": {"path": p}, "requires": optional} for p in paths),
                *({"match": {"prefix": p}, "requires": optional} for p in prefixes),
                *({"match": {"path": p}, "requires": needed} for p in rules.secured),
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


def _claim_descriptor(claim: str, key: str, default: str = "") -> dict[str, Any]:
    """A descriptor entry `key` from the verified credential's claim `claim` (none when the
    request has no such claim, unless there is a `default`)."""
    path = [{"key": _JWT_PAYLOAD}, {"key": claim}]
    action = {"descriptor_key": key, "metadata_key": {"key": _JWT_FILTER, "path": path}}
    if default:
        action["default_value"] = default
    return {"metadata": {**action, "source": "DYNAMIC"}}


def _subject_descriptor(key: str) -> dict[str, Any]:
    return {"request_headers": {"header_name": SUBJECT_METADATA_KEY, "descriptor_key": key}}


def _plan_buckets(api_keys: ApiKeys, bucket: Callable[[Plan], dict[str, Any]]) -> list[Any]:
    """A bucket per API key's consumer, sized by its plan."""
    return [
        {
            "entries": [{"key": "plan", "value": name}, {"key": "subject"}],
            "token_bucket": bucket(plan),
        }
        for name, plan in sorted(api_keys.plans.items())
    ]


def client_limits(limits: RateLimit, api_keys: ApiKeys, *, headers: bool) -> dict[str, Any]:
    """A bucket per credential's subject (`x-shop-subject`, which only a verified token or
    key sets): a token's `per_client`, an API key's its plan's per second; and for calls
    without either one per client address plus one they all share. With `headers`, each
    answer tells its bucket (`x-ratelimit-*`)."""
    no_subject = {
        "header_value_match": {
            "descriptor_key": "anonymous",
            "descriptor_value": "yes",
            "expect_match": False,
            "headers": [{"name": SUBJECT_METADATA_KEY, "present_match": True}],
        }
    }
    per_second = _plan_buckets(
        api_keys, lambda plan: _bucket(Bucket(plan.requests_per_second, plan.burst))
    )
    return rate_limit(
        CLIENT_LIMITS,
        # Its own bucket never empties: the clients' buckets below decide.
        Bucket(1_000_000, 10_000_000),
        always_consume_default_token_bucket=False,
        max_dynamic_descriptors=MAX_CLIENTS,
        enable_x_ratelimit_headers="DRAFT_VERSION_03" if headers else "OFF",
        rate_limits=[
            {"actions": [_claim_descriptor("plan", "plan", _NO_PLAN),
                         _subject_descriptor("subject")]},
            {"actions": [no_subject, {"remote_address": {}}]},
            {"actions": [no_subject]},
        ],
        descriptors=[
            {"entries": [{"key": "plan", "value": _NO_PLAN}, {"key": "subject"}],
             "token_bucket": _bucket(limits.per_client)},
            *per_second,
            {"entries": [{"key": "anonymous", "value": "yes"}, {"key": "remote_address"}],
             "token_bucket": _bucket(limits.per_client)},
            {"entries": [{"key": "anonymous", "value": "yes"}],
             "token_bucket": _bucket(limits.anonymous)},
        ],
    )  # fmt: skip


def _day_bucket(plan: Plan) -> dict[str, Any]:
    """A day's allowance, refilled a token at a time as the day goes."""
    return {
        "max_tokens": plan.requests_per_day,
        "tokens_per_fill": plan.requests_per_day,
        "fill_interval": "86400s",
    }


def api_key_quotas(api_keys: ApiKeys) -> list[dict[str, Any]]:
    """Each API key's consumer's day allowance, by its plan: a filter after the per-second
    buckets, so a call those refuse takes nothing from the day. Its refusal is marked
    (`QUOTA_HEADER`) for `throttled_replies`, which says when the next call is allowed."""
    if not api_keys.plans:
        return []
    return [
        rate_limit(
            API_KEY_QUOTAS,
            Bucket(1_000_000, 10_000_000),
            always_consume_default_token_bucket=False,
            max_dynamic_descriptors=MAX_CLIENTS,
            response_headers_to_add=[
                {"header": {"key": QUOTA_HEADER, "value": "day"},
                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ],
            rate_limits=[
                {"actions": [_claim_descriptor("plan", "plan"), _subject_descriptor("subject")]}
            ],
            descriptors=_plan_buckets(api_keys, _day_bucket),
        )
    ]  # fmt: skip


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


def _rbac(name: str, action: str, policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "typed_config": {
            "@type": f"{_FILTERS}.rbac.v3.RBAC",
            "rules": {"action": action, "policies": policies},
        },
    }


def single_credential() -> dict[str, Any]:
    """A request with both a token and an API key is refused: it would act as two callers."""
    both = [
        {"header": {"name": name, "present_match": True}}
        for name in ("authorization", API_KEY_HEADER)
    ]
    policy = {"permissions": [{"any": True}], "principals": [{"and_ids": {"ids": both}}]}
    return _rbac("single_credential", "DENY", {"token-and-api-key": policy})


def revoked_keys_rbac(revoked: Collection[str] | None) -> dict[str, Any]:
    """The deny list as an RBAC filter's config: every API key whose id (`jti`) is in
    `revoked`; with None (the list not read yet), every API key."""
    if revoked is None:
        principals = [_claim("plan", {"present_match": True})]
    else:
        principals = [_claim("jti", {"string_match": {"exact": key}}) for key in sorted(revoked)]
    policies = {"revoked-api-keys": {"permissions": [{"any": True}], "principals": principals}}
    return {
        "@type": f"{_FILTERS}.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": policies if principals else {}},
    }


def revocations(deny_list: Path) -> dict[str, Any]:
    """The API keys identity revoked, refused: an RBAC filter the edge reads from the file
    `DENY_LIST_FILE` in the directory `deny_list`, again each time a new one is renamed
    into it (the edge companion keeps it current, `mesh.control.deny_list`)."""
    return {
        "name": REVOCATIONS,
        "config_discovery": {
            "config_source": {
                "path_config_source": {
                    "path": str(deny_list / DENY_LIST_FILE),
                    "watched_directory": {"path": str(deny_list)},
                },
                "resource_api_version": "V3",
            },
            "type_urls": [f"{_FILTERS}.rbac.v3.RBAC"],
        },
    }


def _plan_unknown(api_keys: ApiKeys) -> dict[str, Any]:
    """An API key whose plan mesh.yaml does not have: it would be held to no quota."""
    known = "|".join(re.escape(name) for name in sorted(api_keys.plans))
    regex = {"string_match": {"safe_regex": {"regex": f"^({known})$"}}}
    has_plan = _claim("plan", {"present_match": True})
    return {
        "permissions": [{"any": True}],
        "principals": [{"and_ids": {"ids": [has_plan, {"not_id": _claim("plan", regex)}]}}],
    }


def authorization(rules: EdgeRules, api_keys: ApiKeys) -> dict[str, Any]:
    """RBAC, denying: a credential without a subject, whatever the method; an API key of a
    plan mesh.yaml does not have; then each scoped method to a credential without its scope
    (a token's and an API key's claims alike)."""
    policies = {"token-without-subject": _token_without_subject()}
    if api_keys.plans:
        policies["api-key-of-unknown-plan"] = _plan_unknown(api_keys)
    policies.update(
        (f"needs-{scope}-for-{path}", _needs_scope(path, scope))
        for path, scope in sorted(rules.scopes.items())
    )
    return _rbac("envoy.filters.http.rbac", "DENY", policies)
