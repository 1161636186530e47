"""What the payments handlers need from the outside world, as interfaces.

The SQL store and the client of the processor service (`adapters.py`) and the unit
tests' in-memory fakes all implement them.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from mesh.runtime.money import Money
from services.payments.domain import Payment, ProviderDecision, Refund


class PaymentsTransaction(Protocol):
    """The payments, as seen inside one transaction."""

    async def get(self, payment_id: str) -> Payment | None: ...
    async def add(self, payment: Payment) -> None: ...
    async def save(self, payment: Payment) -> None: ...
    async def record_capture(self, payment: Payment) -> None:
        """Remember that `payment` was captured; fails if it was captured before."""
        ...

    async def record_refund(self, refund: Refund) -> None: ...
    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None: ...
    async def record_request(
        self, method: str, request_id: str, result: dict[str, Any]
    ) -> None: ...


class PaymentsStore(Protocol):
    """The payments database."""

    def transaction(self) -> AbstractAsyncContextManager[PaymentsTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[PaymentsTransaction]: ...


class PaymentProvider(Protocol):
    """The card processor that reserves money on a customer's card."""

    async def authorize(
        self, payment_token: str, amount: Money, idempotency_key: str
    ) -> ProviderDecision:
        """Approve or decline `amount` on the card behind `payment_token`.

        Raises `Unavailable` on a transient failure (retry with the same key),
        `InvalidArgument` for a token the provider does not know, and
        `FailedPrecondition` for a key it already answered for another token or amount.
        """
        ...
