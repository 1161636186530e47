"""Answers the edge may cache: a validator and a lifetime sent with a successful answer.

The edge asks for them on the reads mesh.yaml's `edge.cache` names, only when it fetches
an answer to keep (`mesh.control.envoy.edge_cache`): that request carries
`x-shop-cache: max-age=N`, which no client can send (the edge removes it from theirs).
The successful answer to such a call goes with, as initial metadata (HTTP headers once
the edge has transcoded it):

* `etag: W/"..."`, a hash of the method and the answer's deterministic serialization:
  the same answer has the same tag on every replica, so the edge answers a client's
  `If-None-Match` with 304 Not Modified;
* `cache-control: public, max-age=N`, which lets the edge's cache keep it for N seconds.

A failed call sends neither, so the edge never keeps an error. Nor does a degraded
answer, one a service gave without what a dependency failed to provide (catalog's
products without their stock levels): the code serving the call says so with
`no_store()`, and the answer goes with `cache-control: no-store` instead, whether the
edge asked to keep it or not, so that neither the edge nor any cache after it keeps an
answer that a later read can give whole. Every other call (any other method, any call
with a token, every call between services) costs only a look through its metadata for
the header.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf.message import Message

from mesh.runtime.telemetry import Behavior

#: The request header of a call whose answer the edge may keep, and for how long.
CACHE_HEADER = "x-shop-cache"
_MAX_AGE = re.compile(r"max-age=([0-9]{1,6})")
#: The bytes of the hash an entity tag carries: 128 bits, as many as an MD5 tag has.
_TAG_BYTES = 16
#: What a degraded answer goes with: no cache may keep it.
NO_STORE = (("cache-control", "no-store"),)
#: Whether the answer of the call being served may be kept (`no_store`).
_KEEPABLE: ContextVar[bool] = ContextVar("shop_keepable", default=True)


def no_store() -> None:
    """Mark the answer of the call being served as one no cache may keep: a degraded
    answer, which goes with `cache-control: no-store` and without validators."""
    _KEEPABLE.set(False)


def requested_max_age(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """How long the edge may keep this call's answer, in seconds; None: it may not."""
    for key, value in metadata or ():
        if key == CACHE_HEADER and isinstance(value, str):
            found = _MAX_AGE.fullmatch(value)
            return int(found[1]) if found else None
    return None


def entity_tag(method: str, response: Message) -> str:
    """A weak entity tag of `method`'s answer `response`: equal for equal answers, whatever
    the replica."""
    hashed = hashlib.sha256(method.encode())
    hashed.update(response.SerializeToString(deterministic=True))
    digest = hashed.digest()
    return 'W/"' + base64.urlsafe_b64encode(digest[:_TAG_BYTES]).rstrip(b"=").decode() + '"'


def validators(method: str, response: Message, max_age: int) -> tuple[tuple[str, str], ...]:
    """The headers that let a shared cache keep `method`'s answer `response` for `max_age`
    seconds."""
    tag = entity_tag(method, response)
    return (("etag", tag), ("cache-control", f"public, max-age={max_age}"))


def marked(behavior: Behavior, method: str) -> Behavior:
    """A call the edge asked to cache answers, on success, with its validators; a
    degraded answer (`no_store`) with `cache-control: no-store`, whoever asked."""

    async def call(request: Any, context: Any) -> Any:
        max_age = requested_max_age(context.invocation_metadata())
        keepable = _KEEPABLE.set(True)
        try:
            response = await behavior(request, context)
            failed = context.code() not in (None, grpc.StatusCode.OK)
            if not _KEEPABLE.get() and not failed:
                await context.send_initial_metadata(NO_STORE)
            elif max_age is not None and isinstance(response, Message) and not failed:
                await context.send_initial_metadata(validators(method, response, max_age))
            return response
        finally:
            _KEEPABLE.reset(keepable)

    return call
