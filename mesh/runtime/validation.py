"""Request validation driven by the contracts, not by hand-written checks.

Two kinds of declaration in `protos/` are enforced on every request, before a handler
sees it:

- `[(google.api.field_behavior) = REQUIRED]`: the field must be set, a non-empty string
  or bytes, a non-zero number, an enum other than its `_UNSPECIFIED` zero value, a
  present message, a non-empty list. On an update request (AIP-134) with a non-empty
  `update_mask`, only the required fields named by the mask are enforced inside the
  resource, so a partial update need not repeat the resource's other required fields;
  a mask of `*` names every field (a full replacement), so all of them are enforced.
- `[(shop.options.v1.limits) = {...}]` (`protos/shop/options/v1/limits.proto`): the most
  characters of a string (bytes of a bytes field), the most elements of a list or map, the
  least and greatest value of an integer. Limits on a field of a message type bound every
  string, bytes, list and map inside it that declares none of its own, which is how
  `google.type.PostalAddress` and `google.protobuf.FieldMask` are bounded. Limits hold on
  every field that is set, whatever an update mask selects.

Set messages (and each element of a list of messages) are checked the same way, so
`lines[2].product_id` is reported by its path. No violation repeats the offending value.

The runner's validation interceptor calls `validate` on every request; servicers never
check presence or size themselves.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from mesh.runtime.errors import FieldViolation
from shop.options.v1 import limits_pb2

_REQUIRED = field_behavior_pb2.FieldBehavior.REQUIRED
_FIELD_MASK = "google.protobuf.FieldMask"
#: The update mask path that names every field of the resource (AIP-134).
_EVERY_FIELD = "*"

#: Paths of the fields below one field that a mask selects; None selects all of them.
_Selection = frozenset[str] | None


@dataclass(frozen=True)
class Limits:
    """The bounds a field declares (`shop.options.v1.FieldLimits`); zero: no bound."""

    max_length: int = 0
    max_items: int = 0
    minimum: int | None = None
    maximum: int | None = None

    @classmethod
    def declared(cls, field: FieldDescriptor) -> Limits | None:
        """The limits `field` declares itself, if any."""
        return cls.of_options(field.GetOptions())

    @classmethod
    def of_proto(cls, field: descriptor_pb2.FieldDescriptorProto) -> Limits | None:
        """The limits a field of a descriptor set declares, if any."""
        # Re-parsed, so the extension is read even if the set was parsed before the
        # extension was known.
        return cls.of_options(
            descriptor_pb2.FieldOptions.FromString(field.options.SerializeToString())
        )

    @classmethod
    def of_options(cls, options: descriptor_pb2.FieldOptions) -> Limits | None:
        """The limits a field's options declare, if any."""
        # The generated stub types an extension as a plain FieldDescriptor.
        if not options.HasExtension(limits_pb2.limits):  # type: ignore[arg-type]
            return None
        declared: limits_pb2.FieldLimits = options.Extensions[limits_pb2.limits]  # type: ignore[index]
        return cls(
            max_length=declared.max_length,
            max_items=declared.max_items,
            minimum=declared.minimum if declared.HasField("minimum") else None,
            maximum=declared.maximum if declared.HasField("maximum") else None,
        )

    def passed_down(self) -> Limits | None:
        """What these limits, declared on a message field, bound inside the message:
        lengths and counts (a range belongs to the one integer that declares it)."""
        if not (self.max_length or self.max_items):
            return None
        return Limits(max_length=self.max_length, max_items=self.max_items)


def limits(field: FieldDescriptor, inherited: Limits | None) -> Limits | None:
    """The limits that hold on `field`: its own, else those of the message field it lies
    in (`inherited`)."""
    return Limits.declared(field) or inherited


class _Kind(enum.Enum):
    TEXT = "characters"
    BYTES = "bytes"
    NUMBER = "number"
    MESSAGE = "message"
    OTHER = "other"


_NUMBERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _kind(field: FieldDescriptor) -> _Kind:
    if field.type == FieldDescriptor.TYPE_STRING:
        return _Kind.TEXT
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _Kind.BYTES
    if field.type in _NUMBERS:
        return _Kind.NUMBER
    if field.message_type is not None:
        return _Kind.MESSAGE
    return _Kind.OTHER


