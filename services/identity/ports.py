"""What identity's handlers need from the outside world, as interfaces.

The SQL adapters (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from services.identity.domain import User
from services.identity.tokens import SigningKey


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
