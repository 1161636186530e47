"""What shipping's handlers need from the outside world, as interfaces.

The SQL adapter (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from services.shipping.domain import Shipment


class ShippingTransaction(Protocol):
    """The shipments, as seen inside one transaction."""

    async def get(self, shipment_id: str) -> Shipment | None: ...
    async def get_by_order(self, order_id: str) -> Shipment | None: ...
    async def add(self, shipment: Shipment) -> None: ...
    async def save(self, shipment: Shipment) -> None: ...
    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...


class ShippingStore(Protocol):
    """Shipping's database."""

    def transaction(self) -> AbstractAsyncContextManager[ShippingTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[ShippingTransaction]: ...
