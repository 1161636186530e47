"""Notifications' part in the order saga: tell the customer each order's final outcome.

* `OrderConfirmed` -> an "order confirmed" notification.
* `OrderCancelled` -> an "order cancelled" notification with the reason.

One notification per order and outcome (`record_notification` keeps it so), however
often an event is delivered.
"""

from __future__ import annotations

from collections.abc import Callable

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.events import subject
from services.notifications.domain import NotificationKind
from services.notifications.handlers import RecordNotification, record_notification
from services.notifications.ports import NotificationsStore


def handlers(joined: Callable[[Connection], NotificationsStore]) -> dict[str, Handler]:
    """The handler of each subject notifications consumes."""

    async def confirmed(delivery: Delivery) -> None:
        event = delivery.envelope.order_confirmed
        command = RecordNotification(
            event.customer_id, event.order_id, NotificationKind.ORDER_CONFIRMED
        )
        async with delivery.transaction() as connection:
            await record_notification(joined(connection), command)

    async def cancelled(delivery: Delivery) -> None:
        event = delivery.envelope.order_cancelled
        command = RecordNotification(
            event.customer_id, event.order_id, NotificationKind.ORDER_CANCELLED, event.reason
        )
        async with delivery.transaction() as connection:
            await record_notification(joined(connection), command)

    return {
        subject("orders", "order_confirmed"): confirmed,
        subject("orders", "order_cancelled"): cancelled,
    }
