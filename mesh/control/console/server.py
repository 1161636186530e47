"""The console's HTTP server: its page, its JSON API and the map's live stream.

Served on loopback only, and only to whoever has the mesh's console token: the URL
`meshctl status` prints carries it (`/?token=...`); the first visit trades it for a
cookie (HttpOnly, SameSite=Strict) and drops it from the address bar. Another user of
the machine, or a web page in the same browser, reaches nothing: the console shows the
shop's logs, traces and dead letters, which hold customer data. A request whose Host is
not this loopback address is refused too (DNS rebinding). Changes (a replay) take a
POST with a JSON body, which a cross-site form cannot send.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from mesh.control.console import letters, logs, sagas, traces
from mesh.control.console.access import HEALTH_PATH
from mesh.control.console.context import CONSOLE, Console, error, event_stream, send
from mesh.control.console.live import running

STATIC = Path(__file__).parent / "static"
COOKIE = "shop_console"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[_guarded])
    app[CONSOLE] = console
    app.router.add_get(HEALTH_PATH, _healthz)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/map", _map)
    app.router.add_get("/api/live", _live)
    app.router.add_get("/api/traces", traces.traces)
    app.router.add_get("/api/traces/{trace_id}", traces.trace)
    app.router.add_get("/api/dead-letters", letters.dead_letters)
    app.router.add_post("/api/dead-letters/replay", letters.replay_all)
    app.router.add_post("/api/dead-letters/{sequence}/replay", letters.replay)
    app.router.add_get("/api/sagas", sagas.recent)
    app.router.add_get("/api/logs", logs.instances)
    app.router.add_get("/api/logs/{instance}", logs.log)
    app.router.add_get("/api/logs/{instance}/follow", logs.follow)
    app.cleanup_ctx.append(_sampling)
    return app


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    async with running(app[CONSOLE].live):
        yield


@web.middleware
async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.app[CONSOLE]
    if request.host not in (f"127.0.0.1:{console.port}", f"localhost:{console.port}"):
        return error(403, f"the console answers on 127.0.0.1:{console.port} only")
    if request.path == HEALTH_PATH:
        return await handler(request)
    given = request.query.get("token")
    if request.path == "/" and given is not None and _same(given, console.token):
        redirect = web.HTTPSeeOther("/")
        redirect.set_cookie(COOKIE, console.token, httponly=True, samesite="Strict")
        raise redirect
    if not _same(request.cookies.get(COOKIE, ""), console.token):
        return error(401, "open the console's URL as `meshctl status` prints it (with its token)")
    if request.method == "POST" and request.content_type != "application/json":
        return error(415, "a change is a POST with a JSON body (Content-Type: application/json)")
    try:
        return await handler(request)
    except web.HTTPException as refusal:
        if refusal.status < 400:
            raise
        return error(refusal.status, refusal.reason)  # no such path, or not that method


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "serving"})


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _map(request: web.Request) -> web.Response:
    graph = request.app[CONSOLE].graph
    return web.json_response(
        {
            "nodes": [dataclasses.asdict(node) for node in graph.nodes],
            "links": [
                {k: v for k, v in dataclasses.asdict(link).items() if k != "measured_at"}
                for link in graph.links
            ],
        }
    )


async def _live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the latest figures at once, then each new reading."""
    live = request.app[CONSOLE].live
    response = await event_stream(request)
    figures = live.figures
    async with live.watching():
        while True:
            try:
                await send(response, "figures", figures)
            except ConnectionResetError:
                return response
            figures = await live.next()
