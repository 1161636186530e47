"""Identity's use cases: each takes a command and the ports, and returns domain objects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mesh.runtime.pagination import page_size
from mesh.runtime.storage import utc_now
from services.identity.api_key_tokens import ApiKeySigner, ApiKeySigningKey
from services.identity.api_keys import (
    ApiKey,
    api_key_not_found,
    api_key_not_reissuable,
    key_digest,
    new_grant,
)
from services.identity.domain import (
    User,
    check_registration,
    email_taken,
    invalid_credentials,
    missing_caller,
    new_user,
    normalised_email,
    user_not_found,
)
from services.identity.passwords import dummy_hash, hash_password, verify_password
from services.identity.ports import (
    ApiKeySigningKeyStore,
    ApiKeyStore,
    ApiKeyTransaction,
    Cursor,
    IdentityStore,
    SigningKeyStore,
)
from services.identity.tokens import SigningKey, TokenSettings, TokenSigner, mint_token

#: How a client sends the access token (RFC 6750).
TOKEN_TYPE = "Bearer"


@dataclass(frozen=True)
class Register:
    email: str
    password: str
    display_name: str
    request_id: str


@dataclass(frozen=True)
class Login:
    email: str
    password: str


@dataclass(frozen=True)
class Session:
    """What a successful sign-in hands back."""

    access_token: str
    token_type: str
    expires_in_seconds: int
    user: User


async def register(store: IdentityStore, command: Register) -> User:
    """Create an account; a retry with the same `request_id` returns the same account."""
    email = normalised_email(command.email)
    display_name = command.display_name.strip()
    check_registration(email, command.password, display_name)
    # scrypt is deliberately slow: hash before taking the write lock, off the event loop.
    password_hash = await asyncio.to_thread(hash_password, command.password)
    async with store.transaction() as tx:
        prior = await tx.find_request("Register", command.request_id)
        user = await tx.get(prior["user_id"]) if prior else None
        if user is not None:
            return user
        if await tx.get_by_email(email) is not None:
            raise email_taken(email)
        user = new_user(
            email=email, display_name=display_name, password_hash=password_hash, now=utc_now()
        )
        await tx.add(user)
        await tx.record_request("Register", command.request_id, {"user_id": user.id})
    return user


async def login(
    store: IdentityStore, signer: TokenSigner, ttl_seconds: int, command: Login
) -> Session:
    """Check the password and issue a token; a wrong email or password fail alike."""
    async with store.snapshot() as tx:
        user = await tx.get_by_email(normalised_email(command.email))
    stored = dummy_hash() if user is None else user.password_hash
    matches = await asyncio.to_thread(verify_password, command.password, stored)
    if user is None or not matches:
        raise invalid_credentials()
    token = mint_token(signer, user.id, user.scopes, ttl_seconds)
    return Session(token, TOKEN_TYPE, ttl_seconds, user)


async def get_current_user(store: IdentityStore, subject: str | None) -> User:
    """The account of the authenticated caller named by `subject`."""
    if not subject:
        raise missing_caller()
    async with store.snapshot() as tx:
        user = await tx.get(subject)
    if user is None:
        raise user_not_found(subject)
    return user


async def open_signer(keys: SigningKeyStore, settings: TokenSettings) -> TokenSigner:
    """The token signer over the stored keys, creating the first key on the first start."""
    stored = await keys.load_or_create(lambda: SigningKey.generate(utc_now()))
    return TokenSigner(stored, settings.issuer, settings.audience)


async def open_api_key_signer(keys: ApiKeySigningKeyStore, settings: TokenSettings) -> ApiKeySigner:
    """The API key signer over the stored keys, creating the first key on the first start,
    so the JWKS publishes it before any key is issued."""
    stored = await keys.load_or_create(lambda: ApiKeySigningKey.generate(utc_now()))
    return ApiKeySigner(stored, settings.issuer, settings.api_key_audience)


@dataclass(frozen=True)
class ApiKeyIssuer:
    """What the API key use cases run on: the keys' records and their signer."""

    store: ApiKeyStore
    signer: ApiKeySigner


@dataclass(frozen=True)
class CreateApiKey:
    consumer: str
    scopes: tuple[str, ...]
    plan: str
    expire_time: datetime | None
    request_id: str


