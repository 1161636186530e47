"""The console's sagas: the latest orders' steps, as the event bus tells them
(`mesh.control.sagas`), the stuck ones marked."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from mesh.control import natsconf
from mesh.control import sagas as records
from mesh.control.console.context import count, error, nats_unreachable, on_jetstream

#: The most sagas one answer lists.
MAX_SAGAS = 500
#: The longest a saga may wait before the console calls it stuck: a day.
MAX_STUCK_AFTER_SECONDS = 86400.0


async def recent(request: web.Request) -> web.Response:
    """The latest sagas, `limit` of them; stuck after `stuck_after` seconds."""
    try:
        limit = count(request.query, "limit", 100, MAX_SAGAS)
        stuck_after = _stuck_after(request.query)
    except ValueError as problem:
        return error(400, str(problem))
    try:
        found = await on_jetstream(
            request, lambda js: records.recent_sagas(js, stuck_after=stuck_after, limit=limit)
        )
    except natsconf.UNREACHABLE:
        return nats_unreachable()
    return web.json_response({"sagas": found, "stuck_after": stuck_after})


def _stuck_after(query: Mapping[str, str]) -> float:
    text = query.get("stuck_after", f"{records.DEFAULT_STUCK_AFTER_SECONDS:g}")
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"stuck_after is a number of seconds, not {text!r}") from None
    if not 0 < seconds <= MAX_STUCK_AFTER_SECONDS:
        raise ValueError(f"stuck_after is between 0 and {MAX_STUCK_AFTER_SECONDS:g} s, not {text}")
    return seconds
