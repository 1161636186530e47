"""Search's composition root: every adapter is chosen here, and only here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack

from mesh.runtime import metrics
from mesh.runtime.eventbus import start_event_bus
from mesh.runtime.runner import Registration
from mesh.runtime.service import ServiceSettings, open_database
from services.search import projection
from services.search.adapters import MIGRATIONS, SqlSearchStore
from services.search.embeddings import EmbedderChoice, load_embedder
from services.search.handlers import SemanticIndex, open_read_model
from services.search.ports import SearchStore
from services.search.rebuild import Rebuilder
from services.search.servicer import SearchServicer
from shop.search.v1 import search_service_pb2 as pb
from shop.search.v1 import search_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def registration(store: SearchStore, index: SemanticIndex) -> Registration:
    return Registration.of(SearchServicer(store, index), pb, pb_grpc)


def report(choice: EmbedderChoice) -> None:
    """Say which ranking search runs with: in its log and in its health details."""
    if choice.embedder is None:
        log.warning("search ranks by keywords alone: %s", choice.note)
        metrics.FEATURE_OFF.labels("semantic ranking", choice.note).set(1)
    else:
        log.info("search ranks by keywords and meaning: %s", choice.note)


async def bootstrap(settings: ServiceSettings, stack: AsyncExitStack) -> Sequence[Registration]:
    choice = load_embedder()
    report(choice)
    index = SemanticIndex(choice.embedder)
    database = await open_database(settings, MIGRATIONS, stack)
    store = SqlSearchStore(database)
    await open_read_model(store)
    rebuilder = Rebuilder(store, index)
    await start_event_bus(
        database,
        settings.nats,
        stack,
        projection.handlers(store.within, index),
        workers=[rebuilder.run],
    )
    return [registration(store, index)]
