"""Identity's rules and use cases, with in-memory fakes of its ports."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from mesh.runtime.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from mesh.runtime.service import SettingsError
from services.identity import handlers
from services.identity.bootstrap import token_settings_from_environment
from services.identity.domain import DEFAULT_SCOPES, User, registration_violations
from services.identity.passwords import dummy_hash, hash_password, verify_password
from services.identity.tokens import SigningKey, TokenSettings, TokenSigner, mint_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeIdentity:
    """The users in a dict; a transaction is the dict itself."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    async def add(self, user: User) -> None:
        self.users[user.id] = user

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.requests[(method, request_id)] = result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeIdentity]:
        yield self

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[FakeIdentity]:
        yield self


class FakeKeys:
    def __init__(self) -> None:
        self.keys: list[SigningKey] = []
        self.created = 0

    async def load_or_create(self, create: Callable[[], SigningKey]) -> list[SigningKey]:
        if not self.keys:
            self.keys.append(create())
            self.created += 1
        return list(self.keys)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate(T0)


@pytest.fixture
def signer(key: SigningKey) -> TokenSigner:
    return TokenSigner([key], "shop-identity", "shop")


def verified(token: str, signer: TokenSigner) -> dict[str, Any]:
    """The claims of `token`, verified with the JWK its `kid` header names."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in signer.jwks() if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="shop", issuer="shop-identity"
    )
    return claims


def registration(email: str = "Ada@Example.com", **fields: str) -> handlers.Register:
    return handlers.Register(
        email=email,
        password=fields.get("password", "correct horse"),
        display_name=fields.get("display_name", "  Ada Lovelace "),
        request_id=fields.get("request_id", ""),
    )


# Passwords


def test_a_password_hash_is_salted_scrypt_and_verifies_only_its_password() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in first
    assert first != second
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsf", first)


def test_a_hash_with_other_parameters_still_verifies() -> None:
    scheme, _, r, p, salt, _ = hash_password("x").split("$")
    digest = hashlib.scrypt(b"secret12", salt=base64.b64decode(salt), n=2**10, r=8, p=1, dklen=32)
    stored = "$".join([scheme, str(2**10), r, p, salt, base64.b64encode(digest).decode()])
    assert verify_password("secret12", stored)


# Registration rules


@pytest.mark.parametrize(
    "email",
    ["ada", "ada@", "@example.com", "ada@example", "ada@@example.com", "a da@example.com", "a@b."],
)
def test_malformed_emails_are_refused(email: str) -> None:
    assert [v.field for v in registration_violations(email, "long enough", "")] == ["email"]


def test_every_broken_rule_is_named_at_once() -> None:
    violations = registration_violations("nope", "short", "x" * 201)
    assert [v.field for v in violations] == ["email", "password", "display_name"]


def test_a_password_of_exactly_eight_characters_is_enough() -> None:
    assert registration_violations("ada@example.com", "12345678", "") == []
    assert [v.field for v in registration_violations("ada@example.com", "1234567", "")] == [
        "password"
    ]


# Use cases


async def test_register_normalises_and_grants_the_default_scopes() -> None:
    store = FakeIdentity()
    user = await handlers.register(store, registration())
    assert user.email == "ada@example.com"
    assert user.display_name == "Ada Lovelace"
    assert user.scopes == DEFAULT_SCOPES
    assert verify_password("correct horse", user.password_hash)


async def test_register_refuses_an_email_taken_in_any_case() -> None:
    store = FakeIdentity()
    await handlers.register(store, registration("ada@example.com"))
    with pytest.raises(AlreadyExists) as failure:
        await handlers.register(store, registration("ADA@example.com"))
    assert failure.value.reason == "EMAIL_TAKEN"


async def test_register_retried_with_its_request_id_returns_the_same_user() -> None:
    store = FakeIdentity()
    first = await handlers.register(store, registration(request_id="r-1"))
    again = await handlers.register(store, registration(request_id="r-1"))
    assert again == first
    assert len(store.users) == 1


async def test_register_refuses_a_short_password_before_storing_anything() -> None:
    store = FakeIdentity()
    with pytest.raises(InvalidArgument):
        await handlers.register(store, registration(password="1234567"))
    assert store.users == {}


async def test_login_issues_a_token_for_the_user(signer: TokenSigner) -> None:
    store = FakeIdentity()
    user = await handlers.register(store, registration())
    session = await handlers.login(
        store, signer, 600, handlers.Login(" ADA@example.com", "correct horse")
    )
    claims = verified(session.access_token, signer)
    assert session.user == user
    assert (session.token_type, session.expires_in_seconds) == ("Bearer", 600)
    assert claims["sub"] == user.id
    assert claims["scope"] == "orders:read orders:write catalog:read"
    assert claims["exp"] - claims["iat"] == 600


async def test_wrong_password_and_unknown_email_fail_alike(signer: TokenSigner) -> None:
    store = FakeIdentity()
    await handlers.register(store, registration())
    failures = []
    for attempt in (
        handlers.Login("ada@example.com", "wrong password"),
        handlers.Login("bob@example.com", "correct horse"),
    ):
        with pytest.raises(Unauthenticated) as failure:
            await handlers.login(store, signer, 600, attempt)
        failures.append((failure.value.reason, failure.value.message))
    assert failures[0] == failures[1] == ("INVALID_CREDENTIALS", failures[0][1])


async def test_an_unknown_email_still_costs_a_password_check(
    signer: TokenSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(handlers, "verify_password", spy)
    with pytest.raises(Unauthenticated):
        await handlers.login(
            FakeIdentity(), signer, 600, handlers.Login("bob@example.com", "correct horse")
        )
    assert checked == [dummy_hash()]


async def test_the_current_user_needs_a_caller_who_exists() -> None:
    store = FakeIdentity()
    user = await handlers.register(store, registration())
    assert await handlers.get_current_user(store, user.id) == user
    with pytest.raises(Unauthenticated):
        await handlers.get_current_user(store, None)
    with pytest.raises(NotFound) as failure:
        await handlers.get_current_user(store, "0f1e0e3c-2f5e-4f7f-8a4c-1c3c2b1a0000")
    assert failure.value.reason == "USER_NOT_FOUND"


async def test_the_signing_key_is_created_once_and_then_reused() -> None:
    keys = FakeKeys()
    first = await handlers.open_signer(keys, TokenSettings())
    second = await handlers.open_signer(keys, TokenSettings())
    assert keys.created == 1
    assert first.jwks() == second.jwks()


# Tokens and keys


def test_a_jwk_is_unpadded_base64url_and_survives_a_pem_round_trip(key: SigningKey) -> None:
    jwk = key.jwk()
    assert {k: jwk[k] for k in ("kty", "use", "alg", "e")} == {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "e": "AQAB",
    }
    assert "=" not in jwk["n"]
    assert "+" not in jwk["n"]
    assert "/" not in jwk["n"]
    assert len(jwt.utils.base64url_decode(jwk["n"])) == 256
    assert SigningKey.from_pem(key.private_pem(), T0).jwk() == jwk


def test_a_token_carries_the_claims_and_names_its_key(signer: TokenSigner) -> None:
    token = mint_token(signer, "user-1", ["catalog:write"], 60, now=1_900_000_000)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == signer.active_key.kid
    assert header["alg"] == "RS256"
    claims = jwt.decode(
        token,
        jwt.PyJWK(signer.jwks()[0]).key,
        algorithms=["RS256"],
        audience="shop",
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims["sub"] == "user-1"
    assert claims["scope"] == "catalog:write"
    assert claims["iss"] == "shop-identity"
    assert (claims["iat"], claims["exp"]) == (1_900_000_000, 1_900_000_060)
    assert len(claims["jti"]) == 32


def test_tokens_get_a_fresh_id_each_time(signer: TokenSigner) -> None:
    ids = {verified(mint_token(signer, "u", [], 60), signer)["jti"] for _ in range(3)}
    assert len(ids) == 3


def test_an_expired_token_is_refused(signer: TokenSigner) -> None:
    token = mint_token(signer, "u", [], 60, now=datetime.now(UTC).timestamp() - 120)
    with pytest.raises(jwt.ExpiredSignatureError):
        verified(token, signer)


def test_a_token_of_another_key_does_not_verify(key: SigningKey, signer: TokenSigner) -> None:
    stranger = TokenSigner([SigningKey.generate(T0)], "shop-identity", "shop")
    token = mint_token(stranger, "u", [], 60)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, jwt.PyJWK(key.jwk()).key, algorithms=["RS256"], audience="shop")


def test_a_signer_signs_with_its_newest_key_and_publishes_all(key: SigningKey) -> None:
    newer = SigningKey.generate(T0 + timedelta(days=30))
    signer = TokenSigner([newer, key], "shop-identity", "shop")
    assert jwt.get_unverified_header(mint_token(signer, "u", [], 60))["kid"] == newer.kid
    assert [k["kid"] for k in signer.jwks()] == [key.kid, newer.kid]


# Settings


def test_token_settings_default_and_are_read_from_the_environment() -> None:
    assert token_settings_from_environment({}) == TokenSettings("shop-identity", "shop", 3600)
    assert token_settings_from_environment(
        {
            "SHOP_IDENTITY_ISSUER": "https://id.example",
            "SHOP_IDENTITY_AUDIENCE": "shop-api",
            "SHOP_IDENTITY_TOKEN_TTL": "900",
        }
    ) == TokenSettings("https://id.example", "shop-api", 900)


@pytest.mark.parametrize("ttl", ["soon", "0", "-5"])
def test_a_malformed_token_lifetime_fails_fast(ttl: str) -> None:
    with pytest.raises(SettingsError, match="SHOP_IDENTITY_TOKEN_TTL"):
        token_settings_from_environment({"SHOP_IDENTITY_TOKEN_TTL": ttl})
