"""The console's dead letters: listed, replayed one at a time or all, through the same
code as `meshctl dlq` (`mesh.control.deadletters`), as the mesh's NATS administrator."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from nats.js.errors import NotFoundError

from mesh.control import deadletters, natsconf
from mesh.control.console.context import error, nats_unreachable, on_jetstream


async def dead_letters(request: web.Request) -> web.Response:
    try:
        letters = await on_jetstream(request, deadletters.dead_letters)
    except natsconf.UNREACHABLE:
        return nats_unreachable()
    return web.json_response({"dead_letters": [letter.describe() for letter in letters]})


async def replay(request: web.Request) -> web.Response:
    """POST: replay one dead letter (409 when it does not hold up, saying why)."""
    text = request.match_info["sequence"]
    if not text.isdigit():
        return error(400, f"a dead letter's sequence is a number, not {text!r}")
    sequence = int(text)
    try:
        letter = await on_jetstream(request, lambda js: deadletters.replay(js, sequence))
    except deadletters.ReplayRefused as refusal:
        return error(409, str(refusal))
    except NotFoundError:
        return error(404, f"no dead letter {sequence}")
    except natsconf.UNREACHABLE:
        return nats_unreachable()
    return web.json_response({"replayed": letter.describe()})


async def replay_all(request: web.Request) -> web.Response:
    """POST: replay every dead letter that holds up; say why each other one is left."""
    try:
        outcomes = await on_jetstream(request, deadletters.replay_all)
    except natsconf.UNREACHABLE:
        return nats_unreachable()
    body: dict[str, list[Any]] = {
        "replayed": [o.letter.describe() for o in outcomes if not o.refused],
        "left": [
            {"sequence": o.letter.sequence, "reason": o.refused} for o in outcomes if o.refused
        ],
    }
    return web.json_response(body)
