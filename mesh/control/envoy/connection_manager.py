"""The HTTP connection manager every listener runs: one virtual host, its HTTP filters,
then the router."""

from __future__ import annotations

from typing import Any

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


def connection_manager(
    stat_prefix: str, routes: list[dict[str, Any]], filters: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    """The network filter of a listener named `stat_prefix`: HTTP/1.1 or HTTP/2, `routes`
    for every host, `filters` before the router, and any other settings in `extra`."""
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
