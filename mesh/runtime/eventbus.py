"""A service's event bus: its outbox relay and, if it consumes events, its consumer.

`start_event_bus` is what a service's composition root calls (`services/*/bootstrap.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mesh.runtime.consumer import ConsumerMismatch, EventConsumer, Handler
from mesh.runtime.events import NatsSettings, OutboxRelay
from mesh.runtime.storage import Database

log = logging.getLogger(__name__)


#: Work of a service's own on the bus beside its relay and consumer (search's rebuilds),
#: running from the bus's connection until the event is set.
Worker = Callable[[JetStreamContext, asyncio.Event], Awaitable[None]]


async def start_event_bus(
    database: Database,
    settings: NatsSettings | None,
    stack: AsyncExitStack,
    handlers: Mapping[str, Handler] | None = None,
    workers: Sequence[Worker] = (),
) -> None:
    """Relay `database`'s outbox and, given `handlers`, consume events, until `stack` unwinds;
    `workers` run beside them on the same connection.

    It connects in the background, so a service starts (and its outbox fills) even while
    NATS is away; without settings, events wait in the outbox for a relay that has them.
    The consumer is the durable one named after the service (`settings.identity`), which
    all its replicas share: JetStream hands each message to one of them.
    """
    if settings is None:
        log.warning("no SHOP_NATS_URL: events stay in the outbox until a relay publishes them")
        return
    bus = _EventBus(database, settings, handlers or {}, workers)
    stack.push_async_callback(bus.stop)


class _EventBus:
    """The relay and the consumer of one service, running from construction to `stop`."""

    def __init__(
        self,
        database: Database,
        settings: NatsSettings,
        handlers: Mapping[str, Handler],
        workers: Sequence[Worker],
    ) -> None:
        self._database = database
        self._settings = settings
        self._handlers = handlers
        self._workers = workers
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._serve(), name="event-bus")
        self._task.add_done_callback(self._crash)

    async def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(Exception):  # reported by `_crash` already
            await self._task

    async def _serve(self) -> None:
        client = await self._connect()
        if client is None:
            return
        try:
            js = client.jetstream()
            loops: list[Awaitable[None]] = [OutboxRelay(self._database, js).run(self._stopping)]
            if self._handlers:
                loops.append(self._consume(js))
            loops += [work(js, self._stopping) for work in self._workers]
            await asyncio.gather(*loops)
        finally:
            await client.close()

    async def _connect(self) -> NatsClient | None:
        delay = 0.1
        while not self._stopping.is_set():
            try:
                return await self._settings.connect(
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5
                )
            except Exception as error:  # not up yet: try again
                log.warning("event bus: cannot reach NATS (%s); retrying", error)
                await self._pause(delay)
                delay = min(delay * 2, 5.0)
        return None

    async def _consume(self, js: JetStreamContext) -> None:
        name = self._settings.identity
        consumer = EventConsumer(self._database, js, name=name, handlers=self._handlers)
        while not self._stopping.is_set():
            try:
                await consumer.bind()
                break
            except ConsumerMismatch:
                raise
            except Exception as error:  # the mesh has not created it yet, NATS away
                log.warning("event bus: consumer %s not ready (%s)", name, error)
                await self._pause(1.0)
        await consumer.run(self._stopping)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the bus is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _crash(self, done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None and not self._stopping.is_set():
            log.critical("event bus stopped: %s", done.exception())
            os.kill(os.getpid(), signal.SIGTERM)  # let the supervisor restart the service
