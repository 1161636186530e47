"""The map's live figures (`mesh.control.console.live`): read once a window for every
watcher, not at all without one, and always handed on, a failed reading too."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from unittest import mock

from mesh.control.console import live as live_module
from mesh.control.console.graph import service_map
from mesh.control.console.live import Live, running
from mesh.control.plan import make_plan
from mesh.control.topology import parse


def _live(tmp_path: Path) -> Live:
    topology = parse("services:\n  catalog: {}\n")
    ports = itertools.count(26000)
    graph = service_map(topology, make_plan(topology, tmp_path, lambda: next(ports)))
    return Live(graph, tmp_path, {})


async def test_nothing_is_read_while_no_page_watches(tmp_path: Path) -> None:
    live = _live(tmp_path)
    with mock.patch.object(live, "read_once", wraps=live.read_once) as reads:
        async with running(live):
            await asyncio.sleep(0.2)
            assert reads.call_count == 0
            async with live.watching():
                figures = await asyncio.wait_for(live.next(), 5)
            assert reads.call_count == 1
    assert figures["nodes"]["catalog"]["health"] == "UNKNOWN"  # no state.json: nothing known


async def test_a_failed_reading_still_wakes_the_watchers(tmp_path: Path) -> None:
    live = _live(tmp_path)
    with (
        mock.patch.object(live, "read_once", side_effect=OSError("no admin socket")),
        mock.patch.object(live_module, "WINDOW_SECONDS", 0.05),
    ):
        async with running(live), live.watching():
            figures = await asyncio.wait_for(live.next(), 5)
    assert figures == {"nodes": {}, "links": {}, "time": None}
