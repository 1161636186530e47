"""The orders' composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.admission import Backlog
from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, channel_to, open_database
from services.orders import saga
from services.orders.adapters import MIGRATIONS, GrpcCatalog, SqlOrdersStore
from services.orders.ports import Catalog, OrdersStore
from services.orders.servicer import OrdersServicer
from shop.orders.v1 import orders_service_pb2 as pb
from shop.orders.v1 import orders_service_pb2_grpc as pb_grpc


def registration(
    store: OrdersStore, catalog: Catalog, backlog: Backlog | None = None
) -> Registration:
    return Registration.of(OrdersServicer(store, catalog, backlog), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlOrdersStore(database)
    await start_event_bus(database, settings.nats, stack, saga.handlers(store.within))
    channel = channel_to(settings, "catalog", stack)
    return [registration(store, GrpcCatalog(channel), settings.limits.backlog)]
