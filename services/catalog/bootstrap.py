"""The catalog's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, channel_to, open_database
from services.catalog.adapters import MIGRATIONS, GrpcStockLevels, SqlCatalogStore
from services.catalog.ports import CatalogStore, StockLevels
from services.catalog.servicer import CatalogServicer
from shop.catalog.v1 import catalog_service_pb2 as pb
from shop.catalog.v1 import catalog_service_pb2_grpc as pb_grpc


def registration(store: CatalogStore, inventory: StockLevels) -> Registration:
    return Registration.of(CatalogServicer(store, inventory), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    channel = channel_to(settings, "inventory", stack)
    return [registration(SqlCatalogStore(database), GrpcStockLevels(channel))]
