"""Notifications' part in the order saga: tell the customer each order's final outcome.

* `OrderConfirmed` -> an "order confirmed" notification.
* `OrderCancelled` -> an "order cancelled" notification with the reason.

One notification per order and outcome (`record_notification` keeps it so), however
often an event is delivered. Which notification an event asks for is a pure function
of the event (`NOTICES`); `handlers` records it in the event's transaction.
"""

from __future__ import annotations

from collections.abc import Callable

from mesh.runtime.connection import Connection
from mesh.runtime.consumer import Delivery, Handler
from mesh.runtime.events import subject
from services.notifications.domain import NotificationKind
from services.notifications.handlers import RecordNotification, record_notification
from services.notifications.ports import NotificationsStore
from shop.events.v1 import events_pb2

Notice = Callable[[events_pb2.EventEnvelope], RecordNotification]


def _confirmed(envelope: events_pb2.EventEnvelope) -> RecordNotification:
    event = envelope.order_confirmed
    return RecordNotification(event.customer_id, event.order_id, NotificationKind.ORDER_CONFIRMED)


def _cancelled(envelope: events_pb2.EventEnvelope) -> RecordNotification:
    event = envelope.order_cancelled
    return RecordNotification(
        event.customer_id, event.order_id, NotificationKind.ORDER_CANCELLED, event.reason
    )


#: The notification each subject notifications consumes asks for.
NOTICES: dict[str, Notice] = {
    subject("orders", "order_confirmed"): _confirmed,
    subject("orders", "order_cancelled"): _cancelled,
}


def handlers(joined: Callable[[Connection], NotificationsStore]) -> dict[str, Handler]:
    """The handler of each subject notifications consumes: each records its notice."""

    def notify(notice: Notice) -> Handler:
        async def handle(delivery: Delivery) -> None:
            command = notice(delivery.envelope)
            async with delivery.transaction() as connection:
                await record_notification(joined(connection), command)

        return handle

    return {name: notify(notice) for name, notice in NOTICES.items()}
