"""Request validation driven by the contracts, not by hand-written checks.

A field declared `[(google.api.field_behavior) = REQUIRED]` in `protos/` must be set:
a non-empty string or bytes, a non-zero number, an enum other than its `_UNSPECIFIED`
zero value, a present message, a non-empty list. Set messages (and each element of a
list of messages) are checked the same way, so `lines[2].product_id` is reported by its
path. On an update request (AIP-134) with a non-empty `update_mask`, only the required
fields named by the mask are enforced inside the resource, so a partial update need not
repeat the resource's other required fields.

The runner's validation interceptor calls `validate` on every request; servicers never
check presence themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from mesh.errors import FieldViolation

_REQUIRED = field_behavior_pb2.FieldBehavior.REQUIRED
_FIELD_MASK = "google.protobuf.FieldMask"

#: Paths of the fields below one field that a mask selects; None selects all of them.
_Selection = frozenset[str] | None


@functools.cache
def _required(descriptor: Descriptor) -> frozenset[str]:
    """Names of the fields of `descriptor` declared REQUIRED."""
    return frozenset(
        field.name
        for field in descriptor.fields
        if _REQUIRED in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


def _is_set(message: Message, field: FieldDescriptor) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _select(selection: _Selection, name: str) -> _Selection:
    """The part of `selection` that lies below field `name` (empty: none of it)."""
    if selection is None or name in selection:
        return None
    prefix = f"{name}."
    return frozenset(path[len(prefix) :] for path in selection if path.startswith(prefix))


def _update_mask(message: Message) -> _Selection:
    """The paths of a non-empty `update_mask` field of `message`, if it has one."""
    field = message.DESCRIPTOR.fields_by_name.get("update_mask")
    if field is None or field.message_type is None or field.message_type.full_name != _FIELD_MASK:
        return None
    paths = getattr(message, field.name).paths
    return frozenset(paths) if paths else None


def _check(message: Message, prefix: str, selection: _Selection) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    required = _required(message.DESCRIPTOR)
    mask = _update_mask(message)
    for field in cast(Sequence[FieldDescriptor], message.DESCRIPTOR.fields):
        below = _select(selection, field.name)
        if below is not None and not below:
            continue  # an update mask leaves this field out
        path = f"{prefix}{field.name}"
        if not _is_set(message, field):
            if field.name in required:
                violations.append(FieldViolation(path, f"{path} is required.", reason="REQUIRED"))
            continue
        if field.message_type is None or _is_map(field):
            continue
        # The resource beside an update mask is checked only where the mask reaches.
        inner = mask if (mask is not None and field.name != "update_mask") else below
        if field.is_repeated:
            for index, element in enumerate(getattr(message, field.name)):
                violations += _check(element, f"{path}[{index}].", inner)
        else:
            violations += _check(getattr(message, field.name), f"{path}.", inner)
    return violations


def validate(message: Message) -> list[FieldViolation]:
    """Every violation of the field declarations in `message`, by field path."""
    return _check(message, "", None)
