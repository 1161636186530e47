"""A service's store port on SQL: its transactions, each seen through the service's view."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from mesh.runtime.connection import Connection
from mesh.runtime.pagination import PageTokens
from mesh.runtime.storage.database import Database
from mesh.runtime.storage.idempotency import find_request, record_request
from mesh.runtime.storage.outbox_events import enqueue_event
from shop.events.v1 import events_pb2


class SqlTransaction:
    """Base of a service's view of its database inside one transaction.

    A service subclasses it with its own queries; the request log comes with it.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return await find_request(self._connection, method, request_id)

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        await record_request(self._connection, method, request_id, result)

    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        """Put an event in the outbox, in this transaction (see `enqueue_event`)."""
        await enqueue_event(self._connection, envelope)


View = TypeVar("View", bound=SqlTransaction)


class SqlStore(Generic[View]):
    """A service's store port on SQL: transactions, each seen through the service's view."""

    def __init__(self, database: Database, view: Callable[[Connection], View]) -> None:
        self._database = database
        self._view = view

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[View]:
        """A write transaction (see `Database.transaction`)."""
        async with self._database.transaction() as connection:
            yield self._view(connection)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[View]:
        """A read-only transaction (see `Database.snapshot`)."""
        async with self._database.snapshot() as connection:
            yield self._view(connection)

    @property
    def page_tokens(self) -> PageTokens:
        """The service's page tokens (see `Database.page_tokens`)."""
        return self._database.page_tokens

    def within(self, connection: Connection) -> JoinedStore[View]:
        """This store inside `connection`'s open transaction (an event's, say)."""
        return JoinedStore(connection, self._view, self.page_tokens)


class JoinedStore(Generic[View]):
    """A store whose transactions are savepoints of one open transaction.

    A use case written against a store runs unchanged inside an event consumer's
    transaction: its writes commit with the event's record, and an error it raises
    rolls back its own writes (the savepoint) and nothing else.
    """

    def __init__(
        self, connection: Connection, view: Callable[[Connection], View], page_tokens: PageTokens
    ):
        self._connection = connection
        self._view = view
        self.page_tokens = page_tokens

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[View]:
        async with self._connection.begin_nested():
            yield self._view(self._connection)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[View]:
        yield self._view(self._connection)
