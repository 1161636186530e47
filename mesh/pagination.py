"""AIP-158 pagination: page sizes and opaque page tokens, the same for every list RPC.

A page token carries the sort key of the last item returned plus the request's filters;
a token reused with other filters, or tampered with, is INVALID_ARGUMENT on
`page_token`, as AIP-158 asks.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mesh.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE."""
    if requested < 0:
        raise InvalidArgument.of([FieldViolation("page_size", "page_size must not be negative.")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(after: Mapping[str, Any], filters: Mapping[str, Any]) -> str:
    """A token for the page that follows the item whose sort key is `after`."""
    payload = json.dumps({"after": dict(after), "filters": dict(filters)}, sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(token: str, filters: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sort key a token continues after (None for no token), checked against `filters`."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after, token_filters = payload["after"], payload["filters"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument.of(
            [FieldViolation("page_token", "page_token is not a token this service issued.")]
        ) from None
    if token_filters != dict(filters):
        raise InvalidArgument.of(
            [
                FieldViolation(
                    "page_token",
                    "page_token belongs to a request with other filters; "
                    "repeat the original filters or start without a token.",
                )
            ]
        )
    return dict(after)


def encode_time_cursor(create_time: datetime, item_id: str, filters: Mapping[str, Any]) -> str:
    """A token continuing after the item created at `create_time` with id `item_id`."""
    return encode_token({"create_time": create_time.isoformat(), "id": item_id}, filters)


def decode_time_cursor(token: str, filters: Mapping[str, Any]) -> tuple[datetime, str] | None:
    """The (create_time, id) a token from `encode_time_cursor` continues after."""
    after = decode_token(token, filters)
    if after is None:
        return None
    try:
        create_time = datetime.fromisoformat(after["create_time"])
        item_id = after["id"]
    except (KeyError, TypeError, ValueError):
        create_time, item_id = None, None
    if create_time is None or create_time.tzinfo is None or not isinstance(item_id, str):
        raise InvalidArgument.of(
            [FieldViolation("page_token", "page_token is not a token this service issued.")]
        )
    return create_time, item_id
