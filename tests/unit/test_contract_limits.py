"""The bounds in the contracts (`shop.options.v1.limits`): every field a request could
fill is bounded, and no event within its bounds outgrows what NATS accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.type import postal_address_pb2

from mesh.control.contracts import DESCRIPTOR_SET, Workspace, load_descriptor_set
from mesh.control.natsconf import MAX_PAYLOAD
from mesh.runtime.validation import Limits, limits, unbounded_fields, validate
from shop.events.v1 import events_pb2
from shop.options.v1 import limits_pb2

_F = descriptor_pb2.FieldDescriptorProto
#: Room for a message's NATS headers beside its envelope: `Nats-Msg-Id` (a UUID) and
#: W3C trace context (`traceparent`, 55 characters; `tracestate`, at most 512).
HEADERS_ROOM = 4096


def test_every_field_of_the_shops_messages_is_bounded() -> None:
    root = Workspace.find(Path(__file__).parent).root
    assert unbounded_fields(load_descriptor_set(root / DESCRIPTOR_SET)) == []


def _field(name: str, number: int, kind: int, **options: int) -> _F:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)  # type: ignore[arg-type]
    for option, value in options.items():
        setattr(field.options.Extensions[limits_pb2.limits], option, value)  # type: ignore[index]
    return field


def _set_with(*fields: _F) -> descriptor_pb2.FileDescriptorSet:
    files = descriptor_pb2.FileDescriptorSet()
    postal_address_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    file = files.file.add(name="shop/x/v1/x.proto", package="shop.x.v1")
    file.message_type.add(name="Thing").field.extend(fields)
    entry = file.message_type[0].nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.extend([_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)])
    return files


def test_what_has_no_bound_of_its_own_or_passed_down_is_reported() -> None:
    address = _field("address", 3, _F.TYPE_MESSAGE)
    address.type_name = ".google.type.PostalAddress"
    numbers = _field("sizes", 4, _F.TYPE_INT32)
    numbers.label = _F.LABEL_REPEATED
    tags = _field("tags", 5, _F.TYPE_MESSAGE, max_items=4)
    tags.label, tags.type_name = _F.LABEL_REPEATED, ".shop.x.v1.Thing.TagsEntry"
    files = _set_with(
        _field("name", 1, _F.TYPE_STRING),
        _field("note", 2, _F.TYPE_BYTES, max_length=10),
        address,
        numbers,
        tags,
    )
    found = unbounded_fields(files)
    assert "shop.x.v1.Thing.name" in found
    assert "shop.x.v1.Thing.note" not in found
    assert "shop.x.v1.Thing.address.locality" in found
    assert {"shop.x.v1.Thing.address.address_lines", "shop.x.v1.Thing.sizes"} <= set(found)
    assert "shop.x.v1.Thing.tags" not in found  # counted; its keys and values are not
    assert {"shop.x.v1.Thing.tags.key", "shop.x.v1.Thing.tags.value"} <= set(found)


def test_limits_on_a_message_field_bound_what_lies_inside() -> None:
    address = _field("address", 1, _F.TYPE_MESSAGE, max_length=100, max_items=3)
    address.type_name = ".google.type.PostalAddress"
    assert unbounded_fields(_set_with(address)) == []


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


_FIXED = {
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
    FieldDescriptor.TYPE_BOOL: 1,
}
_SIGNED = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64}


def _largest_value(field: FieldDescriptor, bound: Limits | None) -> int:
    """The most bytes one value of `field` takes encoded, its tag aside."""
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        assert bound is not None, field.full_name
        assert bound.max_length, field.full_name
        # A character takes up to four bytes in UTF-8.
        size = bound.max_length * (4 if field.type == FieldDescriptor.TYPE_STRING else 1)
        return _varint_size(size) + size
    if field.message_type is not None:
        down = bound.passed_down() if bound is not None else None
        size = _largest(field.message_type, down)
        return _varint_size(size) + size
    return _FIXED.get(field.type, 10)  # a varint: ten bytes at most


def _largest(descriptor: Any, inherited: Limits | None) -> int:
    """The most bytes a message of `descriptor` within its limits takes encoded: every
    field at its bounds, and of each oneof its largest member."""
    total, oneofs = 0, dict[str, int]()
    for field in descriptor.fields:
        bound = limits(field, inherited)
        size = _varint_size(field.number << 3) + _largest_value(field, bound)
        if field.is_repeated:
            assert bound is not None, field.full_name
            assert bound.max_items, field.full_name
            size *= bound.max_items
        oneof = field.containing_oneof
        if oneof is None:
            total += size
        else:
            oneofs[oneof.name] = max(oneofs.get(oneof.name, 0), size)
    return total + sum(oneofs.values())


def _fill(message: Any, inherited: Limits | None, member: str) -> None:
    """Set every field of `message` to its bounds, of its oneofs `member` (or the first),
    with four-byte characters: the largest message its limits admit."""
    chosen = {
        oneof.name: next((f for f in oneof.fields if f.name == member), oneof.fields[0])
        for oneof in message.DESCRIPTOR.oneofs
    }
    for field in message.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.name] is not field:
            continue
        bound = limits(field, inherited)
        count = bound.max_items if field.is_repeated and bound is not None else 1
        for index in range(count):
            _fill_value(message, field, bound, index)


def _fill_value(message: Message, field: Any, bound: Limits | None, index: int) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        getattr(message, field.name)[f"{index:03d}" + "\U0001f4e6" * (bound.max_length - 3)] = (  # type: ignore[union-attr]
            "\U0001f4e6" * bound.max_length  # type: ignore[union-attr]
        )
        return
    if field.message_type is not None:
        holder = getattr(message, field.name)
        inner = holder.add() if field.is_repeated else holder
        _fill(inner, bound.passed_down() if bound is not None else None, "")
        return
    if field.type == FieldDescriptor.TYPE_STRING:
        value: object = "\U0001f4e6" * bound.max_length  # type: ignore[union-attr]
    elif field.type == FieldDescriptor.TYPE_BYTES:
        value = b"\xff" * bound.max_length  # type: ignore[union-attr]
    elif field.type in _FIXED:
        value = True if field.type == FieldDescriptor.TYPE_BOOL else 1
    elif bound is not None and bound.minimum is not None and bound.minimum < 0:
        value = bound.minimum  # a negative varint takes ten bytes
    elif bound is not None and bound.maximum is not None:
        value = bound.maximum
    elif field.enum_type is not None:
        value = field.enum_type.values[-1].number
    else:
        value = -1 if field.type in _SIGNED else 2**32 - 1
    if field.is_repeated:
        getattr(message, field.name).append(value)
    else:
        setattr(message, field.name, value)


_PAYLOADS = [f.name for f in events_pb2.EventEnvelope.DESCRIPTOR.oneofs_by_name["payload"].fields]


def test_no_event_within_its_bounds_outgrows_what_nats_accepts() -> None:
    largest = _largest(events_pb2.EventEnvelope.DESCRIPTOR, None)
    assert largest + HEADERS_ROOM <= MAX_PAYLOAD


@pytest.mark.parametrize("payload", _PAYLOADS)
def test_the_largest_event_of_each_kind_is_within_the_bound_computed(payload: str) -> None:
    """The bound above is a real one: an event filled to its limits stays under it."""
    envelope = events_pb2.EventEnvelope()
    _fill(envelope, None, payload)
    assert envelope.WhichOneof("payload") == payload
    assert validate(envelope) == []
    assert envelope.ByteSize() <= _largest(events_pb2.EventEnvelope.DESCRIPTOR, None)
