"""API keys: the rules of a grant, the use cases with an in-memory fake of their store,
and the keys as tokens (ES256, their own audience, verified with the published JWKS)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from mesh.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from mesh.runtime.pagination import PageTokens
from mesh.runtime.service import SettingsError
from services.identity import handlers
from services.identity.api_key_tokens import ApiKeySigner, ApiKeySigningKey
from services.identity.api_keys import (
    DEFAULT_LIFETIME,
    ApiKey,
    ApiKeyGrant,
    grant_violations,
    new_grant,
)
from services.identity.bootstrap import token_settings_from_environment
from services.identity.ports import Cursor
from services.identity.tokens import SigningKey, TokenSigner, mint_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)
AUDIENCE = "shop-api-keys"


class FakeApiKeys:
    """The key records in a dict; a transaction is the fake itself."""

    def __init__(self) -> None:
        self.records: dict[str, ApiKey] = {}
        self.request_log: dict[tuple[str, str], dict[str, Any]] = {}
        self.page_tokens = PageTokens(b"k" * 32)

    async def get(self, key_id: str) -> ApiKey | None:
        return self.records.get(key_id)

    async def add(self, key: ApiKey) -> None:
        assert key.id not in self.records
        self.records[key.id] = key

    async def revoke(self, key_id: str, when: datetime) -> None:
        self.records[key_id] = self.records[key_id].revoked(when)

    def _ordered(self, after: Cursor | None, newest_first: bool) -> list[ApiKey]:
        ordered = sorted(self.records.values(), key=lambda k: (k.create_time, k.id))
        if newest_first:
            ordered.reverse()
        if after is None:
            return ordered
        return [k for k in ordered if ((k.create_time, k.id) < after) == newest_first]

    async def page(self, consumer: str, before: Cursor | None, limit: int) -> list[ApiKey]:
        found = self._ordered(before, newest_first=True)
        return [k for k in found if not consumer or k.grant.consumer == consumer][:limit]

    async def revoked_page(
        self, since: datetime | None, now: datetime, after: Cursor | None, limit: int
    ) -> list[ApiKey]:
        def listed(key: ApiKey) -> bool:
            revoked = key.revoke_time
            return revoked is not None and key.grant.expire_time > now and revoked >= (since or T0)

        return [k for k in self._ordered(after, newest_first=False) if listed(k)][:limit]

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.request_log.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.request_log[(method, request_id)] = result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeApiKeys]:
        yield self

    def snapshot(self) -> AbstractAsyncContextManager[FakeApiKeys]:
        return self.transaction()


@pytest.fixture(scope="module")
def signing_key() -> ApiKeySigningKey:
    return ApiKeySigningKey.generate(T0)


@pytest.fixture
def signer(signing_key: ApiKeySigningKey) -> ApiKeySigner:
    return ApiKeySigner([signing_key], "shop-identity", AUDIENCE)


def creation(**fields: Any) -> handlers.CreateApiKey:
    defaults: dict[str, Any] = {
        "consumer": "acme",
        "scopes": ("catalog:write", "orders:read"),
        "plan": "free",
        "expire_time": None,
        "request_id": "",
    }
    return handlers.CreateApiKey(**{**defaults, **fields})


def verified(token: str, jwks: list[dict[str, str]], audience: str = AUDIENCE) -> dict[str, Any]:
    """The claims of `token`, verified as the edge does: with the JWK its `kid` names, for
    one audience (an API key's by default)."""
    header = jwt.get_unverified_header(token)
    jwk = next(k for k in jwks if k["kid"] == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer="shop-identity",
    )
    return claims


# The rules of a grant


def test_a_well_formed_grant_has_no_violations() -> None:
    assert grant_violations("acme-2", ["catalog:write", "a.b_c-d"], "gold-1", None, T0) == []


@pytest.mark.parametrize(
    ("consumer", "scopes", "plan", "expires", "fields"),
    [
        ("Acme", [], "free", None, ["api_key.consumer"]),
        ("acme-", [], "free", None, ["api_key.consumer"]),
        ("", [], "free", None, ["api_key.consumer"]),
        ("a" * 49, [], "free", None, ["api_key.consumer"]),
        ("acme", ["catalog:write", "has space", "Upper"], "free", None,
         ["api_key.scopes[1]", "api_key.scopes[2]"]),
        ("acme", [f"s{i}" for i in range(33)], "free", None, ["api_key.scopes"]),
        ("acme", [], "", None, ["api_key.plan"]),
        ("acme", [], "free plan", None, ["api_key.plan"]),
        ("acme", [], "free", T0, ["api_key.expire_time"]),
        ("acme", [], "free", T0 + timedelta(days=3 * 365 + 1), ["api_key.expire_time"]),
        ("ACME", ["x y"], "", T0 - timedelta(1),
         ["api_key.consumer", "api_key.scopes[0]", "api_key.plan", "api_key.expire_time"]),
    ],
    ids=["upper", "hyphen-end", "empty", "too-long", "scopes", "too-many-scopes", "no-plan",
         "plan-space", "expired", "too-far", "all"],
)  # fmt: skip
def test_a_bad_grant_names_every_offending_field(
    consumer: str, scopes: list[str], plan: str, expires: datetime | None, fields: list[str]
) -> None:
    violations = grant_violations(consumer, scopes, plan, expires, T0)
    assert [v.field for v in violations] == fields
    assert all(v.description.endswith(".") for v in violations)
    with pytest.raises(InvalidArgument):
        new_grant(consumer=consumer, scopes=scopes, plan=plan, expire_time=expires, now=T0)


def test_a_grant_expires_in_a_year_unless_sooner_and_grants_a_scope_once() -> None:
    grant = new_grant(consumer="acme", scopes=["a:b", "a:b"], plan="free", expire_time=None, now=T0)
    assert grant.expire_time - grant.create_time == DEFAULT_LIFETIME
    assert grant.scopes == ("a:b",)
    assert len(grant.id) == 16
    assert int(grant.id, 16) >= 0
    assert grant.subject == "consumer:acme"
    sooner = new_grant(
        consumer="acme", scopes=[], plan="free", expire_time=T0 + timedelta(1), now=T0
    )
    assert sooner.expire_time == T0 + timedelta(1)


# The use cases


async def test_a_created_key_is_kept_only_as_its_sha256(signer: ApiKeySigner) -> None:
    store = FakeApiKeys()
    issued = await handlers.create_api_key(store, signer, creation())
    [record] = store.records.values()
    assert record == issued.record
    assert record.key_sha256 == hashlib.sha256(issued.key.encode()).hexdigest()
    assert record.key_suffix == issued.key[-6:]
    kept = repr(dataclasses.asdict(record))
    assert issued.key not in kept
    assert issued.key.split(".")[2] not in kept  # not even the signature
    assert issued.key not in repr(record)


async def test_a_retried_creation_returns_the_same_key_and_issues_no_other(
    signer: ApiKeySigner,
) -> None:
    store = FakeApiKeys()
    first = await handlers.create_api_key(store, signer, creation(request_id="r-1"))
    again = await handlers.create_api_key(store, signer, creation(request_id="r-1"))
    assert again == first
    assert len(store.records) == 1
    other = await handlers.create_api_key(store, signer, creation(request_id="r-2"))
    assert other.key != first.key
    assert len(store.records) == 2


async def test_a_retry_signed_with_other_settings_is_refused_not_shown_another_key(
    signing_key: ApiKeySigningKey, signer: ApiKeySigner
) -> None:
    store = FakeApiKeys()
    await handlers.create_api_key(store, signer, creation(request_id="r-1"))
    moved = ApiKeySigner([signing_key], "https://id.example", AUDIENCE)
    with pytest.raises(FailedPrecondition) as refused:
        await handlers.create_api_key(store, moved, creation(request_id="r-1"))
    assert refused.value.reason == "API_KEY_NOT_REISSUABLE"


async def test_revoking_twice_keeps_the_first_time_and_an_unknown_key_is_not_found(
    signer: ApiKeySigner,
) -> None:
    store = FakeApiKeys()
    issued = await handlers.create_api_key(store, signer, creation())
    first = await handlers.revoke_api_key(store, handlers.RevokeApiKey(issued.record.id, ""))
    assert first.revoke_time is not None
    again = await handlers.revoke_api_key(store, handlers.RevokeApiKey(issued.record.id, ""))
    assert again.revoke_time == first.revoke_time
    assert store.records[issued.record.id] == first
    with pytest.raises(NotFound) as missing:
        await handlers.revoke_api_key(store, handlers.RevokeApiKey("0123456789abcdef", ""))
    assert missing.value.reason == "API_KEY_NOT_FOUND"


async def test_keys_are_listed_newest_first_a_page_at_a_time(signer: ApiKeySigner) -> None:
    store = FakeApiKeys()
    created = [
        (await handlers.create_api_key(store, signer, creation(consumer=c))).record
        for c in ["acme", "globex", "acme"]
    ]
    first = await handlers.list_api_keys(store, handlers.ListApiKeys("", 2, ""))
    rest = await handlers.list_api_keys(store, handlers.ListApiKeys("", 2, first.next_page_token))
    assert first.keys + rest.keys == created[::-1]
    assert rest.next_page_token == ""
    acme = await handlers.list_api_keys(store, handlers.ListApiKeys("acme", 0, ""))
    assert acme.keys == [created[2], created[0]]


async def test_the_deny_list_holds_revoked_keys_until_they_expire(signer: ApiKeySigner) -> None:
    store = FakeApiKeys()
    soon = datetime.now(UTC) + timedelta(hours=1)
    kept, expiring, _unrevoked = [
        (await handlers.create_api_key(store, signer, creation(expire_time=e))).record
        for e in (None, soon, None)
    ]
    for record in (kept, expiring):
        await handlers.revoke_api_key(store, handlers.RevokeApiKey(record.id, ""))
    everything = handlers.ListRevokedApiKeys(None, 0, "")
    listed = await handlers.list_revoked_api_keys(store, everything)
    assert [k.id for k in listed.keys] == [kept.id, expiring.id]
    # An hour on, the expiring key is refused for its expiry: it leaves the list.
    store.records[expiring.id] = dataclasses.replace(
        store.records[expiring.id],
        grant=dataclasses.replace(expiring.grant, expire_time=datetime.now(UTC)),
    )
    listed = await handlers.list_revoked_api_keys(store, everything)
    assert [k.id for k in listed.keys] == [kept.id]
    later = handlers.ListRevokedApiKeys(datetime.now(UTC) + timedelta(1), 0, "")
    assert (await handlers.list_revoked_api_keys(store, later)).keys == []


# Keys as tokens


def test_a_key_carries_its_grant_and_verifies_with_the_jwks_for_the_keys_audience(
    signer: ApiKeySigner,
) -> None:
    grant = new_grant(
        consumer="acme", scopes=["catalog:write"], plan="gold", expire_time=None, now=T0
    )
    key = signer.sign(grant)
    assert key is not None
    assert jwt.get_unverified_header(key) == {
        "alg": "ES256",
        "kid": signer.active_kid,
        "typ": "JWT",
    }
    claims = jwt.decode(
        key,
        jwt.PyJWK(signer.jwks()[0]).key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer="shop-identity",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": "shop-identity",
        "aud": AUDIENCE,
        "sub": "consumer:acme",
        "scope": "catalog:write",
        "plan": "gold",
        "jti": grant.id,
        "iat": int(T0.timestamp()),
        "exp": int((T0 + DEFAULT_LIFETIME).timestamp()),
    }
    assert len(key) < 512
    assert signer.sign(grant) == key  # deterministic: a retry can sign it again


def test_a_key_and_an_access_token_never_pass_for_each_other(signer: ApiKeySigner) -> None:
    tokens = TokenSigner([SigningKey.generate(T0)], "shop-identity", "shop")
    jwks = [*tokens.jwks(), *signer.jwks()]
    grant = new_grant(
        consumer="acme",
        scopes=["catalog:write"],
        plan="free",
        expire_time=None,
        now=datetime.now(UTC),
    )
    key = signer.sign(grant)
    assert key is not None
    access_token = mint_token(tokens, "user-1", ["catalog:write"], 60)
    assert verified(key, jwks)["sub"] == "consumer:acme"
    assert verified(access_token, jwks, audience="shop")["sub"] == "user-1"
    with pytest.raises(jwt.InvalidAudienceError):
        verified(access_token, jwks)  # a token is no key
    with pytest.raises(jwt.InvalidAudienceError):
        verified(key, jwks, audience="shop")  # a key is no token


def test_a_signer_publishes_every_key_and_signs_with_the_newest(
    signing_key: ApiKeySigningKey,
) -> None:
    newer = ApiKeySigningKey.generate(T0 + timedelta(days=1))
    signer = ApiKeySigner([newer, signing_key], "shop-identity", AUDIENCE)
    assert [k["kid"] for k in signer.jwks()] == [signing_key.kid, newer.kid]
    grant = ApiKeyGrant("0123456789abcdef", "acme", (), "free", T0, T0 + timedelta(1))
    assert jwt.get_unverified_header(signer.sign(grant) or "")["kid"] == newer.kid
    assert signer.sign(grant, "unknown kid") is None


def test_a_signing_key_survives_its_pem() -> None:
    key = ApiKeySigningKey.generate(T0)
    assert ApiKeySigningKey.from_pem(key.private_pem(), T0).kid == key.kid
    with pytest.raises(ValueError, match="P-256"):
        ApiKeySigningKey.from_pem(SigningKey.generate(T0).private_pem(), T0)


# Settings


def test_the_keys_audience_is_read_from_the_environment_and_must_not_be_the_tokens() -> None:
    assert token_settings_from_environment({}).api_key_audience == AUDIENCE
    settings = token_settings_from_environment({"SHOP_IDENTITY_API_KEY_AUDIENCE": "machines"})
    assert settings.api_key_audience == "machines"
    with pytest.raises(SettingsError, match="SHOP_IDENTITY_API_KEY_AUDIENCE"):
        token_settings_from_environment({"SHOP_IDENTITY_API_KEY_AUDIENCE": "shop"})
