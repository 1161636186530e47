"""The event bus of a test's own: a real nats-server (JetStream, fsync always, TLS with the
mesh's certificates and per-identity permissions), and what the tests of the outbox
relay and of the consumers publish, count and run on it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext

from mesh.control import natsconf
from mesh.control.binaries import find_binary
from mesh.control.pki import MeshPKI
from mesh.control.plan import free_port
from mesh.control.topology import parse
from mesh.runtime import events
from mesh.runtime.storage import Migration
from shop.events.v1 import events_pb2
from tests.support.wait import wait_until

#: The table a test's consumer writes what it applied to.
LEDGER = (Migration(1, "ledger", ["CREATE TABLE ledger (event_id VARCHAR(36) NOT NULL)"]),)
TOPOLOGY = parse("services:\n  orders: {}\n  inventory: {consumes: [orders.order_placed]}\n")


@dataclass(frozen=True)
class Bus:
    port: int
    pki: MeshPKI

    def settings(self, identity: str) -> events.NatsSettings:
        self.pki.ensure(identity, identity)
        return natsconf.client_settings(self.pki, self.port, identity, identity)


@contextlib.contextmanager
def running_bus(directory: Path) -> Iterator[Bus]:
    """A nats-server configured as the mesh configures it, its files under `directory`,
    once JetStream is ready; stopped by its pid when the block ends."""
    port = free_port()
    pki = MeshPKI(directory / "pki", TOPOLOGY.trust_domain, TOPOLOGY.namespace)
    config = natsconf.write_config(TOPOLOGY, pki, directory / "nats", port)
    process = subprocess.Popen(
        [find_binary("nats-server"), "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = natsconf.admin_settings(pki, port)

    def ready() -> bool:
        assert process.poll() is None, "nats-server exited"
        return asyncio.run(natsconf.jetstream_ready(admin))

    try:
        wait_until(ready, "nats-server ready", 20, 0.05)
        yield Bus(port, pki)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.asynccontextmanager
async def service_jetstream(bus: Bus, identity: str) -> AsyncIterator[JetStreamContext]:
    """JetStream as the service `identity` sees it, replies awaited half a second."""
    client = await bus.settings(identity).connect(max_reconnect_attempts=2)
    try:
        yield client.jetstream(timeout=0.5)
    finally:
        await client.close()


def order_placed(order_id: str = "o1") -> events_pb2.EventEnvelope:
    return events_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        type="shop.events.v1.OrderPlaced",
        order_id=order_id,
        producer="orders",
        order_placed=events_pb2.OrderPlaced(order_id=order_id, customer_id="c1"),
    )


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


@contextlib.asynccontextmanager
async def running(
    loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
) -> AsyncIterator[None]:
    """`loop(stop)` (a relay's or a consumer's `run`) as a task for the length of the
    block; then stopped, and awaited, so an error it raised fails the test."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
