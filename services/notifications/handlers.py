"""Notifications' use cases: each takes a command and the store, and returns domain objects."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.runtime.caller import acting_customer
from mesh.runtime.pagination import page_size
from mesh.runtime.storage import utc_now
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
    caller: str | None
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


async def list_notifications(
    store: NotificationsStore, query: ListNotifications
) -> NotificationPage:
    """One page of a customer's notifications, newest first, continuing after the token.

    A customer sees only their own: an empty customer_id means the caller.
    """
    customer_id = acting_customer(query.caller, query.customer_id)
    limit = page_size(query.page_size)
    filters = {"customer_id": customer_id}
    cursor = store.page_tokens.decode_time_cursor(query.page_token, filters)
    async with store.snapshot() as tx:
        rows = await tx.page(customer_id, cursor, limit + 1)
    notifications, more = rows[:limit], len(rows) > limit
    last = notifications[-1] if more else None
    token = store.page_tokens.encode_time_cursor(last.create_time, last.id, filters) if last else ""
    return NotificationPage(notifications, token)
