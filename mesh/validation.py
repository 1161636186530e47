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
from dataclasses import dataclass

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from mesh.errors import FieldViolation

_REQUIRED = field_behavior_pb2.FieldBehavior.REQUIRED
_FIELD_MASK = "google.protobuf.FieldMask"

#: Paths of the fields below one field that a mask selects; None selects all of them.
_Selection = frozenset[str] | None


@dataclass(frozen=True)
class _Field:
    """A field as validation sees it, worked out once per message type."""

    name: str
    required: bool
    repeated: bool
    presence: bool
    #: The message type to check inside this field: one with rules of its own below.
    nested: Descriptor | None


@dataclass(frozen=True)
class _Plan:
    """What validating one message type takes: only the fields that can break a rule."""

    fields: tuple[_Field, ...]
    #: Whether the message carries an `update_mask` (AIP-134) that narrows the checks.
    masked: bool


def _is_required(field: FieldDescriptor) -> bool:
    return _REQUIRED in field.GetOptions().Extensions[field_behavior_pb2.field_behavior]


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _nested(field: FieldDescriptor) -> Descriptor | None:
    if field.message_type is None or _is_map(field) or not _has_rules(field.message_type):
        return None
    return field.message_type


@functools.cache
def _has_rules(descriptor: Descriptor) -> bool:
    """Whether a REQUIRED field lies in `descriptor` or anywhere below it."""
    return _rule_below(descriptor, set())


def _rule_below(descriptor: Descriptor, seen: set[Descriptor]) -> bool:
    """A search of the types below `descriptor`, each visited once (types may nest
    themselves), for a REQUIRED field."""
    if descriptor in seen:
        return False
    seen.add(descriptor)
    return any(
        _is_required(field)
        or (
            (field.message_type is not None and not _is_map(field))
            and _rule_below(field.message_type, seen)
        )
        for field in descriptor.fields
    )


@functools.cache
def _plan(descriptor: Descriptor) -> _Plan:
    fields = tuple(
        _Field(f.name, _is_required(f), f.is_repeated, f.has_presence, _nested(f))
        for f in descriptor.fields
    )
    mask = descriptor.fields_by_name.get("update_mask")
    masked = (
        mask is not None
        and mask.message_type is not None
        and mask.message_type.full_name == _FIELD_MASK
    )
    return _Plan(tuple(f for f in fields if f.required or f.nested is not None), masked)


def _is_set(message: Message, field: _Field) -> bool:
    if field.repeated:
        return len(getattr(message, field.name)) > 0
    if field.presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def _select(selection: _Selection, name: str) -> _Selection:
    """The part of `selection` that lies below field `name` (empty: none of it)."""
    if selection is None or name in selection:
        return None
    prefix = f"{name}."
    return frozenset(path[len(prefix) :] for path in selection if path.startswith(prefix))


def _update_mask(message: Message) -> _Selection:
    """The paths of the message's `update_mask`, if it is not empty."""
    paths = message.update_mask.paths  # type: ignore[attr-defined]
    return frozenset(paths) if paths else None


def _check(message: Message, prefix: str, selection: _Selection) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    plan = _plan(message.DESCRIPTOR)
    mask = _update_mask(message) if plan.masked else None
    for field in plan.fields:
        below = _select(selection, field.name)
        if below is not None and not below:
            continue  # an update mask leaves this field out
        path = f"{prefix}{field.name}"
        if not _is_set(message, field):
            if field.required:
                violations.append(FieldViolation(path, f"{path} is required.", reason="REQUIRED"))
            continue
        if field.nested is None:
            continue
        # The resource beside an update mask is checked only where the mask reaches.
        inner = mask if (mask is not None and field.name != "update_mask") else below
        if field.repeated:
            for index, element in enumerate(getattr(message, field.name)):
                violations += _check(element, f"{path}[{index}].", inner)
        else:
            violations += _check(getattr(message, field.name), f"{path}.", inner)
    return violations


def validate(message: Message) -> list[FieldViolation]:
    """Every violation of the field declarations in `message`, by field path."""
    return _check(message, "", None)
