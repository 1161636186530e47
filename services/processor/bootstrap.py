"""The processor's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, open_database
from services.processor.adapters import MIGRATIONS, SqlProcessorStore
from services.processor.ports import ProcessorStore
from services.processor.servicer import ProcessorServicer
from shop.processor.v1 import processor_service_pb2 as pb
from shop.processor.v1 import processor_service_pb2_grpc as pb_grpc


def registration(store: ProcessorStore) -> Registration:
    return Registration.of(ProcessorServicer(store), pb, pb_grpc)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    database = await open_database(settings, MIGRATIONS, stack)
    return [registration(SqlProcessorStore(database))]
