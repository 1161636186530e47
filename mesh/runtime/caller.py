"""Who is calling: the authenticated subject, as the edge passes it to services.

The edge verifies the caller's bearer token and passes its subject (a user id) in the
`x-shop-subject` metadata entry, after removing any entry of that name the client sent;
services read it with `caller_subject`. Inside the mesh only sidecars can reach a
service, so the entry cannot be forged once the edge and mTLS are in place.

A method that acts for a customer (reads their orders, shipments, payments or
notifications, places or cancels an order) takes the customer from the subject alone,
through `customer_of` or `acting_customer`, and refuses a call without one: no call,
from the edge or from another service, reads a customer's data without naming them.

The runner marks the code that serves a call with the call's subject and request
(`serving`, `current_call`): the request log (`mesh.runtime.storage`) scopes request ids by it
and tells a retry from a different request that reuses an id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from mesh.runtime.errors import PermissionDenied, Unauthenticated

SUBJECT_METADATA_KEY = "x-shop-subject"


def caller_subject(context: Any) -> str | None:
    """The subject the call's metadata names as its caller; None when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == SUBJECT_METADATA_KEY and value:
            return str(value)
    return None


def customer_of(caller: str | None) -> str:
    """The customer a customer-scoped call acts for: its caller. A call that names none is
    refused (UNAUTHENTICATED), wherever it comes from: such methods fail closed."""
    if not caller:
        raise Unauthenticated(
            "this method acts for a signed-in customer, and the call names none",
            reason="NO_SUBJECT",
        )
    return caller


def acting_customer(caller: str | None, named: str) -> str:
    """The customer a request acts for: the caller, who may name only themself."""
    customer = customer_of(caller)
    if named and named != customer:
        raise PermissionDenied(
            "a customer may act only for themself",
            reason="CUSTOMER_MISMATCH",
            metadata={"customer_id": named},
        )
    return customer


@dataclass(frozen=True)
class Call:
    """The request being served, as the request log scopes and compares it (AIP-155)."""

    subject: str
    """The customer the call names, or "" for a service's own call."""
    request: Message

    @functools.cached_property
    def fingerprint(self) -> str:
        """What tells two requests apart: a digest of the request's canonical bytes."""
        return hashlib.sha256(self.request.SerializeToString(deterministic=True)).hexdigest()


_CALL: ContextVar[Call | None] = ContextVar("shop_call", default=None)


def current_call() -> Call | None:
    """The call being served, if the code runs for one (not for an event, say)."""
    return _CALL.get()


@contextlib.contextmanager
def serving(subject: str | None, request: Message) -> Iterator[None]:
    """Mark the code run inside as serving `request` for `subject` (see `current_call`)."""
    token = _CALL.set(Call(subject or "", request))
    try:
        yield
    finally:
        _CALL.reset(token)
