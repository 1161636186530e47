"""What the processor's handlers need from the outside world, as interfaces.

The SQL adapter (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from services.processor.domain import Authorization


class ProcessorTransaction(Protocol):
    """The processor's memory, as seen inside one transaction."""

    async def find(self, idempotency_key: str) -> Authorization | None:
        """The answer already given for this key, if any."""
        ...

    async def add(self, authorization: Authorization) -> None: ...
    async def failed_before(self, idempotency_key: str) -> bool:
        """Whether an attempt with this key already failed transiently."""
        ...

    async def record_transient_failure(self, idempotency_key: str, now: datetime) -> None: ...


class ProcessorStore(Protocol):
    """The processor's database."""

    def transaction(self) -> AbstractAsyncContextManager[ProcessorTransaction]: ...
