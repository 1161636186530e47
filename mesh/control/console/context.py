"""What every handler of the console's API shares: the console, and its errors' shape."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from nats.js import JetStreamContext

from mesh.control import deadletters, natsconf
from mesh.control.console.graph import ServiceMap
from mesh.control.console.live import Live
from mesh.control.state import read_state

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Console:
    """What the server serves: the map, its live figures, the run directory's traces,
    logs and state (for NATS), behind its token on its port."""

    graph: ServiceMap
    live: Live
    run_dir: Path
    token: str
    port: int

    @property
    def traces(self) -> Path:
        return self.run_dir / "traces" / "traces.db"


CONSOLE = web.AppKey("console", Console)


def error(status: int, message: str) -> web.Response:
    """An error as the console's API gives every one: a JSON body with `error`."""
    return web.json_response({"error": message}, status=status)


async def on_jetstream(request: web.Request, work: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Run `work` on JetStream as the mesh's NATS administrator (its credentials are in
    the run directory's state)."""
    state = read_state(request.app[CONSOLE].run_dir)
    return await deadletters.with_jetstream(natsconf.admin_from_state(state), work)


def nats_unreachable() -> web.Response:
    return error(503, "NATS does not answer; `meshctl status` shows whether it runs")


async def event_stream(request: web.Request) -> web.StreamResponse:
    """A response of server-sent events, its headers sent."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    return response


async def send(stream: web.StreamResponse, name: str, data: Any) -> None:
    """One server-sent event `name` with `data` as JSON."""
    await stream.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())


def count(query: Mapping[str, str], name: str, default: int, most: int) -> int:
    """The whole number `name` of a query, from 1 to `most` (`default` when absent);
    ValueError says what is wrong with it."""
    text = query.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} is a number, not {text!r}") from None
    if not 1 <= value <= most:
        raise ValueError(f"{name} is between 1 and {most}, not {value}")
    return value