@dataclass(frozen=True)
class _Field:
    """A field as validation sees it, worked out once per message type."""

    name: str
    required: bool
    repeated: bool
    presence: bool
    kind: _Kind
    #: The bounds that hold on the field's values, if any.
    limits: Limits | None
    #: For a map: the kinds of its keys and values.
    entry: tuple[_Kind, _Kind] | None
    #: The message type to check inside this field (or inside a map's values), with
    #: the limits passed down to it: one with rules of its own below.
    nested: tuple[Descriptor, Limits | None] | None


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


def _entry(field: FieldDescriptor) -> tuple[_Kind, _Kind] | None:
    if not _is_map(field):
        return None
    fields = field.message_type.fields_by_name  # type: ignore[union-attr]
    return _kind(fields["key"]), _kind(fields["value"])


def _message_below(field: FieldDescriptor) -> Descriptor | None:
    """The message type whose fields lie below `field`: its own, or its map's values'."""
    if field.message_type is None:
        return None
    if _is_map(field):
        return field.message_type.fields_by_name["value"].message_type
    return field.message_type


def _nested(field: FieldDescriptor, own: Limits | None) -> tuple[Descriptor, Limits | None] | None:
    below = _message_below(field)
    if below is None:
        return None
    down = own.passed_down() if own is not None else None
    if down is None and not _has_rules(below):
        return None
    return below, down


@functools.cache
def _has_rules(descriptor: Descriptor) -> bool:
    """Whether a REQUIRED field or a declared limit lies in `descriptor` or below it."""
    return _rule_below(descriptor, set())


def _rule_below(descriptor: Descriptor, seen: set[Descriptor]) -> bool:
    """A search of the types below `descriptor`, each visited once (types may nest
    themselves), for a REQUIRED field or a declared limit."""
    if descriptor in seen:
        return False
    seen.add(descriptor)
    for field in descriptor.fields:
        if _is_required(field) or Limits.declared(field) is not None:
            return True
        below = _message_below(field)
        if below is not None and _rule_below(below, seen):
            return True
    return False


def _binding(bound: Limits | None, kind: _Kind, repeated: bool) -> Limits | None:
    """`bound` if it can fail a value of the field, else None (an inherited length on an
    integer, say), so the field is not checked for nothing."""
    if bound is None:
        return None
    sized = kind in (_Kind.TEXT, _Kind.BYTES) and bound.max_length
    ranged = kind is _Kind.NUMBER and (bound.minimum is not None or bound.maximum is not None)
    return bound if (repeated and bound.max_items) or sized or ranged else None


def _field(field: FieldDescriptor, inherited: Limits | None) -> _Field:
    own = limits(field, inherited)
    entry = _entry(field)
    return _Field(
        name=field.name,
        required=_is_required(field),
        repeated=field.is_repeated,
        presence=field.has_presence,
        kind=_kind(field),
        limits=own if entry is not None else _binding(own, _kind(field), field.is_repeated),
        entry=entry,
        nested=_nested(field, own),
    )


@functools.cache
def _plan(descriptor: Descriptor, inherited: Limits | None = None) -> _Plan:
    fields = tuple(_field(f, inherited) for f in descriptor.fields)
    mask = descriptor.fields_by_name.get("update_mask")
    masked = (
        mask is not None
        and mask.message_type is not None
        and mask.message_type.full_name == _FIELD_MASK
    )
    checked = tuple(f for f in fields if f.required or f.limits or f.nested is not None)
    return _Plan(checked, masked)


def _set_value(message: Message, field: _Field) -> Any:
    """The field's value, or None when it is not set."""
    if field.presence and not field.repeated:
        return getattr(message, field.name) if message.HasField(field.name) else None
    value = getattr(message, field.name)
    return value if (len(value) if field.repeated else value) else None


def _select(selection: _Selection, name: str) -> _Selection:
    """The part of `selection` that lies below field `name` (empty: none of it)."""
    if selection is None or name in selection:
        return None
    prefix = f"{name}."
    return frozenset(path[len(prefix) :] for path in selection if path.startswith(prefix))


def _update_mask(message: Message) -> _Selection:
    """The paths of the message's `update_mask`, if it is not empty and not `*`."""
    paths = message.update_mask.paths  # type: ignore[attr-defined]
    return frozenset(paths) if paths and _EVERY_FIELD not in paths else None


def _too_long(path: str, kind: _Kind, bound: Limits) -> FieldViolation:
    return FieldViolation(
        path,
        f"{path} is longer than {bound.max_length} {kind.value}.",
        reason="TOO_LONG",
    )


