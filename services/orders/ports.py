"""What the orders' handlers need from the outside world, as interfaces.

The SQL and gRPC adapters (`adapters.py`) and the unit tests' in-memory fakes both
implement them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from mesh.runtime.pagination import PageTokens
from services.orders.domain import Order, OrderStatus, PricedProduct
from shop.events.v1 import events_pb2


class OrdersTransaction(Protocol):
    """The orders with their lines and history, as seen inside one transaction."""

    async def get(self, order_id: str) -> Order | None: ...
    async def add(self, order: Order) -> None: ...
    async def save(self, order: Order, *, was: OrderStatus) -> bool:
        """Store `order` if it is still in status `was`; False if it no longer is."""
        ...

    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Order]:
        """The customer's orders, newest first, after the (create_time, id) `before`."""
        ...

    async def count_pending(
        self, placed_since: datetime, limit: int, customer_id: str | None = None
    ) -> int:
        """How many orders (of `customer_id`, if given) placed since `placed_since` are
        PENDING, counted up to `limit`."""
        ...

    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        """Publish `envelope` if, and only if, this transaction commits (the outbox)."""
        ...

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...


class OrdersStore(Protocol):
    """The orders' database."""

    def transaction(self) -> AbstractAsyncContextManager[OrdersTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[OrdersTransaction]: ...

    @property
    def page_tokens(self) -> PageTokens:
        """Its page tokens, signed with the service's key."""
        ...


class Catalog(Protocol):
    """The catalog service, as far as orders need it."""

    async def products(self, ids: Sequence[str]) -> dict[str, PricedProduct]:
        """The products with these ids; raises `ProductNotInCatalog` for an unknown one."""
        ...