@dataclass(frozen=True)
class IssuedApiKey:
    """The record of a new key, and the key itself, which only this answer carries."""

    record: ApiKey
    #: Kept out of any log line or traceback that shows the answer.
    key: str = field(repr=False)


@dataclass(frozen=True)
class ListApiKeys:
    consumer: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class RevokeApiKey:
    id: str
    request_id: str


@dataclass(frozen=True)
class ListRevokedApiKeys:
    revoked_since: datetime | None
    page_size: int
    page_token: str


@dataclass(frozen=True)
class ApiKeyPage:
    keys: list[ApiKey]
    next_page_token: str


def _signed_again(signer: ApiKeySigner, record: ApiKey) -> IssuedApiKey:
    """A retried creation's answer: the key signed again from its record, which is the key
    issued only if its SHA-256 is the one stored."""
    key = signer.sign(record.grant, record.kid)
    if key is None or key_digest(key) != record.key_sha256:
        raise api_key_not_reissuable(record.id)
    return IssuedApiKey(record, key)


async def create_api_key(
    store: ApiKeyStore, signer: ApiKeySigner, command: CreateApiKey
) -> IssuedApiKey:
    """Issue a key; a retry with the same `request_id` gets the same key again."""
    async with store.transaction() as tx:
        prior = await tx.find_request("CreateApiKey", command.request_id)
        record = await tx.get(prior["api_key_id"]) if prior else None
        if record is not None:
            return _signed_again(signer, record)
        grant = new_grant(
            consumer=command.consumer,
            scopes=command.scopes,
            plan=command.plan,
            expire_time=command.expire_time,
            now=utc_now(),
        )
        key = signer.sign(grant)
        assert key is not None  # the newest signing key is always kept
        record = ApiKey.issued(grant, signer.active_kid, key)
        await tx.add(record)
        await tx.record_request("CreateApiKey", command.request_id, {"api_key_id": record.id})
    return IssuedApiKey(record, key)


async def revoke_api_key(store: ApiKeyStore, command: RevokeApiKey) -> ApiKey:
    """Revoke a key; revoking it again changes nothing and returns it as it is."""
    async with store.transaction() as tx:
        # Revoking is idempotent by itself: the request log only refuses a reused id.
        prior = await tx.find_request("RevokeApiKey", command.request_id)
        record = await tx.get(command.id)
        if record is None:
            raise api_key_not_found(command.id)
        if record.revoke_time is None:
            now = utc_now()
            await tx.revoke(record.id, now)
            record = record.revoked(now)
        if prior is None:
            await tx.record_request("RevokeApiKey", command.request_id, {"api_key_id": record.id})
    return record


#: Reads one page of keys in a snapshot: (transaction, cursor, most rows) -> rows.
_PageReader = Callable[[ApiKeyTransaction, Cursor | None, int], Awaitable[list[ApiKey]]]


async def _key_page(
    store: ApiKeyStore, filters: dict[str, Any], size: int, token: str, read: _PageReader
) -> ApiKeyPage:
    """One page of keys after the cursor in `token` (issued for the same `filters`)."""
    limit = page_size(size)
    cursor = store.page_tokens.decode_time_cursor(token, filters)
    async with store.snapshot() as tx:
        rows = await read(tx, cursor, limit + 1)
    keys, last = rows[:limit], rows[limit - 1] if len(rows) > limit else None
    tokens = store.page_tokens
    next_token = tokens.encode_time_cursor(last.create_time, last.id, filters) if last else ""
    return ApiKeyPage(keys, next_token)


async def list_api_keys(store: ApiKeyStore, query: ListApiKeys) -> ApiKeyPage:
    """One page of the keys issued (of one consumer, if named), newest first."""
    return await _key_page(
        store,
        {"consumer": query.consumer},
        query.page_size,
        query.page_token,
        lambda tx, cursor, limit: tx.page(query.consumer, cursor, limit),
    )


async def list_revoked_api_keys(store: ApiKeyStore, query: ListRevokedApiKeys) -> ApiKeyPage:
    """One page of the keys revoked (since a time, if given) that have not expired."""
    since = query.revoked_since
    now = utc_now()
    return await _key_page(
        store,
        {"revoked_since": since.isoformat() if since else ""},
        query.page_size,
        query.page_token,
        lambda tx, cursor, limit: tx.revoked_page(since, now, cursor, limit),
    )
