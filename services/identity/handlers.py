"""Identity's use cases: each takes a command and the ports, and returns domain objects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mesh.runtime.storage import utc_now
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
from services.identity.ports import IdentityStore, SigningKeyStore
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
