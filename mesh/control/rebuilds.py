"""Rebuilding a service's read model from the events kept per entity, as meshctl asks it.

`meshctl events replay search --from-start` makes search's rebuild consumer (from the
first event `SHOP_ENTITIES` keeps of what search consumes) and follows it: search works
through it into a new generation while it answers from the one it has, and deletes it
once the new generation serves (`services.search.rebuild`). Only a service whose events
are kept per entity keeps such a read model; replaying a saga step's events would run
its effects again, so meshctl refuses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mesh.control.topology import Topology
from mesh.runtime.consumer import request_rebuild
from mesh.runtime.events import ENTITIES_STREAM, rebuild_consumer

#: How often the rebuild's progress is looked at, and said.
POLL_SECONDS = 0.5
SAY_EVERY_SECONDS = 2.0


class RebuildError(RuntimeError):
    """The rebuild cannot be asked for, or did not end in time."""


def rebuilt_subjects(topology: Topology, service: str) -> list[str]:
    """The subjects of the events kept per entity `service` consumes; `RebuildError`
    when it consumes none (it keeps no read model a replay could rebuild)."""
    found = topology.services.get(service)
    if found is None:
        raise RebuildError(f"no service {service!r} in mesh.yaml")
    if not found.rebuilt_subjects:
        rebuilt = sorted(name for name, s in topology.services.items() if s.rebuilt_subjects)
        raise RebuildError(
            f"{service} keeps no read model of events kept per entity: replaying its events "
            f"from the start would run its effects again (services that can: {', '.join(rebuilt)})"
        )
    return found.rebuilt_subjects


async def rebuild(
    js: JetStreamContext,
    service: str,
    subjects: list[str],
    *,
    wait_seconds: float | None,
    say: Callable[[str], None],
) -> float:
    """Ask for the rebuild and, given `wait_seconds`, wait that long at most for it to
    end; the seconds it took."""
    started = time.monotonic()
    info = await request_rebuild(js, service, subjects)
    name = rebuild_consumer(service)
    events = f"{info.num_pending} event{'' if info.num_pending == 1 else 's'}"
    say(
        f"rebuilding {service}'s read model from {events} "
        f"(consumer {name} on {ENTITIES_STREAM}); it answers from the old one meanwhile"
    )
    if wait_seconds is None:
        return 0.0
    said = started
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            progress = await js.consumer_info(ENTITIES_STREAM, name)
        except NotFoundError:
            seconds = time.monotonic() - started
            say(f"rebuilt in {seconds:.1f} s: the new read model serves")
            return seconds
        now = time.monotonic()
        if now - started > wait_seconds:
            raise RebuildError(
                f"the rebuild did not end within {wait_seconds:g} s "
                f"({progress.num_pending} events waiting): is {service} running?"
            )
        if now - said >= SAY_EVERY_SECONDS:
            said = now
            waiting = progress.num_pending + progress.num_ack_pending
            say(f"  {waiting} events to go")
