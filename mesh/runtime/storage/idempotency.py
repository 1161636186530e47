"""The request log: a mutation's result by its request id (AIP-155), so a retry returns
the first result and a reused id is refused."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from mesh.runtime.caller import current_call
from mesh.runtime.connection import Connection
from mesh.runtime.errors import AlreadyExists
from mesh.runtime.storage.schema import request_log, utc_now

#: Built once (see the note on statements in `mesh.runtime.storage`).
_FIND_REQUEST = sa.select(request_log.c.result, request_log.c.fingerprint).where(
    request_log.c.method == sa.bindparam("method"),
    request_log.c.caller == sa.bindparam("caller"),
    request_log.c.request_id == sa.bindparam("request_id"),
)
_RECORD_REQUEST = request_log.insert()


def _request_reused(method: str, request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for another {method} request; send a new one",
        reason="REQUEST_ID_REUSED",
        metadata={"request_id": request_id},
    )


def _scope() -> tuple[str, str]:
    """(caller, fingerprint) of the call being served (`mesh.runtime.caller.current_call`);
    ("", "") for work that serves no call, such as an event."""
    call = current_call()
    return (call.subject, call.fingerprint) if call is not None else ("", "")


async def find_request(
    connection: Connection, method: str, request_id: str
) -> dict[str, Any] | None:
    """The recorded result of an earlier request with this id, if there was one.

    Request ids are the caller's (AIP-155): one customer's id never finds another's
    request, and a service's own calls share one scope. An id recorded for a different
    request is ALREADY_EXISTS (`REQUEST_ID_REUSED`): the id names the request it was
    first used for, as a client-assigned id names the resource it created, so the
    second request can never succeed with it; a retry of the same request (the same
    canonical bytes) gets the first result.
    """
    if not request_id:
        return None
    caller, fingerprint = _scope()
    found = await connection.execute(
        _FIND_REQUEST, {"method": method, "caller": caller, "request_id": request_id}
    )
    row = found.first()
    if row is None:
        return None
    if fingerprint and row.fingerprint and fingerprint != row.fingerprint:
        raise _request_reused(method, request_id)
    return dict(json.loads(row.result))


async def record_request(
    connection: Connection, method: str, request_id: str, result: Mapping[str, Any]
) -> None:
    """Remember `result` for `request_id`, in the transaction that made the change.

    A request id already recorded for this method means the id was reused for a request
    whose first result cannot be replayed (say, the resource it made is gone): that is
    ALREADY_EXISTS for the caller, and the whole transaction is rolled back.
    """
    if not request_id:
        return
    caller, fingerprint = _scope()
    try:
        await connection.execute(
            _RECORD_REQUEST,
            {
                "method": method,
                "caller": caller,
                "request_id": request_id,
                "fingerprint": fingerprint,
                "result": json.dumps(dict(result)),
                "create_time": utc_now(),
            },
        )
    except sa.exc.IntegrityError:
        raise _request_reused(method, request_id) from None
