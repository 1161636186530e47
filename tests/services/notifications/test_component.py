"""Notifications over real gRPC, on a real database (SQLite, Postgres), seeded by the handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.exc import IntegrityError

from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.pagination import PageTokens
from mesh.runtime.storage import Database
from services.notifications import handlers
from services.notifications.adapters import MIGRATIONS, SqlNotificationsStore
from services.notifications.bootstrap import registration
from services.notifications.domain import NotificationKind, compose_notification
from shop.notifications.v1 import notifications_service_pb2 as pb
from shop.notifications.v1 import notifications_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, field_violations, serving

pytestmark = pytest.mark.integration

CONFIRMED, CANCELLED = NotificationKind.ORDER_CONFIRMED, NotificationKind.ORDER_CANCELLED
SAME_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def database(databases: Databases, tmp_path: Path) -> AsyncIterator[Database]:
    async with databases.open(tmp_path, "notifications", MIGRATIONS) as database:
        yield database


@pytest.fixture
def store(database: Database) -> SqlNotificationsStore:
    return SqlNotificationsStore(database)


@pytest.fixture
async def notifications(store: SqlNotificationsStore) -> AsyncIterator[Any]:
    async with serving(registration(store)) as channel:
        yield pb_grpc.NotificationsServiceStub(channel)


async def record(
    store: SqlNotificationsStore,
    customer_id: str,
    order_id: str,
    kind: NotificationKind = CONFIRMED,
    reason: str = "",
) -> str:
    notification = await handlers.record_notification(
        store, handlers.RecordNotification(customer_id, order_id, kind, reason)
    )
    return notification.id


def as_customer(customer_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call the edge passes on for a customer's token."""
    return ((SUBJECT_METADATA_KEY, customer_id),)


async def list_all(notifications: Any, customer_id: str, page_size: int) -> list[pb.Notification]:
    seen: list[pb.Notification] = []
    token = ""
    while True:
        page = await notifications.ListNotifications(
            pb.ListNotificationsRequest(
                customer_id=customer_id, page_size=page_size, page_token=token
            ),
            metadata=as_customer(customer_id),
        )
        assert len(page.notifications) <= page_size
        seen += page.notifications
        token = page.next_page_token
        if not token:
            return seen


async def test_a_recorded_notification_is_listed_as_sent(
    store: SqlNotificationsStore, notifications: Any
) -> None:
    await record(store, "c1", "o1", CANCELLED, "payment declined")
    listed = (
        await notifications.ListNotifications(
            pb.ListNotificationsRequest(customer_id="c1"), metadata=as_customer("c1")
        )
    ).notifications
    assert len(listed) == 1
    (sent,) = listed
    assert (sent.customer_id, sent.order_id) == ("c1", "o1")
    assert sent.kind == pb.NOTIFICATION_KIND_ORDER_CANCELLED
    assert sent.channel == pb.NOTIFICATION_CHANNEL_EMAIL
    assert sent.subject == "Your order o1 was cancelled"
    assert "payment declined" in sent.body
    assert sent.create_time.seconds > 0


async def test_list_pages_newest_first_and_only_the_customers_own(
    store: SqlNotificationsStore, notifications: Any
) -> None:
    mine = [await record(store, "c1", f"o{i}") for i in range(7)]
    await record(store, "c2", "other-order")
    listed = await list_all(notifications, "c1", page_size=3)
    assert [n.id for n in listed] == list(reversed(mine))
    assert {n.customer_id for n in listed} == {"c1"}


async def test_equal_times_are_ordered_by_id_and_paged_without_gaps(
    store: SqlNotificationsStore, notifications: Any
) -> None:
    sent = [
        compose_notification(
            customer_id="c1",
            order_id=f"o{i}",
            kind=CONFIRMED,
            reason="",
            now=SAME_TIME,
        )
        for i in range(5)
    ]
    async with store.transaction() as tx:
        for notification in sent:
            await tx.add(notification)
    listed = await list_all(notifications, "c1", page_size=2)
    assert [n.id for n in listed] == sorted((n.id for n in sent), reverse=True)


async def test_recording_an_outcome_again_leaves_one_notification(
    store: SqlNotificationsStore, notifications: Any
) -> None:
    first = await record(store, "c1", "o1", CANCELLED, "out of stock")
    again = await record(store, "c1", "o1", CANCELLED, "out of stock")
    confirmed = await record(store, "c1", "o2", CONFIRMED)
    assert again == first
    listed = await list_all(notifications, "c1", page_size=10)
    assert [n.id for n in listed] == [confirmed, first]


async def test_the_database_allows_one_notification_per_outcome(
    store: SqlNotificationsStore,
) -> None:
    await record(store, "c1", "o1", CONFIRMED)
    duplicate = compose_notification(
        customer_id="c1", order_id="o1", kind=CONFIRMED, reason="", now=SAME_TIME
    )
    with pytest.raises(IntegrityError):
        async with store.transaction() as tx:
            await tx.add(duplicate)


async def test_a_customer_without_notifications_gets_an_empty_page(
    notifications: Any,
) -> None:
    page = await notifications.ListNotifications(
        pb.ListNotificationsRequest(), metadata=as_customer("c9")
    )
    assert list(page.notifications) == []
    assert page.next_page_token == ""


@pytest.mark.parametrize(
    ("request_fields", "violation"),
    [
        ({"customer_id": "c1", "page_size": -1}, "page_size"),
        ({"customer_id": "c1", "page_token": "not-a-token"}, "page_token"),
        (
            {
                "customer_id": "c1",
                "page_token": PageTokens(b"not the service's key").encode_time_cursor(
                    SAME_TIME, "x", {"customer_id": "c1"}
                ),
            },
            "page_token",
        ),
    ],
    ids=["negative-page-size", "garbage-token", "forged-token"],
)
async def test_bad_list_requests_name_the_field(
    notifications: Any, request_fields: dict[str, Any], violation: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await notifications.ListNotifications(
            pb.ListNotificationsRequest(**request_fields), metadata=as_customer("c1")
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == [violation]


@pytest.mark.parametrize("named", ["", "c1"], ids=["no-one-named", "a-customer-named"])
async def test_a_list_without_a_caller_is_refused(notifications: Any, named: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await notifications.ListNotifications(pb.ListNotificationsRequest(customer_id=named))
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_customer_may_not_list_anothers_notifications(notifications: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await notifications.ListNotifications(
            pb.ListNotificationsRequest(customer_id="c1"), metadata=as_customer("c2")
        )
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_token_cannot_be_reused_for_another_customer(
    store: SqlNotificationsStore, notifications: Any
) -> None:
    for i in range(3):
        await record(store, "c1", f"o{i}")
    page = await notifications.ListNotifications(
        pb.ListNotificationsRequest(customer_id="c1", page_size=1), metadata=as_customer("c1")
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await notifications.ListNotifications(
            pb.ListNotificationsRequest(page_token=page.next_page_token),
            metadata=as_customer("c2"),
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(failure.value) == ["page_token"]


async def test_data_survives_a_restart(databases: Databases, tmp_path: Path) -> None:
    async with databases.open(tmp_path, "notifications", MIGRATIONS) as database:
        store = SqlNotificationsStore(database)
        first = await record(store, "c1", "o1")
    async with databases.open(tmp_path, "notifications", MIGRATIONS) as database:
        assert await database.applied_versions() == [1]
        store = SqlNotificationsStore(database)
        assert await record(store, "c1", "o1") == first
        async with serving(registration(store)) as channel:
            listed = await list_all(pb_grpc.NotificationsServiceStub(channel), "c1", page_size=5)
    assert [n.id for n in listed] == [first]
