"""Notifications' messages and use cases, against an in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from mesh.runtime.errors import InvalidArgument, PermissionDenied, Unauthenticated
from mesh.runtime.pagination import PageTokens
from services.notifications import handlers
from services.notifications.domain import (
    Notification,
    NotificationChannel,
    NotificationKind,
    compose_notification,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONFIRMED, CANCELLED = NotificationKind.ORDER_CONFIRMED, NotificationKind.ORDER_CANCELLED


class InMemoryNotifications:
    """The store's ports over a list."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self.page_tokens = PageTokens(b"a key for tests")

    async def find(self, order_id: str, kind: NotificationKind) -> Notification | None:
        return next(
            (n for n in self.notifications if (n.order_id, n.kind) == (order_id, kind)), None
        )

    async def add(self, notification: Notification) -> None:
        self.notifications.append(notification)

    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        mine = sorted(
            (n for n in self.notifications if n.customer_id == customer_id),
            key=lambda n: (n.create_time, n.id),
            reverse=True,
        )
        if before is not None:
            mine = [n for n in mine if (n.create_time, n.id) < before]
        return mine[:limit]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryNotifications]:
        yield self

    def snapshot(self) -> Any:
        return self.transaction()


def test_a_confirmation_is_an_email_naming_the_order() -> None:
    notification = compose_notification(
        customer_id="c1", order_id="o-42", kind=CONFIRMED, reason="", now=NOW
    )
    assert notification.channel is NotificationChannel.EMAIL
    assert notification.subject == "Your order o-42 is confirmed"
    assert "o-42" in notification.body
    assert notification.create_time == NOW


def test_a_cancellation_tells_the_reason_and_that_nothing_was_charged() -> None:
    notification = compose_notification(
        customer_id="c1", order_id="o-42", kind=CANCELLED, reason="payment declined.", now=NOW
    )
    assert notification.subject == "Your order o-42 was cancelled"
    assert notification.body == (
        "We are sorry: order o-42 was cancelled because payment declined. "
        "You have not been charged."
    )


def test_a_cancellation_without_a_reason_still_reads_well() -> None:
    notification = compose_notification(
        customer_id="c1", order_id="o-42", kind=CANCELLED, reason=" ", now=NOW
    )
    assert "cancelled. You have not been charged." in notification.body


def test_a_notification_needs_a_customer_and_an_order() -> None:
    with pytest.raises(InvalidArgument) as failure:
        compose_notification(customer_id="", order_id=" ", kind=CONFIRMED, reason="", now=NOW)
    assert [v.field for v in failure.value.violations] == ["customer_id", "order_id"]


async def test_recording_an_outcome_twice_keeps_the_first_notification() -> None:
    store = InMemoryNotifications()
    first = await handlers.record_notification(
        store, handlers.RecordNotification("c1", "o1", CANCELLED, "out of stock")
    )
    again = await handlers.record_notification(
        store, handlers.RecordNotification("c1", "o1", CANCELLED, "payment declined")
    )
    assert again == first
    assert store.notifications == [first]


async def test_each_outcome_of_an_order_is_its_own_notification() -> None:
    store = InMemoryNotifications()
    for kind in (CONFIRMED, CANCELLED):
        await handlers.record_notification(store, handlers.RecordNotification("c1", "o1", kind))
    assert {n.kind for n in store.notifications} == {CONFIRMED, CANCELLED}


async def test_a_customer_lists_their_own_notifications_only() -> None:
    store = InMemoryNotifications()
    await handlers.record_notification(store, handlers.RecordNotification("c1", "o1", CONFIRMED))
    mine = await handlers.list_notifications(store, handlers.ListNotifications("c1", "", 0, ""))
    assert [n.order_id for n in mine.notifications] == ["o1"]
    with pytest.raises(PermissionDenied):
        await handlers.list_notifications(store, handlers.ListNotifications("c2", "c1", 0, ""))


async def test_listing_refuses_a_page_token_it_did_not_issue() -> None:
    with pytest.raises(InvalidArgument) as failure:
        await handlers.list_notifications(
            InMemoryNotifications(), handlers.ListNotifications("c1", "", 0, "garbage!")
        )
    assert [v.field for v in failure.value.violations] == ["page_token"]


@pytest.mark.parametrize("named", ["", "c1"])
async def test_listing_without_a_caller_is_refused(named: str) -> None:
    with pytest.raises(Unauthenticated):
        await handlers.list_notifications(
            InMemoryNotifications(), handlers.ListNotifications(None, named, 0, "")
        )
