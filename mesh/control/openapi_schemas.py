"""JSON Schemas of the contracts' messages, as the edge's transcoder writes them.

The proto3 JSON mapping: lowerCamelCase `json_name`s, 64-bit integers as decimal strings,
enums by name, bytes as base64, the well-known types in their special JSON forms; each
message and enum a component, described by its proto comment; `google.api.field_behavior`
as `required`, `readOnly` and `writeOnly`; `shop.options.v1.limits` as `maxLength`,
`maxItems`, `maxProperties`, `minimum` and `maximum`. The OpenAPI document
(`mesh.control.openapi`) refers to these schemas.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

from mesh.runtime.validation import Limits

Schema = dict[str, Any]

Field = descriptor_pb2.FieldDescriptorProto

ANY = "google.protobuf.Any"

#: Numbers of fields in descriptor.proto, as they appear in `SourceCodeInfo` paths.
_FILE_MESSAGE, _FILE_ENUM, FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
SERVICE_METHOD = 2

_INT64 = r"^-?[0-9]+$"
_UINT64 = r"^[0-9]+$"

_T = descriptor_pb2.FieldDescriptorProto.Type
_SCALARS: dict[int, Schema] = {
    _T.TYPE_STRING: {"type": "string"},
    _T.TYPE_BOOL: {"type": "boolean"},
    _T.TYPE_INT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _T.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _T.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    _T.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings: a JSON number loses precision past 2^53.
    _T.TYPE_INT64: {"type": "string", "format": "int64", "pattern": _INT64},
    _T.TYPE_SINT64: {"type": "string", "format": "int64", "pattern": _INT64},
    _T.TYPE_SFIXED64: {"type": "string", "format": "int64", "pattern": _INT64},
    _T.TYPE_UINT64: {"type": "string", "format": "uint64", "pattern": _UINT64},
    _T.TYPE_FIXED64: {"type": "string", "format": "uint64", "pattern": _UINT64},
    _T.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _T.TYPE_FLOAT: {"type": "number", "format": "float"},
    _T.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

_WRAPPERS: dict[str, int] = {
    "google.protobuf.StringValue": _T.TYPE_STRING,
    "google.protobuf.BoolValue": _T.TYPE_BOOL,
    "google.protobuf.Int32Value": _T.TYPE_INT32,
    "google.protobuf.UInt32Value": _T.TYPE_UINT32,
    "google.protobuf.Int64Value": _T.TYPE_INT64,
    "google.protobuf.UInt64Value": _T.TYPE_UINT64,
    "google.protobuf.DoubleValue": _T.TYPE_DOUBLE,
    "google.protobuf.FloatValue": _T.TYPE_FLOAT,
    "google.protobuf.BytesValue": _T.TYPE_BYTES,
}


def _bounded(schema: Schema, kind: int, bound: Limits | None) -> Schema:
    """A scalar's schema with the limits that hold on it."""
    if bound is None:
        return schema
    if kind == _T.TYPE_STRING and bound.max_length:
        schema["maxLength"] = bound.max_length
    elif kind == _T.TYPE_BYTES and bound.max_length:
        schema["maxLength"] = 4 * -(-bound.max_length // 3)  # its base64 form
    elif schema.get("type") == "integer":  # 64-bit integers are strings in JSON
        if bound.minimum is not None:
            schema["minimum"] = bound.minimum
        if bound.maximum is not None:
            schema["maximum"] = bound.maximum
    return schema


def _well_known(full_name: str) -> Schema | None:
    """The inline JSON schema of a well-known type with a special JSON form, if it is one."""
    if full_name in _WRAPPERS:
        # A wrapper exists to tell "unset" from the default, so JSON null is meaningful.
        wrapped = dict(_SCALARS[_WRAPPERS[full_name]])
        wrapped["type"] = [wrapped["type"], "null"]
        return wrapped
    forms: dict[str, Schema] = {
        "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
        "google.protobuf.Duration": {
            "type": "string",
            "pattern": r"^-?[0-9]+(\.[0-9]+)?s$",
            "examples": ["1.5s"],
        },
        "google.protobuf.FieldMask": {
            "type": "string",
            "description": "Comma-separated field paths in lowerCamelCase, e.g. `name,price`.",
        },
        "google.protobuf.Empty": {"type": "object"},
        "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
        "google.protobuf.Value": {},
        "google.protobuf.ListValue": {"type": "array", "items": {}},
        "google.protobuf.NullValue": {"type": "null"},
    }
    return forms.get(full_name)


def any_schema() -> Schema:
    return {
        "type": "object",
        "description": "A message of any type, named by its `@type` URL, with its own fields.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    }


def _prose(comment: str) -> str:
    """A proto comment as text: lines of a paragraph joined, paragraphs kept apart."""
    blocks = re.split(r"\n\s*\n", comment.strip())
    paragraphs = (" ".join(line.strip() for line in b.splitlines() if line.strip()) for b in blocks)
    return "\n\n".join(p for p in paragraphs if p)


def json_name(proto: Field) -> str:
    if proto.HasField("json_name"):
        return proto.json_name
    head, *rest = proto.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def field_behaviors(proto: Field) -> set[int]:
    # Re-parse so the extension is read even if the set was parsed before it was registered.
    options = descriptor_pb2.FieldOptions.FromString(proto.options.SerializeToString())
    return set(options.Extensions[field_behavior_pb2.field_behavior])


@dataclass(frozen=True)
class Located:
    """A descriptor with the file it is declared in and its `SourceCodeInfo` path."""

    proto: Any
    file: str
    path: tuple[int, ...]


@dataclass
class Index:
    """Every message, enum and comment in a descriptor set, by full name and path."""

    messages: dict[str, Located] = field(default_factory=dict)
    enums: dict[str, Located] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    @classmethod
    def of(cls, files: descriptor_pb2.FileDescriptorSet) -> Index:
        index = cls()
        for file in files.file:
            for location in file.source_code_info.location:
                text = location.leading_comments or location.trailing_comments
                if text.strip():
                    index.comments[(file.name, tuple(location.path))] = _prose(text)
            prefix = f"{file.package}." if file.package else ""
            for i, enum in enumerate(file.enum_type):
                index.enums[prefix + enum.name] = Located(enum, file.name, (_FILE_ENUM, i))
            for i, message in enumerate(file.message_type):
                index._add_message(prefix, message, file.name, (_FILE_MESSAGE, i))
        return index

    def _add_message(
        self, prefix: str, message: descriptor_pb2.DescriptorProto, file: str, path: tuple[int, ...]
    ) -> None:
        full_name = prefix + message.name
        self.messages[full_name] = Located(message, file, path)
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{full_name}.{enum.name}"] = Located(enum, file, (*path, _MESSAGE_ENUM, i))
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{full_name}.", nested, file, (*path, _MESSAGE_NESTED, i))

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")

    def message(self, type_name: str) -> Located:
        name = type_name.lstrip(".")
        if name not in self.messages:
            raise ValueError(f"message {name} is not in the descriptor set (imports missing?)")
        return self.messages[name]

    def fields(self, message: Located) -> Iterator[tuple[Field, str]]:
        """The fields of `message`, each with its comment."""
        for i, proto in enumerate(message.proto.field):
            yield proto, self.comment(message.file, (*message.path, _MESSAGE_FIELD, i))


@dataclass
class Schemas:
    """Builds `components.schemas`, adding each message or enum the first time it is used."""

    index: Index
    components: dict[str, Schema] = field(default_factory=dict)

    def message(self, type_name: str, inherited: Limits | None = None) -> Schema:
        """A schema for a message-typed value: a well-known form inline, the message in
        place if `inherited` bounds fields of it, else a `$ref`."""
        name = type_name.lstrip(".")
        known = _well_known(name)
        if known is not None:
            return dict(known)
        if inherited is not None and self._takes_bounds(name):
            return self.object(self.index.message(name), inherited=inherited)
        if name == ANY:
            self.components[ANY] = any_schema()
        elif name not in self.components:
            self.components[name] = {}  # claimed first, so recursive messages terminate
            self.components[name] = self.object(self.index.message(name))
        return {"$ref": f"#/components/schemas/{name}"}

    def enum(self, type_name: str) -> Schema:
        name = type_name.lstrip(".")
        if name not in self.components:
            located = self.index.enums[name]
            values = list(located.proto.value)
            lines = []
            for i, value in enumerate(values):
                about = self.index.comment(located.file, (*located.path, _ENUM_VALUE, i))
                lines.append(f"- `{value.name}`: {about}" if about else f"- `{value.name}`")
            about_enum = self.index.comment(located.file, located.path)
            schema: Schema = {"type": "string", "enum": [v.name for v in values]}
            schema["description"] = "\n\n".join(p for p in (about_enum, "\n".join(lines)) if p)
            self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def _takes_bounds(self, name: str) -> bool:
        """Whether a field of message `name` declares no limits where it could take some
        from the field holding the message."""
        return any(
            Limits.of_proto(proto) is None
            and (
                proto.label == Field.LABEL_REPEATED
                or proto.type in (_T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_MESSAGE)
            )
            for proto in self.index.message(name).proto.field
        )

    def value(self, proto: Field, bound: Limits | None = None) -> Schema:
        """The schema of one value of a field, ignoring `repeated`, within `bound`."""
        if proto.type == _T.TYPE_ENUM:
            return self.enum(proto.type_name)
        if proto.type in (_T.TYPE_MESSAGE, _T.TYPE_GROUP):
            return self.message(proto.type_name, bound.passed_down() if bound else None)
        return _bounded(dict(_SCALARS[proto.type]), proto.type, bound)

    def map_entry(self, proto: Field) -> descriptor_pb2.DescriptorProto | None:
        if proto.type != _T.TYPE_MESSAGE or proto.label != Field.LABEL_REPEATED:
            return None
        entry: descriptor_pb2.DescriptorProto = self.index.message(proto.type_name).proto
        return entry if entry.options.map_entry else None

    def field_type(self, proto: Field, inherited: Limits | None = None) -> Schema:
        """The schema of a field's JSON value: maps and repeated fields included, within
        the field's limits (its own, else `inherited`)."""
        bound = Limits.of_proto(proto) or inherited
        entry = self.map_entry(proto)
        if entry is not None:
            key, value = entry.field[0], entry.field[1]
            schema: Schema = {"type": "object", "additionalProperties": self.value(value, bound)}
            names: Schema = {}
            if key.type not in (_T.TYPE_STRING, _T.TYPE_BOOL):
                names["pattern"] = _SCALARS[key.type].get("pattern", _INT64)
            elif key.type == _T.TYPE_STRING and bound is not None and bound.max_length:
                names["maxLength"] = bound.max_length
            if names:
                schema["propertyNames"] = names
            if bound is not None and bound.max_items:
                schema["maxProperties"] = bound.max_items
            return schema
        if proto.label == Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value(proto, bound)}
            if bound is not None and bound.max_items:
                schema["maxItems"] = bound.max_items
            return schema
        return self.value(proto, bound)

    def property(self, proto: Field, comment: str, inherited: Limits | None = None) -> Schema:
        schema = self.field_type(proto, inherited)
        if comment:
            schema["description"] = comment
        behaviors = field_behaviors(proto)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        if proto.options.deprecated:
            schema["deprecated"] = True
        return schema

    def object(
        self, message: Located, without: Collection[str] = (), inherited: Limits | None = None
    ) -> Schema:
        """A message as a JSON object, leaving out the fields named in `without`, its
        fields bounded by `inherited` where they declare no limits of their own."""
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for proto, comment in self.index.fields(message):
            if proto.name in without:
                continue
            name = json_name(proto)
            properties[name] = self.property(proto, comment, inherited)
            behaviors = field_behaviors(proto)
            # Responses omit default values, so an output-only field is never guaranteed.
            if (
                field_behavior_pb2.REQUIRED in behaviors
                and field_behavior_pb2.OUTPUT_ONLY not in behaviors
            ):
                required.append(name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = sorted(required)
        description = self.index.comment(message.file, message.path)
        if description:
            schema["description"] = description
        return schema
