"""The console's logs: each instance's app log, filtered by level and trace, and followed
live as a stream of server-sent events (`mesh.control.logfiles`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from mesh.control.console.context import CONSOLE, count, error, event_stream, send
from mesh.control.logfiles import LogError, LogFilter, app_logs, last_lines, lines_after

#: How many lines a log's first look shows, at most.
MAX_LINES = 1000
#: How often a followed log is read for new lines.
FOLLOW_SECONDS = 0.5


async def instances(request: web.Request) -> web.Response:
    return web.json_response({"instances": sorted(app_logs(request.app[CONSOLE].run_dir))})


def _log_and_filter(request: web.Request) -> tuple[Path, LogFilter] | web.Response:
    instance = request.match_info["instance"]
    path = app_logs(request.app[CONSOLE].run_dir).get(instance)
    if path is None:
        return error(404, f"no log of an instance {instance!r}")
    try:
        kept = LogFilter(request.query.get("level") or None, request.query.get("trace_id") or None)
    except LogError as problem:
        return error(400, str(problem))
    return path, kept


async def log(request: web.Request) -> web.Response:
    """The last `lines` lines kept, and the offset to follow the log from."""
    found = _log_and_filter(request)
    if isinstance(found, web.Response):
        return found
    path, kept = found
    try:
        wanted = count(request.query, "lines", 200, MAX_LINES)
    except ValueError as problem:
        return error(400, str(problem))
    lines, offset = await asyncio.to_thread(last_lines, path, wanted, kept)
    return web.json_response({"lines": lines, "offset": offset})


async def follow(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each new line kept, from `offset` on (the log's end if none)."""
    found = _log_and_filter(request)
    if isinstance(found, web.Response):
        return found
    path, kept = found
    offset_text = request.query.get("offset", "")
    if offset_text and not offset_text.isdigit():
        return error(400, f"offset is a number, not {offset_text!r}")
    offset = int(offset_text) if offset_text else path.stat().st_size
    response = await event_stream(request)
    while request.transport is not None and not request.transport.is_closing():
        lines, offset = await asyncio.to_thread(lines_after, path, offset, kept)
        try:
            for line in lines:
                await send(response, "line", line)
        except ConnectionResetError:
            return response
        await asyncio.sleep(FOLLOW_SECONDS)
    return response
