"""API keys for machine consumers: what a key grants, the record kept of it, and the rules.

A key is a signed token (`api_key_tokens`): the edge verifies it with identity's JWKS and
holds no secret. Identity keeps a record of each key it issued, never the key: its grant
(consumer, scopes, plan, times), the signing key's id, a SHA-256 of the key and its last
characters, for telling keys apart in a list.

Every key expires, a year after it is issued unless asked for sooner, and never more than
three years after: a forgotten key stops by itself, and the edge's deny list of revoked
keys (`ListRevokedApiKeys`) holds each one only until it expires, so it stays bounded.
A consumer replaces a key by creating the next one before revoking the old.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mesh.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

#: A key's `sub` claim is the consumer behind this prefix, so no consumer can pass for a
#: customer, whose subject is a user id.
SUBJECT_PREFIX = "consumer:"
DEFAULT_LIFETIME = timedelta(days=365)
MAX_LIFETIME = timedelta(days=3 * 365)
MAX_SCOPES = 32
#: How many of a key's last characters its record shows (of its signature: no secret).
SUFFIX_LENGTH = 6

#: Lowercase letters, digits and inner hyphens; 48 at most, so that the subject fits the
#: 64 characters a caller may have (the request log's `caller`).
_CONSUMER = re.compile(r"[a-z](?:[a-z0-9-]{0,46}[a-z0-9])?")
_PLAN = re.compile(r"[a-z][a-z0-9-]{0,31}")
#: As the scopes of access tokens and of `edge.auth.scopes` are written: `catalog:write`.
_SCOPE = re.compile(r"[a-z][a-z0-9:._-]{0,63}")


@dataclass(frozen=True)
class ApiKeyGrant:
    """What a key lets its consumer do, and for how long: the claims it is signed with."""

    id: str
    consumer: str
    scopes: tuple[str, ...]
    plan: str
    create_time: datetime
    expire_time: datetime

    @property
    def subject(self) -> str:
        """The key's `sub` claim, which the edge passes on as the caller."""
        return SUBJECT_PREFIX + self.consumer


@dataclass(frozen=True)
class ApiKey:
    """The record of an issued key; the key itself is never kept."""

    grant: ApiKeyGrant
    #: The id of the signing key that signed it.
    kid: str
    key_sha256: str = field(repr=False)
    key_suffix: str
    revoke_time: datetime | None = None

    @classmethod
    def issued(cls, grant: ApiKeyGrant, kid: str, key: str) -> ApiKey:
        return cls(grant, kid, key_digest(key), key[-SUFFIX_LENGTH:])

    @property
    def id(self) -> str:
        return self.grant.id

    @property
    def create_time(self) -> datetime:
        return self.grant.create_time

    def revoked(self, now: datetime) -> ApiKey:
        """This key revoked at `now`, or as it is when it was revoked already."""
        return self if self.revoke_time is not None else dataclasses.replace(self, revoke_time=now)


def key_digest(key: str) -> str:
    """The SHA-256 of a key, as stored: 64 hexadecimal digits."""
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_not_found(key_id: str) -> NotFound:
    return NotFound(
        f"API key {key_id!r} does not exist",
        reason="API_KEY_NOT_FOUND",
        metadata={"api_key_id": key_id},
    )


def api_key_not_reissuable(key_id: str) -> FailedPrecondition:
    # Only when the issuer, the audience or the signing key changed since the first request.
    return FailedPrecondition(
        f"API key {key_id!r} cannot be shown again: it was signed with other settings; "
        "revoke it and create another",
        reason="API_KEY_NOT_REISSUABLE",
        metadata={"api_key_id": key_id},
    )


def _scope_violations(scopes: Sequence[str]) -> list[FieldViolation]:
    if len(scopes) > MAX_SCOPES:
        return [FieldViolation("api_key.scopes", f"A key has at most {MAX_SCOPES} scopes.")]
    return [
        FieldViolation(
            f"api_key.scopes[{index}]",
            "A scope is a lowercase letter, then lowercase letters, digits and any of "
            "':._-', for example catalog:write.",
        )
        for index, scope in enumerate(scopes)
        if not _SCOPE.fullmatch(scope)
    ]


def _expiry_violations(expire_time: datetime | None, now: datetime) -> list[FieldViolation]:
    if expire_time is None:
        return []
    if expire_time <= now:
        return [FieldViolation("api_key.expire_time", "The expiry must be in the future.")]
    if expire_time > now + MAX_LIFETIME:
        years = MAX_LIFETIME.days // 365
        return [
            FieldViolation(
                "api_key.expire_time", f"A key expires at most {years} years after it is issued."
            )
        ]
    return []


def grant_violations(
    consumer: str, scopes: Sequence[str], plan: str, expire_time: datetime | None, now: datetime
) -> list[FieldViolation]:
    """Everything wrong with a key's grant, so a client can fix it in one go."""
    problems = []
    if not _CONSUMER.fullmatch(consumer):
        problems.append(
            FieldViolation(
                "api_key.consumer",
                "The consumer is a lowercase letter, then up to 47 lowercase letters, digits "
                "or hyphens, not ending with a hyphen, for example acme.",
            )
        )
    problems += _scope_violations(scopes)
    if not _PLAN.fullmatch(plan):
        problems.append(
            FieldViolation(
                "api_key.plan",
                "The plan is a lowercase letter, then up to 31 lowercase letters, digits or "
                "hyphens, for example free.",
            )
        )
    return problems + _expiry_violations(expire_time, now)


def new_grant(
    *,
    consumer: str,
    scopes: Sequence[str],
    plan: str,
    expire_time: datetime | None,
    now: datetime,
) -> ApiKeyGrant:
    """A checked grant under a fresh id; INVALID_ARGUMENT names every field that breaks a
    rule. A scope named twice is granted once."""
    problems = grant_violations(consumer, scopes, plan, expire_time, now)
    if problems:
        raise InvalidArgument.of(problems)
    return ApiKeyGrant(
        id=secrets.token_hex(8),
        consumer=consumer,
        scopes=tuple(dict.fromkeys(scopes)),
        plan=plan,
        create_time=now,
        expire_time=expire_time or now + DEFAULT_LIFETIME,
    )
