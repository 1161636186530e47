"""The edge's own replies (a refusal, a timeout, no route): a gRPC status to a gRPC client,
JSON shaped like `google.rpc.Status` to any other,
`{"code": <gRPC code>, "status": "<NAME>", "message": "..."}`."""

from __future__ import annotations

from typing import Any

from mesh.runtime import admission

#: Where the edge notes the content type the client sent (dynamic metadata), before
#: transcoding makes every request look like gRPC: it decides how the edge's own replies look.
CLIENT_METADATA_NAMESPACE = "shop.edge"
CLIENT_CONTENT_TYPE_KEY = "client_content_type"

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

#: What the edge says when its own reply would otherwise have no message.
_DEFAULT_MESSAGES = {404: "no such route", 405: "method not allowed here"}

#: A call the edge's circuit breaker refused (UO: the service's apps admit no more).
_OVERFLOW = {"response_flag_filter": {"flags": ["UO"]}}


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


def _as_json(status: int) -> dict[str, Any]:
    """A reply of `status` to a REST client: its JSON body, with a message if it has none."""
    status_is = {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": status, "runtime_key": f"edge.{status}"},
            }
        }
    }
    message = _DEFAULT_MESSAGES.get(status)
    return {
        "filter": status_is,
        **_json_body(status),
        **({"body": {"inline_string": message}} if message else {}),
    }


def local_reply_config() -> dict[str, Any]:
    """The first mapper that matches rewrites a reply: to a gRPC client, the refusal as its
    status message and otherwise Envoy's own status; to a REST client, JSON."""
    overflow_to_grpc = {"and_filter": {"filters": [_OVERFLOW, _from_grpc_client()]}}
    return {
        "mappers": [
            _refused_for_load(overflow_to_grpc, {}),
            {"filter": _from_grpc_client()},
            _refused_for_load(_OVERFLOW, _json_body(503)),
            *(_as_json(status) for status in sorted(_LOCAL_REPLY_CODES)),
        ]
    }
