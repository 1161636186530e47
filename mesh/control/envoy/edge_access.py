"""The edge's access log: one JSON line per client request, in the edge Envoy's log, and
per-consumer counters in its statistics.

A line carries the fields the services' own log lines use (`time`, `level`, `logger`,
`message`, `trace_id`), so `meshctl logs edge` shows it, filters it by trace or by
consumer, and it reads like theirs, and what a gateway's access log is asked for: the
consumer (the verified token's subject; none for an anonymous call), the client's
address, the HTTP method and path the client sent and the gRPC method they became, the
route, the HTTP status and the gRPC status, the bytes in and out, the duration and the
upstream's share of it, and Envoy's response flags and details (a rate limit, a local
reply). Tokens and keys are never logged.

The gRPC status of a REST call is not what Envoy's `GRPC_STATUS` makes of it (the
transcoder turns it into an HTTP status and drops `grpc-status`, from which Envoy would
then guess, a 404 as UNIMPLEMENTED): `grpc_status_noted` keeps the upstream's own, before
the transcoder converts it.

Per consumer, the edge counts requests by status and times them
(`edge_consumers.requests`, `edge_consumers.duration` in `/stats/prometheus`, tagged
`consumer`): a verified subject only, so the series are as many as the accounts that
call, never a value a client made up.
"""

from __future__ import annotations

from typing import Any

#: The `logger` of an access log line.
ACCESS_LOGGER = "edge.access"
_FILTERS = "type.googleapis.com/envoy.extensions.filters.http"
_LOGGERS = "type.googleapis.com/envoy.extensions.access_loggers"
#: Where the edge notes an upstream's own gRPC status.
_NOTED = "shop_edge"
_JWT_METADATA = "envoy.filters.http.jwt_authn:jwt_payload"
CONSUMER = f"%DYNAMIC_METADATA({_JWT_METADATA}:sub)%"
#: The client's method and path, as it sent them (before transcoding).
_CLIENT_METHOD = "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%"
_CLIENT_PATH = "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
#: The upstream's status noted before transcoding, else Envoy's (right for a native gRPC
#: call, and for a REST call that succeeded). A namespace with a dot in its name is not
#: found by CEL's `in`: hence `shop_edge`.
_GRPC_STATUS = (
    f"%CEL('{_NOTED}' in metadata.filter_metadata"
    f" ? metadata.filter_metadata['{_NOTED}']['grpc_status'] : response.grpc_status)%"
)
_LEVEL = "%CEL(response.code >= 500 ? 'ERROR' : response.code >= 400 ? 'WARNING' : 'INFO')%"

#: One line's fields, by name.
FIELDS = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "level": _LEVEL,
    "logger": ACCESS_LOGGER,
    "message": f"{_CLIENT_METHOD} {_CLIENT_PATH} {'%RESPONSE_CODE%'} {'%DURATION%'}ms",
    "trace_id": "%TRACE_ID%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "consumer": CONSUMER,
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "http_method": _CLIENT_METHOD,
    "path": _CLIENT_PATH,
    "rpc": "%REQ(:PATH)%",
    "route": "%ROUTE_NAME%",
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": _GRPC_STATUS,
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration_ms": "%DURATION%",
    "upstream_ms": "%COMMON_DURATION(US_TX_BEG:US_RX_END:ms)%",
}


def grpc_status_noted() -> dict[str, Any]:
    """The upstream's `grpc-status` of an answer without a body (every error), noted in
    the stream's metadata before the transcoder turns it into an HTTP status: placed after
    the transcoder, it sees the response first."""
    noted = {"metadata_namespace": _NOTED, "key": "grpc_status", "type": "NUMBER"}
    return {
        "name": "grpc_status_noted",
        "typed_config": {
            "@type": f"{_FILTERS}.header_to_metadata.v3.Config",
            "response_rules": [{"header": "grpc-status", "on_header_present": noted}],
        },
    }


def access_logs() -> list[dict[str, Any]]:
    """The edge listener's access loggers: the JSON line on stdout (the edge's log), and
    the per-consumer statistics."""
    line = {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": f"{_LOGGERS}.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": FIELDS},
        },
    }
    consumer = {"name": "consumer", "value_format": CONSUMER}
    per_consumer = {
        "name": "envoy.access_loggers.stats",
        "typed_config": {
            "@type": f"{_LOGGERS}.stats.v3.Config",
            "stats_scope": {"prefix": "edge_consumers"},
            "counters": [
                {
                    "stat": {
                        "name": "requests",
                        "tags": [consumer, {"name": "status", "value_format": "%RESPONSE_CODE%"}],
                    },
                    "value_fixed": 1,
                }
            ],
            "histograms": [
                {
                    "stat": {"name": "duration", "tags": [consumer]},
                    "unit": "Milliseconds",
                    "value_format": "%DURATION%",
                }
            ],
        },
    }
    return [line, per_consumer]
