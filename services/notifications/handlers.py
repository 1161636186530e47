"""Notifications' use cases: each takes a command and the store, and returns domain objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mesh.errors import FieldViolation, InvalidArgument
from mesh.pagination import decode_token, encode_token, page_size
from mesh.storage import utc_now
from services.notifications.domain import Notification, NotificationKind, compose_notification
from services.notifications.ports import NotificationsStore


@dataclass(frozen=True)
class RecordNotification:
    """Tell a customer about an order's final outcome (from OrderConfirmed/OrderCancelled)."""

    customer_id: str
    order_id: str
    kind: NotificationKind
    reason: str = ""


@dataclass(frozen=True)
class ListNotifications:
    customer_id: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class NotificationPage:
    notifications: list[Notification]
    next_page_token: str


async def record_notification(
    store: NotificationsStore, command: RecordNotification
) -> Notification:
    """Record the notification of an order's outcome, once: a redelivered event gets the first.

    The (order_id, kind) pair is unique in the database too, so the rule holds even when
    two consumers race on a database without SQLite's serialized writers.
    """
    async with store.transaction() as tx:
        existing = await tx.find(command.order_id, command.kind)
        if existing is not None:
            return existing
        notification = compose_notification(
            customer_id=command.customer_id,
            order_id=command.order_id,
            kind=command.kind,
            reason=command.reason,
            now=utc_now(),
        )
        await tx.add(notification)
    return notification


def _cursor(after: dict[str, Any]) -> tuple[datetime, str]:
    try:
        return datetime.fromisoformat(after["create_time"]), str(after["id"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.of(
            [FieldViolation("page_token", "page_token is not a token this service issued.")]
        ) from None


async def list_notifications(
    store: NotificationsStore, query: ListNotifications
) -> NotificationPage:
    """One page of a customer's notifications, newest first, continuing after the token."""
    # The contract lets an empty customer_id mean "the caller", but caller identity is not
    # wired into this service yet; until it is, the customer must be named explicitly.
    if not query.customer_id:
        raise InvalidArgument.of(
            [FieldViolation("customer_id", "The customer_id is required for now.", "REQUIRED")]
        )
    limit = page_size(query.page_size)
    filters = {"customer_id": query.customer_id}
    after = decode_token(query.page_token, filters)
    cursor = _cursor(after) if after else None
    async with store.snapshot() as tx:
        rows = await tx.page(query.customer_id, cursor, limit + 1)
    notifications, more = rows[:limit], len(rows) > limit
    token = ""
    if more:
        last = notifications[-1]
        token = encode_token({"create_time": last.create_time.isoformat(), "id": last.id}, filters)
    return NotificationPage(notifications, token)
