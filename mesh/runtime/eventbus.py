"""A service's event bus: its outbox relay and, if it consumes events, its consumer.

`start_event_bus` is what a service's composition root calls (`services/*/bootstrap.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from contextlib import AsyncExitStack

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mesh.runtime.consumer import ConsumerMismatch, EventConsumer, Handler
from mesh.runtime.events import NatsSettings, OutboxRelay
from mesh.runtime.storage import Database

log = logging.getLogger(__name__)


async def start_event_bus(
    database: Database,
    settings: NatsSettings | None,
    stack: AsyncExitStack,
    handlers: Mapping[str, Handler] | None = None,
) -> None:
    """Relay `database`'s outbox and, given `handlers`, consume events, until `stack` unwinds.

    It connects in the background, so a service starts (and its outbox fills) even while
    NATS is away; without settings, events wait in the outbox for a relay that has them.
    The consumer is the durable one named after the service (`settings.identity`), which
    all its replicas share: JetStream hands each message to one of them.
    """
    if settings is None:
        log.warning("no SHOP_NATS_URL: events stay in the outbox until a relay publishes them")
        return
    stop = asyncio.Event()

    async def connect() -> NatsClient | None:
        delay = 0.1
        while not stop.is_set():
            try:
                return await settings.connect(max_reconnect_attempts=-1, reconnect_time_wait=0.5)
            except Exception as error:  # not up yet: try again
                log.warning("event bus: cannot reach NATS (%s); retrying", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
        return None

    async def consume(js: JetStreamContext) -> None:
        assert handlers
        consumer = EventConsumer(database, js, name=settings.identity, handlers=handlers)
        while not stop.is_set():
            try:
                await consumer.bind()
                break
            except ConsumerMismatch:
                raise
            except Exception as error:  # the mesh has not created it yet, NATS away
                log.warning("event bus: consumer %s not ready (%s)", settings.identity, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
        await consumer.run(stop)

    async def serve() -> None:
        client = await connect()
        if client is None:
            return
        try:
            js = client.jetstream()
            loops = [OutboxRelay(database, js).run(stop)]
            if handlers:
                loops.append(consume(js))
            await asyncio.gather(*loops)
        finally:
            await client.close()

    task = asyncio.create_task(serve(), name="event-bus")

    def crash(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None and not stop.is_set():
            log.critical("event bus stopped: %s", done.exception())
            os.kill(os.getpid(), signal.SIGTERM)  # let the supervisor restart the service

    task.add_done_callback(crash)

    async def stop_bus() -> None:
        stop.set()
        with contextlib.suppress(Exception):  # reported by `crash` already
            await task

    stack.push_async_callback(stop_bus)
