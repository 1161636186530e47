"""The notifications composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, open_database
from services.notifications import saga
from services.notifications.adapters import MIGRATIONS, SqlNotificationsStore
from services.notifications.ports import NotificationsStore
from services.notifications.servicer import NotificationsServicer
from shop.notifications.v1 import notifications_service_pb2 as pb
from shop.notifications.v1 import notifications_service_pb2_grpc as pb_grpc


def registration(store: NotificationsStore) -> Registration:
    return Registration.of(NotificationsServicer(store), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlNotificationsStore(database)
    await start_event_bus(database, settings.nats, stack, saga.handlers(store.within))
    return [registration(store)]
