"""The catalog's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, channel_to, open_database
from services.catalog.adapters import MIGRATIONS, GrpcStockLevels, SqlCatalogStore
from services.catalog.handlers import announce_existing_products
from services.catalog.ports import CatalogStore, StockLevels
from services.catalog.servicer import CatalogServicer
from services.catalog.servicer_v2 import CatalogServicerV2
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc
from shop.catalog.v2 import catalog_service_pb2 as pb_v2
from shop.catalog.v2 import catalog_service_pb2_grpc as pb_v2_grpc


def registrations(store: CatalogStore, inventory: StockLevels) -> list[Registration]:
    """Both versions of the catalog's API, `shop.catalog.v1` and `shop.catalog.v2`, served
    by one process over the same store."""
    return [
        Registration.of(CatalogServicer(store, inventory), pb, pb_grpc),
        Registration.of(CatalogServicerV2(store, inventory), pb_v2, pb_v2_grpc),
    ]


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlCatalogStore(database)
    await announce_existing_products(store)
    await start_event_bus(database, settings.nats, stack)  # its products' changes
    channel = channel_to(settings, "inventory", stack)
    return registrations(store, GrpcStockLevels(channel))
