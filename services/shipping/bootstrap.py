"""Shipping's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, open_database
from services.shipping import saga
from services.shipping.adapters import MIGRATIONS, SqlShippingStore
from services.shipping.ports import ShippingStore
from services.shipping.servicer import ShippingServicer
from shop.shipping.v1 import shipping_service_pb2 as pb
from shop.shipping.v1 import shipping_service_pb2_grpc as pb_grpc


def registration(store: ShippingStore) -> Registration:
    return Registration.of(ShippingServicer(store), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlShippingStore(database)
    await start_event_bus(database, settings.nats, stack, saga.handlers(store.within))
    return [registration(store)]
