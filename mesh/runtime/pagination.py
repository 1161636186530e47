"""AIP-158 pagination: page sizes and opaque page tokens, the same for every list RPC.

A page token carries the sort key of the last item returned plus the request's filters,
signed with the service's own key (HMAC-SHA256, `PageTokens`; the key lives in the
service's database, see `mesh.runtime.storage.Database.page_tokens`). Only what the service
issued is ever decoded: a token it did not sign (made up, altered, or another service's)
is INVALID_ARGUMENT on `page_token` before any of its content is read, and so is a
signed one reused with other filters, as AIP-158 asks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mesh.runtime.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

#: Bytes of the HMAC-SHA256 a token starts with (128 bits: no forgery by guessing).
_MAC_BYTES = 16


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, at most MAX_PAGE_SIZE."""
    if requested < 0:
        raise InvalidArgument.of([FieldViolation("page_size", "page_size must not be negative.")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _not_issued() -> InvalidArgument:
    return InvalidArgument.of(
        [FieldViolation("page_token", "page_token is not a token this service issued.")]
    )


class PageTokens:
    """Issues and reads one service's page tokens, signed with its `key`."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, hashlib.sha256)[:_MAC_BYTES]

    def encode(self, after: Mapping[str, Any], filters: Mapping[str, Any]) -> str:
        """A token for the page that follows the item whose sort key is `after`."""
        payload = json.dumps(
            {"after": dict(after), "filters": dict(filters)}, sort_keys=True
        ).encode()
        return base64.urlsafe_b64encode(self._mac(payload) + payload).decode().rstrip("=")

    def decode(self, token: str, filters: Mapping[str, Any]) -> dict[str, Any] | None:
        """The sort key a token continues after (None for no token), checked against
        `filters`; a token this service did not sign is refused unread."""
        if not token:
            return None
        try:
            signed = base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode())
        except (binascii.Error, ValueError):
            raise _not_issued() from None
        mac, payload = signed[:_MAC_BYTES], signed[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _not_issued()
        content = json.loads(payload)
        if content["filters"] != dict(filters):
            raise InvalidArgument.of(
                [
                    FieldViolation(
                        "page_token",
                        "page_token belongs to a request with other filters; "
                        "repeat the original filters or start without a token.",
                    )
                ]
            )
        after: dict[str, Any] = content["after"]
        return after

    def encode_time_cursor(
        self, create_time: datetime, item_id: str, filters: Mapping[str, Any]
    ) -> str:
        """A token continuing after the item created at `create_time` with id `item_id`."""
        return self.encode({"create_time": create_time.isoformat(), "id": item_id}, filters)

    def decode_time_cursor(
        self, token: str, filters: Mapping[str, Any]
    ) -> tuple[datetime, str] | None:
        """The (create_time, id) a token from `encode_time_cursor` continues after."""
        after = self.decode(token, filters)
        if after is None:
            return None
        return datetime.fromisoformat(after["create_time"]), after["id"]