def _out_of_range(path: str, bound: Limits) -> FieldViolation:
    low = "" if bound.minimum is None else f" at least {bound.minimum:,}"
    high = "" if bound.maximum is None else f" at most {bound.maximum:,}"
    joined = " and".join(part for part in (low, high) if part)
    return FieldViolation(path, f"{path} must be{joined}.", reason="OUT_OF_RANGE")


def _outside(value: int, bound: Limits) -> bool:
    return (bound.minimum is not None and value < bound.minimum) or (
        bound.maximum is not None and value > bound.maximum
    )


def _value_violations(value: Any, path: str, kind: _Kind, bound: Limits) -> list[FieldViolation]:
    """What is wrong with one value (a field's, or one element's) against `bound`."""
    if kind in (_Kind.TEXT, _Kind.BYTES) and bound.max_length and len(value) > bound.max_length:
        return [_too_long(path, kind, bound)]
    if kind is _Kind.NUMBER and _outside(value, bound):
        return [_out_of_range(path, bound)]
    return []


def _entry_violations(
    entries: Iterable[tuple[object, object]], path: str, kinds: tuple[_Kind, _Kind], bound: Limits
) -> list[FieldViolation]:
    """A map's keys and values against `bound`; reported on the map, since a key the
    caller sent is not repeated back."""
    for key, value in entries:
        if _value_violations(key, path, kinds[0], bound) or _value_violations(
            value, path, kinds[1], bound
        ):
            return [
                FieldViolation(
                    path,
                    f"a key or value of {path} is longer than {bound.max_length} characters.",
                    reason="TOO_LONG",
                )
            ]
    return []


def _too_many(value: Any, path: str, field: _Field) -> FieldViolation | None:
    """A list or map with more elements than its bound allows; its elements are not
    looked at then: the request is refused anyway, however many there are."""
    bound = field.limits
    if not (field.repeated and bound is not None and bound.max_items):
        return None
    if len(value) <= bound.max_items:
        return None
    return FieldViolation(
        path, f"{path} has more than {bound.max_items} items.", reason="TOO_MANY_ITEMS"
    )


def _bound_violations(value: Any, path: str, field: _Field) -> list[FieldViolation]:
    """What is wrong with a set field's values against its limits, its count aside."""
    bound = field.limits
    if bound is None:
        return []
    if not field.repeated:
        return _value_violations(value, path, field.kind, bound)
    if field.entry is not None:
        return _entry_violations(value.items(), path, field.entry, bound)
    violations: list[FieldViolation] = []
    for index, element in enumerate(value):
        violations += _value_violations(element, f"{path}[{index}]", field.kind, bound)
    return violations


def _nested_violations(
    value: Any, path: str, field: _Field, selection: _Selection
) -> list[FieldViolation]:
    """The violations inside a set message field, each element of a list of messages,
    or each message value of a map."""
    assert field.nested is not None
    plan = _plan(*field.nested)
    if field.entry is not None:
        values = value.values()
        return [v for element in values for v in _check(element, f"{path}.", selection, plan)]
    if field.repeated:
        return [
            v
            for index, element in enumerate(value)
            for v in _check(element, f"{path}[{index}].", selection, plan)
        ]
    return _check(value, f"{path}.", selection, plan)


