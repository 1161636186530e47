"""What identity's handlers need from the outside world, as interfaces.

The SQL adapters (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from mesh.runtime.pagination import PageTokens
from services.identity.api_key_tokens import ApiKeySigningKey
from services.identity.api_keys import ApiKey
from services.identity.domain import User
from services.identity.tokens import SigningKey

#: A page's cursor: the (create_time, id) of the last row of the previous page.
Cursor = tuple[datetime, str]


class IdentityTransaction(Protocol):
    """The users, as seen inside one transaction."""

    async def get(self, user_id: str) -> User | None: ...
    async def get_by_email(self, email: str) -> User | None: ...
    async def add(self, user: User) -> None: ...
    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...


class IdentityStore(Protocol):
    """Identity's database of users."""

    def transaction(self) -> AbstractAsyncContextManager[IdentityTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[IdentityTransaction]: ...


class SigningKeyStore(Protocol):
    """Where the token signing keys are kept across restarts."""

    async def load_or_create(self, create: Callable[[], SigningKey]) -> list[SigningKey]:
        """Every stored key; when there is none, `create` one and store it first."""
        ...


class ApiKeyTransaction(Protocol):
    """The records of the API keys issued, as seen inside one transaction."""

    async def get(self, key_id: str) -> ApiKey | None: ...
    async def add(self, key: ApiKey) -> None: ...
    async def revoke(self, key_id: str, when: datetime) -> None:
        """Mark the key revoked at `when`, unless it is revoked already."""
        ...

    async def page(self, consumer: str, before: Cursor | None, limit: int) -> list[ApiKey]:
        """Keys newest first, before `before`, of `consumer` (every consumer's if empty)."""
        ...

    async def revoked_page(
        self, since: datetime | None, now: datetime, after: Cursor | None, limit: int
    ) -> list[ApiKey]:
        """Keys revoked (at or after `since`) that have not expired at `now`, oldest
        first, after `after`."""
        ...

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...


class ApiKeyStore(Protocol):
    """Identity's database of API keys."""

    def transaction(self) -> AbstractAsyncContextManager[ApiKeyTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[ApiKeyTransaction]: ...
    @property
    def page_tokens(self) -> PageTokens: ...


class ApiKeySigningKeyStore(Protocol):
    """Where the keys that sign API keys are kept across restarts."""

    async def load_or_create(
        self, create: Callable[[], ApiKeySigningKey]
    ) -> list[ApiKeySigningKey]:
        """Every stored key; when there is none, `create` one and store it first."""
        ...
