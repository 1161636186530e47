"""What the notifications handlers need from the outside world, as interfaces.

The SQL adapter (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from mesh.runtime.pagination import PageTokens
from services.notifications.domain import Notification, NotificationKind


class NotificationsTransaction(Protocol):
    """The notifications, as seen inside one transaction."""

    async def find(self, order_id: str, kind: NotificationKind) -> Notification | None: ...
    async def add(self, notification: Notification) -> None: ...
    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        """The customer's notifications newest first, after the cursor `before`."""
        ...


class NotificationsStore(Protocol):
    """The notifications database."""

    def transaction(self) -> AbstractAsyncContextManager[NotificationsTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[NotificationsTransaction]: ...

    @property
    def page_tokens(self) -> PageTokens:
        """Its page tokens, signed with the service's key."""
        ...
