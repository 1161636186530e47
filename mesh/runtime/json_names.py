"""Field paths in a REST client's words.

A REST client writes a request in the proto3 JSON mapping, where each field goes by its
`json_name` (`shippingAddress.addressLines[0]`); a gRPC client, and AIP-193, name fields
by their proto names (`shipping_address.address_lines[0]`). So the field paths of a
`BadRequest` follow the client: the error interceptor renames them for a REST client
(`InvalidArgument.renamed`), with `json_path`, where the status is built, whoever raised
the error (validation, a handler, the runtime's pagination).

A call is a REST client's when the edge transcoded it: after the transcoder, the edge
sets `REST_METHOD_HEADER` to the client's HTTP method, having removed any the client sent
itself. Only the edge's word counts: the call's sidecar must name the edge as the caller
in `x-forwarded-client-cert` (it replaces whatever a caller put there), so neither a gRPC
client nor another service can ask for JSON names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

#: The HTTP method of the REST call the edge transcoded into this gRPC call; absent on a
#: native gRPC call.
REST_METHOD_HEADER = "x-shop-rest-method"

#: Where a sidecar names the caller it verified: `...;URI=spiffe://<domain>/ns/<ns>/sa/<name>`.
CLIENT_CERT_HEADER = "x-forwarded-client-cert"

#: How the edge's SPIFFE id ends: its service account is `edge`, a name mesh.yaml keeps
#: from every service.
EDGE_ID_SUFFIX = "/sa/edge"


def from_rest_client(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a call's metadata says the edge transcoded it from a REST client's call."""
    marked = caller = None
    for key, value in metadata or ():
        if key == REST_METHOD_HEADER:
            marked = value
        elif key == CLIENT_CERT_HEADER and isinstance(value, str):
            caller = _certified_uri(value)
    return bool(marked) and caller is not None and caller.endswith(EDGE_ID_SUFFIX)


def _certified_uri(client_cert: str) -> str | None:
    """The `URI` of the one element a sidecar's `SANITIZE_SET` leaves in the header."""
    for pair in client_cert.split(";"):
        key, _, value = pair.partition("=")
        if key.strip() == "URI":
            return value.strip().strip('"')
    return None


@functools.cache
def _json_names(descriptor: Descriptor) -> dict[str, tuple[str, Descriptor | None]]:
    """Each field of a message type by proto name: its JSON name, and the message type
    below it (a map's values' type for a map of messages), worked out once per type."""
    names: dict[str, tuple[str, Descriptor | None]] = {}
    for field in descriptor.fields:
        below = field.message_type
        if below is not None and below.GetOptions().map_entry:
            below = below.fields_by_name["value"].message_type
        names[field.name] = (field.json_name, below)
    return names


def json_path(message: Message, path: str) -> str:
    """`path`, a field path by proto names in a message of `message`'s type
    (`lines[2].product_id`), by the fields' JSON names (`lines[2].productId`). From a
    name that is no field of its message on, the path is left as it is."""
    parts = path.split(".")
    names = _json_names(message.DESCRIPTOR)
    for position, part in enumerate(parts):
        name, bracket, index = part.partition("[")
        known = names.get(name)
        if known is None:
            break
        json_name, below = known
        parts[position] = json_name + bracket + index
        names = {} if below is None else _json_names(below)
    return ".".join(parts)
