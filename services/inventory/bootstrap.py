"""The inventory's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, open_database
from services.inventory import saga
from services.inventory.adapters import MIGRATIONS, SqlInventoryStore
from services.inventory.ports import InventoryStore
from services.inventory.servicer import InventoryServicer
from shop.inventory.v1 import inventory_service_pb2 as pb
from shop.inventory.v1 import inventory_service_pb2_grpc as pb_grpc


def registration(store: InventoryStore) -> Registration:
    return Registration.of(InventoryServicer(store), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlInventoryStore(database)
    await start_event_bus(database, settings.nats, stack, saga.handlers(store.within))
    return [registration(store)]
