"""The console's sagas: the latest orders' steps, as the event bus tells them
(`mesh.control.sagas`), the stuck ones marked."""

from __future__ import annotations

from aiohttp import web

from mesh.control import sagas as records
from mesh.control.console.context import NATS_ERRORS, error, nats_unreachable, on_jetstream

#: The most sagas one answer lists.
MAX_SAGAS = 500


async def recent(request: web.Request) -> web.Response:
    """The latest sagas, `limit` of them; stuck after `stuck_after` seconds."""
    try:
        limit = int(request.query.get("limit", "100"))
        stuck_after = float(
            request.query.get("stuck_after", str(records.DEFAULT_STUCK_AFTER_SECONDS))
        )
    except ValueError:
        return error(400, "limit and stuck_after are numbers")
    if not 1 <= limit <= MAX_SAGAS or not 0 < stuck_after <= 86400:
        return error(400, f"limit is between 1 and {MAX_SAGAS}, stuck_after between 0 and 86400 s")
    try:
        found = await on_jetstream(
            request, lambda js: records.recent_sagas(js, stuck_after=stuck_after, limit=limit)
        )
    except NATS_ERRORS:
        return nats_unreachable()
    return web.json_response({"sagas": found, "stuck_after": stuck_after})
