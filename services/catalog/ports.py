"""What the catalog's handlers need from the outside world, as interfaces.

The SQL adapter (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from mesh.runtime.pagination import PageTokens
from services.catalog.domain import Product
from shop.events.v1 import events_pb2


class CatalogTransaction(Protocol):
    """The products, as seen inside one transaction."""

    async def get(self, product_id: str) -> Product | None: ...
    async def get_many(self, product_ids: list[str]) -> list[Product]: ...
    async def add(self, product: Product) -> None: ...
    async def save(self, product: Product) -> None: ...
    async def delete(self, product_id: str) -> bool: ...
    async def page(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Product]: ...
    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...
    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        """Publish `envelope` once this transaction commits (the outbox)."""
        ...

    async def announced(self, name: str) -> bool:
        """Whether the one-off announcement `name` was made (`record_announcement`)."""
        ...

    async def record_announcement(self, name: str) -> None: ...


class CatalogStore(Protocol):
    """The catalog's database."""

    def transaction(self) -> AbstractAsyncContextManager[CatalogTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[CatalogTransaction]: ...

    @property
    def page_tokens(self) -> PageTokens:
        """Its page tokens, signed with the service's key."""
        ...


class InventoryUnreachable(Exception):
    """The inventory service did not answer in time: it is stopped, unreachable, at its
    limit or too slow. The message names the status the call ended with."""


class StockLevels(Protocol):
    """The inventory service, as far as the catalog needs it."""

    async def set_stock(self, product_id: str, on_hand: int, request_id: str) -> None: ...

    async def available(self, product_ids: Sequence[str]) -> dict[str, int]:
        """The units available of each of these products that has a stock level, in one
        call; `InventoryUnreachable` when inventory does not answer in time, a
        `ServiceError` when it fails otherwise."""
        ...