def _check(
    message: Message, prefix: str, selection: _Selection, plan: _Plan
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    mask = _update_mask(message) if plan.masked else None
    for field in plan.fields:
        below = None if selection is None else _select(selection, field.name)
        value = _set_value(message, field)
        if value is None:
            # An update mask that leaves this field out (an empty selection) waives it.
            if field.required and (below is None or below):
                path = prefix + field.name
                violations.append(FieldViolation(path, f"{path} is required.", reason="REQUIRED"))
            continue
        too_many = _too_many(value, prefix + field.name, field)
        if too_many is not None:
            violations.append(too_many)
            continue
        if field.limits is not None:
            violations += _bound_violations(value, prefix + field.name, field)
        if field.nested is not None:
            # The resource beside an update mask is checked only where the mask reaches.
            inner = mask if (mask is not None and field.name != "update_mask") else below
            violations += _nested_violations(value, prefix + field.name, field, inner)
    return violations


def validate(message: Message) -> list[FieldViolation]:
    """Every violation of the field declarations in `message`, by field path."""
    return _check(message, "", None, _plan(message.DESCRIPTOR))


#: What ends a text shortened to its bound.
ELLIPSIS = "\u2026"


def _shortened(value: str | bytes, bound: int) -> str | bytes:
    if isinstance(value, str):
        return value[: bound - len(ELLIPSIS)] + ELLIPSIS
    return value[:bound]


def _fit_values(message: Message, field: _Field, bound: Limits) -> None:
    if field.entry is not None or field.kind not in (_Kind.TEXT, _Kind.BYTES):
        return
    if not field.repeated:
        value = getattr(message, field.name)
        if bound.max_length and len(value) > bound.max_length:
            setattr(message, field.name, _shortened(value, bound.max_length))
        return
    values = getattr(message, field.name)
    if bound.max_items:
        del values[bound.max_items :]
    for index, value in enumerate(values):
        if bound.max_length and len(value) > bound.max_length:
            values[index] = _shortened(value, bound.max_length)


def _fit(message: Message, plan: _Plan) -> None:
    for field in plan.fields:
        value = _set_value(message, field)
        if value is None:
            continue
        if field.limits is not None:
            _fit_values(message, field, field.limits)
        if field.nested is not None and field.entry is None:
            inner = _plan(*field.nested)
            for element in value if field.repeated else (value,):
                _fit(element, inner)


def fit(message: Message) -> None:
    """Shorten, in place, what in `message` exceeds its declared limits: a text to its
    bound, ending with an ellipsis; a list to its most items. For the messages a service
    composes itself (an event whose reason quotes another's), so that what it sends keeps
    to its contract; a request is refused instead (`validate`)."""
    _fit(message, _plan(message.DESCRIPTOR))


_FieldProto = descriptor_pb2.FieldDescriptorProto
_Messages = dict[str, descriptor_pb2.DescriptorProto]


def _messages_of(files: descriptor_pb2.FileDescriptorSet) -> _Messages:
    """Every message type of the set, nested ones included, by `.`-prefixed full name."""
    found: _Messages = {}

    def add(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            add(name, nested)

    for file in files.file:
        for message in file.message_type:
            add(f".{file.package}", message)
    return found


def _sized(field: _FieldProto) -> bool:
    return field.type in (_FieldProto.TYPE_STRING, _FieldProto.TYPE_BYTES)


@dataclass(frozen=True)
class _Bounds:
    """A search of a descriptor set for fields without bounds."""

    messages: _Messages
    #: The prefix of the types whose every field must be bounded (`.shop.`).
    owned: str

    def value(
        self, field: _FieldProto, path: str, bound: Limits | None, within: frozenset[str]
    ) -> list[str]:
        """Where one value of `field` (an element, a map's key or value) is unbounded."""
        if _sized(field):
            return [] if bound is not None and bound.max_length else [path]
        if (
            field.type == _FieldProto.TYPE_MESSAGE
            and not field.type_name.startswith(self.owned)
            and field.type_name not in within  # a type that holds itself: seen already
        ):
            # A type the shop does not own is bounded by what its field passes down.
            down = bound.passed_down() if bound is not None else None
            message = self.messages[field.type_name]
            return self.inside(message, path, down, within | {field.type_name})
        return []

    def field(
        self, field: _FieldProto, path: str, inherited: Limits | None, within: frozenset[str]
    ) -> list[str]:
        bound = Limits.of_proto(field) or inherited
        if field.label != _FieldProto.LABEL_REPEATED:
            return self.value(field, path, bound, within)
        counted = [] if bound is not None and bound.max_items else [path]
        entry = self.messages.get(field.type_name)
        if entry is not None and entry.options.map_entry:
            return counted + [
                found
                for part in entry.field
                for found in self.value(part, f"{path}.{part.name}", bound, within)
            ]
        return counted + self.value(field, f"{path}[]", bound, within)

    def inside(
        self,
        message: descriptor_pb2.DescriptorProto,
        path: str,
        inherited: Limits | None,
        within: frozenset[str],
    ) -> list[str]:
        return [
            found
            for field in message.field
            for found in self.field(field, f"{path}.{field.name}", inherited, within)
        ]


def unbounded_fields(files: descriptor_pb2.FileDescriptorSet, owned: str = ".shop.") -> list[str]:
    """The paths of the fields of the messages under `owned` that a request could fill
    without bound: strings, bytes, lists and maps with no limits of their own and none
    passed down to them. Messages of types owned elsewhere are looked into, field by
    field, as the limits of the field that holds them bound them."""
    search = _Bounds(_messages_of(files), owned)
    return [
        found
        for name, message in search.messages.items()
        if name.startswith(owned) and not message.options.map_entry
        for found in search.inside(message, name[1:], None, frozenset({name}))
    ]
