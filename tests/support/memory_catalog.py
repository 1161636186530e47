"""The catalog's ports in memory, for the tests of its rules, use cases and servicers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from mesh.runtime.errors import Unavailable
from mesh.runtime.pagination import PageTokens
from services.catalog.domain import Product
from services.catalog.ports import CatalogTransaction, InventoryUnreachable
from shop.events.v1 import events_pb2


class MemoryCatalog:
    """The CatalogStore port in memory (transactions are not isolated: single-task tests)."""

    def __init__(self) -> None:
        self.products: dict[str, Product] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}
        #: The events of every transaction, in the order enqueued (none is rolled back).
        self.events: list[events_pb2.EventEnvelope] = []
        self.announcements: set[str] = set()
        self.page_tokens = PageTokens(b"a key for tests")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[CatalogTransaction]:
        yield self

    snapshot = transaction

    async def get(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    async def get_many(self, product_ids: list[str]) -> list[Product]:
        return [self.products[i] for i in product_ids if i in self.products]

    async def add(self, product: Product) -> None:
        self.products[product.id] = product

    async def save(self, product: Product) -> None:
        self.products[product.id] = product

    async def delete(self, product_id: str) -> bool:
        return self.products.pop(product_id, None) is not None

    async def page(
        self, category: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Product]:
        rows = sorted(self.products.values(), key=lambda p: (p.create_time, p.id))
        rows = [p for p in rows if not category or p.category == category]
        rows = [p for p in rows if after is None or (p.create_time, p.id) > after]
        return rows[:limit]

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.requests[(method, request_id)] = result

    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        self.events.append(envelope)

    async def announced(self, name: str) -> bool:
        return name in self.announcements

    async def record_announcement(self, name: str) -> None:
        self.announcements.add(name)


class RecordingInventory:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.fail = fail
        self.reads: list[list[str]] = []

    async def set_stock(self, product_id: str, on_hand: int, request_id: str) -> None:
        self.calls.append((product_id, on_hand, request_id))
        if self.fail:
            raise Unavailable("inventory is down", reason="INVENTORY_UNAVAILABLE")

    async def available(self, product_ids: Sequence[str]) -> dict[str, int]:
        """The units set by the last `set_stock` of each product (reservations aside)."""
        self.reads.append(list(product_ids))
        if self.fail:
            raise InventoryUnreachable("UNAVAILABLE")
        levels = {product_id: on_hand for product_id, on_hand, _ in self.calls}
        return {pid: levels[pid] for pid in product_ids if pid in levels}
