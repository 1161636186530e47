"""Who is calling: the authenticated subject, as the edge passes it to services.

The edge verifies the caller's bearer token and passes its subject (a user id) in the
`x-shop-subject` metadata entry, after removing any entry of that name the client sent;
services read it with `caller_subject`. Inside the mesh only sidecars can reach a
service, so the entry cannot be forged once the edge and mTLS are in place.
"""

from __future__ import annotations

from typing import Any

from mesh.errors import FieldViolation, InvalidArgument, PermissionDenied

SUBJECT_METADATA_KEY = "x-shop-subject"


def caller_subject(context: Any) -> str | None:
    """The subject the call's metadata names as its caller; None when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == SUBJECT_METADATA_KEY and value:
            return str(value)
    return None


def acting_customer(caller: str | None, named: str) -> str:
    """The customer a request acts for: the caller, who may name only themself.

    A call without a caller comes from inside the mesh (another service), which must
    then name the customer.
    """
    if caller is None:
        if not named:
            raise InvalidArgument.of(
                [FieldViolation("customer_id", "customer_id is required.", "REQUIRED")]
            )
        return named
    if named and named != caller:
        raise PermissionDenied(
            "a customer may act only for themself",
            reason="CUSTOMER_MISMATCH",
            metadata={"customer_id": named},
        )
    return caller
