"""The notifications gRPC face: protobuf in, query to a handler, protobuf out."""

from __future__ import annotations

from typing import Any

from mesh.runtime.caller import caller_subject
from mesh.runtime.timestamps import to_timestamp
from services.notifications import handlers
from services.notifications.domain import Notification, NotificationChannel, NotificationKind
from services.notifications.ports import NotificationsStore
from shop.notifications.v1 import notifications_service_pb2 as pb
from shop.notifications.v1 import notifications_service_pb2_grpc as pb_grpc

_KINDS = {
    NotificationKind.ORDER_CONFIRMED: pb.NOTIFICATION_KIND_ORDER_CONFIRMED,
    NotificationKind.ORDER_CANCELLED: pb.NOTIFICATION_KIND_ORDER_CANCELLED,
}
_CHANNELS = {NotificationChannel.EMAIL: pb.NOTIFICATION_CHANNEL_EMAIL}


def to_proto(notification: Notification) -> pb.Notification:
    return pb.Notification(
        id=notification.id,
        customer_id=notification.customer_id,
        order_id=notification.order_id,
        kind=_KINDS[notification.kind],
        channel=_CHANNELS[notification.channel],
        subject=notification.subject,
        body=notification.body,
        create_time=to_timestamp(notification.create_time),
    )


class NotificationsServicer(pb_grpc.NotificationsServiceServicer):
    def __init__(self, store: NotificationsStore) -> None:
        self._store = store

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Any
    ) -> pb.ListNotificationsResponse:
        page = await handlers.list_notifications(
            self._store,
            handlers.ListNotifications(
                caller_subject(context), request.customer_id, request.page_size, request.page_token
            ),
        )
        return pb.ListNotificationsResponse(
            notifications=[to_proto(n) for n in page.notifications],
            next_page_token=page.next_page_token,
        )
