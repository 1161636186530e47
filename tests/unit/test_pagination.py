"""Page tokens: only what the service signed is read, whatever else a client sends."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from mesh.runtime.errors import InvalidArgument
from mesh.runtime.pagination import PageTokens

TOKENS = PageTokens(b"the service's key")
FILTERS = {"customer_id": "c1"}
WHEN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _unsigned(content: object) -> str:
    """A token as a client might craft one: base64url JSON, no signature."""
    return base64.urlsafe_b64encode(json.dumps(content).encode()).decode().rstrip("=")


def _refusal(token: str) -> str:
    with pytest.raises(InvalidArgument) as refused:
        TOKENS.decode_time_cursor(token, FILTERS)
    [violation] = refused.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_a_token_leads_back_to_where_its_page_ended() -> None:
    token = TOKENS.encode_time_cursor(WHEN, "o1", FILTERS)
    assert TOKENS.decode_time_cursor(token, FILTERS) == (WHEN, "o1")
    assert TOKENS.decode_time_cursor("", FILTERS) is None


def _altered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-2] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


ODD_OFFSET = {"create_time": "2026-01-01T00:00:00+25:00", "id": 1}
NOT_SIGNED = {
    "garbage": "not-a-token",
    "not-base64": "%%%",
    "too-short": "A",
    "wrong-type": _unsigned({"after": [], "filters": FILTERS}),
    "odd-offset": _unsigned({"after": ODD_OFFSET, "filters": FILTERS}),
    "not-an-object": _unsigned([1, 2, 3]),
    "altered": _altered(TOKENS.encode_time_cursor(WHEN, "o1", FILTERS)),
    "other-key": PageTokens(b"another service's key").encode_time_cursor(WHEN, "o1", FILTERS),
}


@pytest.mark.parametrize("token", NOT_SIGNED.values(), ids=NOT_SIGNED.keys())
def test_a_token_the_service_did_not_sign_is_refused_unread(token: str) -> None:
    assert _refusal(token) == "page_token is not a token this service issued."


def test_a_token_of_other_filters_is_refused() -> None:
    token = TOKENS.encode_time_cursor(WHEN, "o1", {"customer_id": "c2"})
    assert "other filters" in _refusal(token)
