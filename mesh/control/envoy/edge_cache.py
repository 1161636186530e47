"""The edge's response cache: public reads (mesh.yaml's `edge.cache`) answered from the
edge's memory for their max-age, without reaching their service.

Envoy's cache filter (`cache_v2`, its simple in-memory cache) sits on the front listeners
after the filters every request meets (the client's claims removed, CORS, the total rate
limit) and before those that serve it (`edge_filters.served_filters`). For a request it
may answer, Envoy skips every filter after it, even on a miss, so it fetches what it
stores through a listener of its own (`fill_listener`, an internal listener: no port)
that runs those same served filters and routes (transcoding, tokens, rate limits, RBAC):

    client -> front: ... total rate limit -> 304 check -> cache --hit--> answer
                                                          |miss
                                                          v
              edge_cache_fill (internal): buffer -> transcoder -> ... -> router -> service

What it may answer (`_uncacheable`, a matcher that skips the filter otherwise): a GET of
the URL of a cached read (the contracts' GET bindings), without a credential (a token
or an API key: such an answer is the holder's, never shared), without a pinned version
(`x-shop-version`, the cookie `shop-version`: a pinned answer is not everyone's), and
without `Cache-Control: no-store`. Any other request, and a native gRPC call (a POST),
meets the front's own chain as if there were no cache.

Only the fill listener's routes of cached reads ask the service for a cacheable answer
(`mesh.runtime.cacheable`'s header, which the edge removes from clients' requests): a
successful answer comes back with `cache-control: public, max-age=N` and a weak `etag`
hashed from the answer; an error has neither, so no error is kept. Envoy's cache does not
answer `If-None-Match` itself, so a Lua filter before it (`conditional_reads`) keeps the
client's tags aside and turns a 200 whose `etag` matches one into 304 Not Modified.

A change is seen at the edge within max-age at most; there is no purge. The cache lives
in each edge process's memory (lost at a restart) and has no size limit: each distinct
URL, query string included, is an entry, and Envoy was not seen to drop expired ones. Only
successful answers are kept (an unknown id's 404 is not), but a client that varies a
query parameter (a list's `filter`, `pageSize`) adds entries; `cache_sessions_entries`
in the edge's statistics counts them, beside the hits and misses (`cache.event.*`,
`mesh.control.envoy.stats`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mesh.control.envoy.clusters import HTTP2_UPSTREAM
from mesh.control.envoy.connection_manager import connection_manager
from mesh.control.envoy.edge_replies import local_reply_config
from mesh.control.envoy.edge_rules import EdgeRules
from mesh.control.envoy.matchers import not_, request_header, skipped_when
from mesh.control.routing import VERSION_COOKIE, VERSION_HEADER
from mesh.runtime.cacheable import CACHE_HEADER

#: The internal listener the cache fetches through, and the cluster that reaches it.
FILL_LISTENER = "edge_cache_fill"
CACHE_FILTER = "envoy.filters.http.cache_v2"
#: The front filters' names: the 304 check, and the cache (each inside its matcher).
CONDITIONAL, CACHE = "edge_conditional_reads", "edge_response_cache"
#: Where the 304 check keeps a client's `If-None-Match` (dynamic metadata).
_KEPT = "shop.edge.cache"
_TYPES = "type.googleapis.com/envoy.extensions"
#: One segment of a URL template's wildcard (`*`), and any number of them (`**`).
_SEGMENT, _SEGMENTS = "[^/?]+", "[^?]*"
_VARIABLE = re.compile(r"\{[^}=]*(?:=([^}]*))?\}")

#: Before the cache: a client's `If-None-Match` kept aside (with it, the cache would pass
#: the request by), then held against the `etag` of the answer the cache gives.
CONDITIONAL_LUA = f"""\
function envoy_on_request(handle)
  local tags = handle:headers():get("if-none-match")
  if tags ~= nil then
    handle:headers():remove("if-none-match")
    handle:streamInfo():dynamicMetadata():set("{_KEPT}", "if_none_match", tags)
  end
end

local function opaque(tag)
  return (string.gsub(tag, "^W/", ""))
end

function envoy_on_response(handle)
  local kept = handle:streamInfo():dynamicMetadata():get("{_KEPT}")
  local headers = handle:headers()
  local etag = headers:get("etag")
  if kept == nil or etag == nil or headers:get(":status") ~= "200" then
    return
  end
  for tag in string.gmatch(kept["if_none_match"], "[^,%s]+") do
    if tag == "*" or opaque(tag) == opaque(etag) then
      headers:replace(":status", "304")
      headers:remove("content-length")
      headers:remove("content-type")
      handle:body():setBytes("")
      return
    end
  end
end
"""


def path_regex(template: str) -> str:
    """A regular expression (RE2) for the request paths of a URL template of the
    contracts (`/v1/products/{id}`, `/v2/{name=products/*}`), with any query string."""
    pieces = []
    last = 0
    for variable in _VARIABLE.finditer(template):
        pieces += [_segments(template[last : variable.start()]), _segments(variable[1] or "*")]
        last = variable.end()
    pieces.append(_segments(template[last:]))
    return "".join(pieces) + r"(?:\?.*)?"


def _segments(pattern: str) -> str:
    """A template's literal text and wildcards (`*`, `**`), segment by segment."""
    wildcards = {"*": _SEGMENT, "**": _SEGMENTS}
    return "/".join(wildcards.get(part, re.escape(part)) for part in pattern.split("/"))


