"""Rebuilding search's read model from the catalog's events, while the old one serves.

A rebuild is asked for by making search's rebuild consumer (`search_rebuild` on
`SHOP_ENTITIES`, from its first event: `mesh.runtime.consumer.request_rebuild`):
`meshctl events replay search --from-start` makes it, and so does search itself the
first time it starts, so a catalog older than `SHOP_EVENTS`' seven days is found too.
Every replica looks for that consumer every `POLL_SECONDS`; each one that finds it
works through it into the generation the rebuild names (the first replica to ask makes
it), while queries are answered from the serving generation and the live consumer
applies each new change to both. When the consumer has nothing left, pending or
unacknowledged, the new generation serves, the old one is dropped in the same
transaction, and the consumer is deleted: the rebuild is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from mesh.runtime import metrics
from mesh.runtime.consumer import request_rebuild
from mesh.runtime.events import ENTITIES_STREAM, rebuild_consumer
from services.search.handlers import EMPTY, SemanticIndex, apply_to
from services.search.ports import SearchStore
from services.search.projection import SUBJECTS, embeddings_of, indexed
from shop.events.v1 import events_pb2

log = logging.getLogger(__name__)

#: How often each replica looks for a rebuild to work on.
POLL_SECONDS = 2.0
FETCH_BATCH = 64


class Rebuilder:
    """Works through search's rebuild consumer whenever there is one (see module doc)."""

    def __init__(self, store: SearchStore, index: SemanticIndex, service: str = "search") -> None:
        self._store = store
        self._index = index
        self._service = service
        self._name = rebuild_consumer(service)

    async def run(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """Until `stop`: the first build if none was made yet, then every rebuild asked for."""
        while not stop.is_set():
            try:
                await self._first_build(js)
                info = await self._rebuild(js)
                if info is not None:
                    await self._build(js, info, stop)
            except Exception as error:  # NATS or the database away: look again later
                log.warning("search rebuild: %s: %s", type(error).__name__, error)
            await _pause(stop, POLL_SECONDS)

    async def _first_build(self, js: JetStreamContext) -> None:
        async with self._store.snapshot() as tx:
            first = await tx.serving_rebuild() == EMPTY
        if first:
            await request_rebuild(js, self._service, SUBJECTS, again=False)

    async def _rebuild(self, js: JetStreamContext) -> ConsumerInfo | None:
        with contextlib.suppress(NotFoundError):
            info: ConsumerInfo = await js.consumer_info(ENTITIES_STREAM, self._name)
            return info
        return None

    async def _build(self, js: JetStreamContext, info: ConsumerInfo, stop: asyncio.Event) -> None:
        rebuild = str(info.created)
        async with self._store.transaction() as tx:
            generation = await tx.begin_generation(rebuild)
        log.info("search: building generation %d from %d events", generation, info.num_pending)
        subscription = await js.pull_subscribe_bind(consumer=self._name, stream=ENTITIES_STREAM)
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=1.0)
                except TimeoutError:
                    messages = []
                if messages:
                    await self._apply(generation, messages)
                if (not messages or messages[-1].metadata.num_pending == 0) and (
                    await self._finished(js, rebuild, generation)
                ):
                    return
        except NotFoundError:  # another replica finished it, or a newer rebuild replaced it
            return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _apply(self, generation: int, messages: Sequence[Msg]) -> None:
        changes, taken = [], []
        for message in messages:
            try:
                changes.append(indexed(events_pb2.EventEnvelope.FromString(message.data)))
                taken.append(message)
            except (DecodeError, ValueError) as error:
                log.warning("search rebuild: skipped %s: %s", message.subject, error)
                await message.term()
        embeddings = await embeddings_of(self._index, changes)
        await apply_to(self._store, generation, list(zip(changes, embeddings, strict=True)))
        for message in taken:
            await message.ack()
        metrics.CONSUMER_PENDING.labels(self._name).set(messages[-1].metadata.num_pending or 0)

    async def _finished(self, js: JetStreamContext, rebuild: str, generation: int) -> bool:
        """Whether the rebuild is over: caught up (then promoted here), or gone."""
        info = await self._rebuild(js)
        if info is None or str(info.created) != rebuild:
            return True
        if info.num_pending or info.num_ack_pending:
            return False
        async with self._store.transaction() as tx:
            promoted = await tx.promote(generation)
        if promoted:
            log.info("search: generation %d serves; the one before it is dropped", generation)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(ENTITIES_STREAM, self._name)
        with contextlib.suppress(KeyError):  # shown while a rebuild runs, not after
            metrics.CONSUMER_PENDING.remove(self._name)
        return True


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
