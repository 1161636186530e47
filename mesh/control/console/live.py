"""The map's numbers, read once a window for every browser that watches.

One task reads the links' and services' counters (`measure.read_all`) and the supervisor's
`state.json` every `WINDOW_SECONDS`, and keeps the latest figures; each open page's
event stream waits for the next figures and sends them. However many pages are open,
the Envoys and apps are read once a window, and while no page is open, not at all: a
console nobody looks at costs the mesh nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from mesh.control.console.graph import ServiceMap
from mesh.control.console.measure import (
    Readings,
    Replicas,
    link_figures,
    node_figures,
    read_all,
)
from mesh.control.state import read_state

log = logging.getLogger(__name__)

#: How often the figures are read.
WINDOW_SECONDS = 2.0
#: How many readings back the rates are taken from: 10 s, so that every window holds at
#: least one flush of the Envoys' histograms (every 5 s) and its p99 is one.
LINK_READINGS = 5


class Live:
    """The latest figures of the map, and a way to wait for the next."""

    def __init__(
        self,
        graph: ServiceMap,
        run_dir: Path,
        services: Mapping[str, Replicas],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.graph = graph
        self.run_dir = run_dir
        self.services = services
        self._clock = clock
        self._history: collections.deque[Readings] = collections.deque(maxlen=LINK_READINGS)
        self.figures: dict[str, Any] = {"nodes": {}, "links": {}, "time": None}
        self._updated = asyncio.Condition()
        self._watchers = 0
        self._watched = asyncio.Event()

    def read_once(self) -> dict[str, Any]:
        """Read the counters and the state now; the figures since the last reading."""
        readings = read_all(self.graph, self.services, self._clock())
        try:
            state = read_state(self.run_dir)
        except (OSError, json.JSONDecodeError):
            state = {}
        before = self._history[0] if self._history else None
        figures = {
            "nodes": node_figures(self.graph, state, before, readings),
            "links": link_figures(self.graph, before, readings) if before else {},
            "time": time.time(),
        }
        self._history.append(readings)
        return figures

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """While a page watches: the figures are read."""
        self._watchers += 1
        self._watched.set()
        try:
            yield
        finally:
            self._watchers -= 1
            if not self._watchers:
                self._watched.clear()

    async def run(self) -> None:
        """Read every window while someone watches, until cancelled."""
        while True:
            if not self._watched.is_set():
                self._history.clear()  # rates start afresh, not over the idle time
                await self._watched.wait()
            try:
                figures = await asyncio.to_thread(self.read_once)
            except Exception:  # the map is for people; the console keeps serving
                log.exception("reading the map's figures failed")
                figures = self.figures  # the pages still hear, and notice when they left
            async with self._updated:
                self.figures = figures
                self._updated.notify_all()
            await asyncio.sleep(WINDOW_SECONDS)

    async def next(self) -> dict[str, Any]:
        """The next figures read."""
        async with self._updated:
            await self._updated.wait()
            return self.figures


@contextlib.asynccontextmanager
async def running(live: Live) -> AsyncIterator[Live]:
    task = asyncio.create_task(live.run())
    try:
        yield live
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