def _uncacheable(rules: EdgeRules, credentials: Sequence[str]) -> list[dict[str, Any]]:
    """What makes a request one the cache must neither answer nor keep the answer of."""
    paths = "|".join(
        f"(?:{path_regex(template)})" for m in rules.cached_reads for template in m.http_gets
    )
    return [
        not_(request_header(":method", "GET")),
        not_(request_header(":path", paths)),
        *(request_header(name, ".*") for name in credentials),
        request_header(VERSION_HEADER, ".*"),
        request_header("cookie", f"(?:.*;)? *{re.escape(VERSION_COOKIE)}=.*"),
        request_header("cache-control", "(?i).*no-store.*"),
    ]


def conditional_reads() -> dict[str, Any]:
    """The Lua filter of `CONDITIONAL_LUA`."""
    lua = {
        "@type": f"{_TYPES}.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": CONDITIONAL_LUA},
    }
    return {"name": "envoy.filters.http.lua", "typed_config": lua}


def response_cache() -> dict[str, Any]:
    """Envoy's in-memory HTTP cache, filled through `FILL_LISTENER`."""
    cache = {
        "@type": f"{_TYPES}.filters.http.cache_v2.v3.CacheV2Config",
        "typed_config": {
            "@type": f"{_TYPES}.http.cache_v2.simple_http_cache.v3.SimpleHttpCacheV2Config"
        },
        "override_upstream_cluster": FILL_LISTENER,
    }
    return {"name": CACHE_FILTER, "typed_config": cache}


def front_filters(rules: EdgeRules, credentials: Sequence[str]) -> list[dict[str, Any]]:
    """The 304 check and the cache, for a front listener's chain (none without
    `edge.cache`); a request with any of the headers `credentials` meets neither."""
    if not rules.cached:
        return []
    uncacheable = _uncacheable(rules, credentials)
    no_tags = not_(request_header("if-none-match", ".*"))
    return [
        skipped_when([no_tags, *uncacheable], CONDITIONAL, conditional_reads()),
        skipped_when(uncacheable, CACHE, response_cache()),
    ]


def fill_routes(routes: list[dict[str, Any]], cached: Mapping[str, float]) -> list[dict[str, Any]]:
    """`routes`, those of a cached read asking its service for a cacheable answer
    (`mesh.runtime.cacheable`) with the read's max-age."""
    filled = []
    for route in routes:
        max_age = cached.get(route["match"].get("path", ""))
        if max_age is not None:
            route = copy.deepcopy(route)
            asked = {"key": CACHE_HEADER, "value": f"max-age={int(max_age)}"}
            route["request_headers_to_add"] = [
                {"header": asked, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            ]
        filled.append(route)
    return filled


def fill_listener(
    routes: list[dict[str, Any]],
    filters: list[dict[str, Any]],
    max_direct_response_bytes: int,
    **settings: Any,
) -> dict[str, Any]:
    """The internal listener the cache fetches through: `routes` (answering pages of up
    to `max_direct_response_bytes` as the front does) and `filters` (the front's own, past
    the cache), with the connection manager's other `settings`. It logs nothing (the front
    logs the client's request). Its rate limits by address count the client's: the address
    the front appended to `x-forwarded-for`, the last but one, since the cache's own
    request appends the edge host's address after it."""
    manager = connection_manager(
        FILL_LISTENER,
        routes,
        filters,
        local_reply_config=local_reply_config(),
        use_remote_address=False,
        xff_num_trusted_hops=1,
        **settings,
    )
    route_config = manager["typed_config"]["route_config"]
    route_config["max_direct_response_body_size_bytes"] = max_direct_response_bytes
    return {
        "name": FILL_LISTENER,
        "internal_listener": {},
        "filter_chains": [{"filters": [manager]}],
    }


def fill_cluster() -> dict[str, Any]:
    """How the cache reaches `FILL_LISTENER`: HTTP/2 to an internal address, no socket."""
    sockets = f"{_TYPES}.transport_sockets"
    raw = {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {"@type": f"{sockets}.raw_buffer.v3.RawBuffer"},
    }
    internal = {"server_listener_name": FILL_LISTENER}
    endpoint = {"endpoint": {"address": {"envoy_internal_address": internal}}}
    return {
        "name": FILL_LISTENER,
        "load_assignment": {
            "cluster_name": FILL_LISTENER,
            "endpoints": [{"lb_endpoints": [endpoint]}],
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.internal_upstream",
            "typed_config": {
                "@type": f"{sockets}.internal_upstream.v3.InternalUpstreamTransport",
                "transport_socket": raw,
            },
        },
        "typed_extension_protocol_options": HTTP2_UPSTREAM,
    }


#: The bootstrap extension that lets an Envoy have internal listeners.
BOOTSTRAP_EXTENSIONS = [
    {
        "name": "envoy.bootstrap.internal_listener",
        "typed_config": {"@type": f"{_TYPES}.bootstrap.internal_listener.v3.InternalListener"},
    }
]
