"""The OpenAPI 3.1 document of the edge's REST API, derived from the contracts.

The edge serves REST/JSON with Envoy's `grpc_json_transcoder`, reading the descriptor set
that `meshctl proto gen` builds (`gen/descriptors/shop.binpb`). This module reads the same
descriptor set, so the document describes exactly what the edge serves and cannot drift
from it:

* an operation for every method of an exposed service that carries a `google.api.http`
  rule (and each of its `additional_bindings`); methods marked INTERNAL have no rule and
  are not served, so they do not appear;
* path parameters, the request body and query parameters as the transcoder binds them:
  path-bound fields come from the template, `body: "*"` takes every other field,
  `body: "<field>"` takes that field, and what is left that is a scalar, an enum or a
  repeated scalar may be sent in the query string;
* schemas in the proto3 JSON mapping the transcoder applies: lowerCamelCase `json_name`s,
  64-bit integers as decimal strings, enums by name, bytes as base64, the well-known
  types in their special JSON forms;
* `google.api.field_behavior` as `required`, `readOnly` and `writeOnly`, and the proto
  comments as descriptions, so the contracts stay the one place to document the API;
* `shop.options.v1.limits` as `maxLength`, `maxItems`, `maxProperties`, `minimum` and
  `maximum`; a message whose fields take their bounds from the field holding it
  (`google.type.PostalAddress`) is written out in place, with those bounds;
* errors as `google.rpc.Status` JSON bodies, and the edge's JWT rules as security.

No library turns a descriptor set into OpenAPI 3.1 with these rules, so this one is ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, visibility_pb2
from google.protobuf import descriptor_pb2

from mesh.runtime.validation import Limits

Schema = dict[str, Any]

_Field = descriptor_pb2.FieldDescriptorProto

#: The schema of the JSON error body the transcoder returns for a failed call.
STATUS_SCHEMA_NAME = "google.rpc.Status"
_ANY = "google.protobuf.Any"

#: Numbers of fields in descriptor.proto, as they appear in `SourceCodeInfo` paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")

#: A path variable in an HttpRule template: `{id}`, `{product.id}` or `{name=shelves/*}`.
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")

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


def _any_schema() -> Schema:
    return {
        "type": "object",
        "description": "A message of any type, named by its `@type` URL, with its own fields.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    }


def _status_schema() -> Schema:
    return {
        "type": "object",
        "description": (
            "The error body of a failed call: the canonical gRPC status code, a message "
            "for developers and typed details such as `google.rpc.ErrorInfo` (a reason in "
            "UPPER_SNAKE_CASE) or `google.rpc.BadRequest` (the invalid fields)."
        ),
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC code."},
            "message": {"type": "string", "description": "What went wrong, in English."},
            "details": {
                "type": "array",
                "items": {"$ref": f"#/components/schemas/{_ANY}"},
                "description": "Machine-readable details, each named by its `@type`.",
            },
        },
        "required": ["code"],
    }


#: Error responses: (HTTP status, component name, description). The transcoder maps gRPC
#: codes to HTTP statuses the way google.rpc.Code documents.
_ERRORS: tuple[tuple[str, str, str], ...] = (
    ("400", "BadRequest", "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE."),
    ("401", "Unauthenticated", "UNAUTHENTICATED: the bearer token is missing or invalid."),
    ("403", "PermissionDenied", "PERMISSION_DENIED: the token lacks a scope or a right."),
    ("404", "NotFound", "NOT_FOUND: the resource does not exist or is not the caller's."),
    (
        "429",
        "ResourceExhausted",
        "RESOURCE_EXHAUSTED: a rate limit or quota is used up; retry later.",
    ),
    ("500", "Internal", "INTERNAL, UNKNOWN or DATA_LOSS: a fault of the service."),
    ("503", "Unavailable", "UNAVAILABLE: the service cannot be reached now; retry later."),
    ("default", "Error", "Any other failure, as a google.rpc.Status."),
)
_TOKEN_ERRORS = frozenset({"401", "403"})

_API_DESCRIPTION = """\
The shop's public REST API, served by the edge, which transcodes every call to the gRPC \
service behind it; the Protobuf contracts are the source of truth for this document.

Bodies use the proto3 JSON mapping: field names are lowerCamelCase, 64-bit integers are \
decimal strings, enums are their value names, bytes are base64, timestamps are RFC 3339 \
strings. Fields with their default value (empty, zero, false, the `_UNSPECIFIED` enum \
value) are omitted from responses, and unknown fields in a request are ignored.

A failed call answers with an HTTP error status and a `google.rpc.Status` body: the \
gRPC `code`, a `message` and `details` such as `google.rpc.ErrorInfo` (a stable \
UPPER_SNAKE_CASE `reason`) or `google.rpc.BadRequest` (one violation per invalid field). \
Operations that are not public need `Authorization: Bearer <JWT>`."""


def _prose(comment: str) -> str:
    """A proto comment as text: lines of a paragraph joined, paragraphs kept apart."""
    blocks = re.split(r"\n\s*\n", comment.strip())
    paragraphs = (" ".join(line.strip() for line in b.splitlines() if line.strip()) for b in blocks)
    return "\n\n".join(p for p in paragraphs if p)


def _first_sentence(text: str) -> str:
    paragraph = text.split("\n\n", 1)[0]
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _json_name(proto: _Field) -> str:
    if proto.HasField("json_name"):
        return proto.json_name
    head, *rest = proto.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _field_behaviors(proto: _Field) -> set[int]:
    # Re-parse so the extension is read even if the set was parsed before it was registered.
    options = descriptor_pb2.FieldOptions.FromString(proto.options.SerializeToString())
    return set(options.Extensions[field_behavior_pb2.field_behavior])


@dataclass(frozen=True)
class _Located:
    """A descriptor with the file it is declared in and its `SourceCodeInfo` path."""

    proto: Any
    file: str
    path: tuple[int, ...]


@dataclass
class _Index:
    """Every message, enum and comment in a descriptor set, by full name and path."""

    messages: dict[str, _Located] = field(default_factory=dict)
    enums: dict[str, _Located] = field(default_factory=dict)
    comments: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)

    @classmethod
    def of(cls, files: descriptor_pb2.FileDescriptorSet) -> _Index:
        index = cls()
        for file in files.file:
            for location in file.source_code_info.location:
                text = location.leading_comments or location.trailing_comments
                if text.strip():
                    index.comments[(file.name, tuple(location.path))] = _prose(text)
            prefix = f"{file.package}." if file.package else ""
            for i, enum in enumerate(file.enum_type):
                index.enums[prefix + enum.name] = _Located(enum, file.name, (_FILE_ENUM, i))
            for i, message in enumerate(file.message_type):
                index._add_message(prefix, message, file.name, (_FILE_MESSAGE, i))
        return index

    def _add_message(
        self, prefix: str, message: descriptor_pb2.DescriptorProto, file: str, path: tuple[int, ...]
    ) -> None:
        full_name = prefix + message.name
        self.messages[full_name] = _Located(message, file, path)
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{full_name}.{enum.name}"] = _Located(enum, file, (*path, _MESSAGE_ENUM, i))
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{full_name}.", nested, file, (*path, _MESSAGE_NESTED, i))

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")

    def message(self, type_name: str) -> _Located:
        name = type_name.lstrip(".")
        if name not in self.messages:
            raise ValueError(f"message {name} is not in the descriptor set (imports missing?)")
        return self.messages[name]

    def fields(self, message: _Located) -> Iterator[tuple[_Field, str]]:
        """The fields of `message`, each with its comment."""
        for i, proto in enumerate(message.proto.field):
            yield proto, self.comment(message.file, (*message.path, _MESSAGE_FIELD, i))


@dataclass
class _Schemas:
    """Builds `components.schemas`, adding each message or enum the first time it is used."""

    index: _Index
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
        if name == _ANY:
            self.components[_ANY] = _any_schema()
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
                proto.label == _Field.LABEL_REPEATED
                or proto.type in (_T.TYPE_STRING, _T.TYPE_BYTES, _T.TYPE_MESSAGE)
            )
            for proto in self.index.message(name).proto.field
        )

    def value(self, proto: _Field, bound: Limits | None = None) -> Schema:
        """The schema of one value of a field, ignoring `repeated`, within `bound`."""
        if proto.type == _T.TYPE_ENUM:
            return self.enum(proto.type_name)
        if proto.type in (_T.TYPE_MESSAGE, _T.TYPE_GROUP):
            return self.message(proto.type_name, bound.passed_down() if bound else None)
        return _bounded(dict(_SCALARS[proto.type]), proto.type, bound)

    def map_entry(self, proto: _Field) -> descriptor_pb2.DescriptorProto | None:
        if proto.type != _T.TYPE_MESSAGE or proto.label != _Field.LABEL_REPEATED:
            return None
        entry: descriptor_pb2.DescriptorProto = self.index.message(proto.type_name).proto
        return entry if entry.options.map_entry else None

    def field_type(self, proto: _Field, inherited: Limits | None = None) -> Schema:
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
        if proto.label == _Field.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value(proto, bound)}
            if bound is not None and bound.max_items:
                schema["maxItems"] = bound.max_items
            return schema
        return self.value(proto, bound)

    def property(self, proto: _Field, comment: str, inherited: Limits | None = None) -> Schema:
        schema = self.field_type(proto, inherited)
        if comment:
            schema["description"] = comment
        behaviors = _field_behaviors(proto)
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        if proto.options.deprecated:
            schema["deprecated"] = True
        return schema

    def object(
        self, message: _Located, without: Collection[str] = (), inherited: Limits | None = None
    ) -> Schema:
        """A message as a JSON object, leaving out the fields named in `without`, its
        fields bounded by `inherited` where they declare no limits of their own."""
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for proto, comment in self.index.fields(message):
            if proto.name in without:
                continue
            name = _json_name(proto)
            properties[name] = self.property(proto, comment, inherited)
            behaviors = _field_behaviors(proto)
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


def _resolve(index: _Index, message: _Located, dotted: str) -> tuple[_Field, str]:
    """The field at `dotted` (proto names, e.g. `product.id`) below `message`, and its comment."""
    *parents, last = dotted.split(".")
    current = message
    for name in parents:
        parent = next((f for f, _ in index.fields(current) if f.name == name), None)
        if parent is None or parent.type != _T.TYPE_MESSAGE:
            raise ValueError(f"{dotted}: {name} is not a message field of {current.proto.name}")
        current = index.message(parent.type_name)
    for proto, comment in index.fields(current):
        if proto.name == last:
            return proto, comment
    raise ValueError(f"{dotted}: no field {last} in {current.proto.name}")


def _is_query_field(schemas: _Schemas, proto: _Field) -> bool:
    """Whether the transcoder reads this field from the query string: scalars and enums."""
    if schemas.map_entry(proto) is not None:
        return False
    return proto.type not in (_T.TYPE_MESSAGE, _T.TYPE_GROUP)


def _bindings(rule: Any) -> Iterator[Any]:
    yield rule
    yield from rule.additional_bindings


def _verb_and_template(rule: Any) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    if kind not in _HTTP_METHODS:
        raise ValueError(f"unsupported HttpRule pattern {kind!r}")
    return str(kind), str(getattr(rule, kind))


@dataclass(frozen=True)
class _Method:
    """One RPC to document, with what the edge's arguments say about it."""

    service: str
    proto: descriptor_pb2.MethodDescriptorProto
    grpc_path: str
    comment: str
    rule: Any


def _exposed_methods(
    files: descriptor_pb2.FileDescriptorSet, index: _Index, services: Collection[str]
) -> tuple[list[_Method], list[Schema]]:
    packages = {f"shop.{name}.v1" for name in services}
    missing = packages - {file.package for file in files.file}
    if missing:
        raise ValueError(f"services not in the descriptor set: {', '.join(sorted(missing))}")
    methods: list[_Method] = []
    tags: list[Schema] = []
    for file in files.file:
        if file.package not in packages:
            continue
        for s, service in enumerate(file.service):
            tag: Schema = {"name": service.name}
            about = index.comment(file.name, (_FILE_SERVICE, s))
            if about:
                tag["description"] = about
            tags.append(tag)
            for m, method in enumerate(service.method):
                options = descriptor_pb2.MethodOptions.FromString(
                    method.options.SerializeToString()
                )
                visibility = options.Extensions[visibility_pb2.method_visibility].restriction
                internal = "INTERNAL" in (label.strip() for label in visibility.split(","))
                if internal or not options.HasExtension(annotations_pb2.http):
                    continue
                methods.append(
                    _Method(
                        service=service.name,
                        proto=method,
                        grpc_path=f"/{file.package}.{service.name}/{method.name}",
                        comment=index.comment(file.name, (_FILE_SERVICE, s, _SERVICE_METHOD, m)),
                        rule=options.Extensions[annotations_pb2.http],
                    )
                )
    return methods, sorted(tags, key=lambda t: str(t["name"]))


def path_parameter_name(field_path: str) -> str:
    """The OpenAPI name of a path variable: the bound field's own name.

    `{product.id}` becomes `{id}`, so `PATCH /v1/products/{product.id}` and
    `GET /v1/products/{id}` share one OpenAPI path (OpenAPI refuses two templates that
    differ only in variable names, and dotted names trip common tools).
    """
    return field_path.rsplit(".", 1)[-1]


def _operation(
    schemas: _Schemas,
    method: _Method,
    binding: Any,
    operation_id: str,
    template: str,
    *,
    public: bool,
    scope: str | None,
) -> Schema:
    index = schemas.index
    request = index.message(method.proto.input_type)
    parameters: list[Schema] = []
    bound = _TEMPLATE_VARIABLE.findall(template)
    for dotted in bound:
        proto, about = _resolve(index, request, dotted)
        parameter: Schema = {
            "name": path_parameter_name(dotted),
            "in": "path",
            "required": True,
            "schema": schemas.field_type(proto),
        }
        if about:
            parameter["description"] = about
        parameters.append(parameter)

    top_level_bound = {dotted.split(".")[0] for dotted in bound}
    operation: Schema = {"operationId": operation_id, "tags": [method.service]}
    body = binding.body
    if body == "*":
        # Path-bound fields come from the path; a field also set in the body is overwritten.
        direct = {dotted for dotted in bound if "." not in dotted}
        schema = schemas.object(request, without=direct) if direct else None
        operation["requestBody"] = _json_body(
            schema or schemas.message(method.proto.input_type), required=True
        )
    elif body:
        proto, about = _resolve(index, request, body)
        operation["requestBody"] = _json_body(schemas.field_type(proto), required=True)
        if about:
            operation["requestBody"]["description"] = about
    if body != "*":
        for proto, about in index.fields(request):
            if proto.name in top_level_bound or proto.name == body:
                continue
            if not _is_query_field(schemas, proto):
                continue
            query: Schema = {"name": _json_name(proto), "in": "query"}
            query["schema"] = schemas.field_type(proto)
            if proto.label == _Field.LABEL_REPEATED:
                query.update(style="form", explode=True)
            if field_behavior_pb2.REQUIRED in _field_behaviors(proto):
                query["required"] = True
            if about:
                query["description"] = about
            parameters.append(query)
    if parameters:
        operation["parameters"] = parameters

    description = method.comment
    if scope:
        description = f"{description}\n\nRequires scope `{scope}`.".strip()
        operation["x-required-scopes"] = [scope]
    if description:
        operation["description"] = description
        operation["summary"] = _first_sentence(description)
    if method.proto.options.deprecated:
        operation["deprecated"] = True

    response = index.message(method.proto.output_type)
    if binding.response_body:
        success = schemas.field_type(_resolve(index, response, binding.response_body)[0])
    else:
        success = schemas.message(method.proto.output_type)
    responses: Schema = {"200": _json_body(success, description="The call succeeded.")}
    for status, name, _ in _ERRORS:
        if status in _TOKEN_ERRORS and public:
            continue
        responses[status] = {"$ref": f"#/components/responses/{name}"}
    operation["responses"] = responses
    operation["security"] = [] if public else [{"bearerAuth": []}]
    return operation


def _json_body(schema: Schema, *, required: bool = False, description: str = "") -> Schema:
    body: Schema = {"content": {"application/json": {"schema": schema}}}
    if required:
        body["required"] = True
    if description:
        body["description"] = description
    return body


def build_openapi(
    files: descriptor_pb2.FileDescriptorSet,
    *,
    services: Collection[str],
    public_methods: Collection[str],
    scopes: Mapping[str, str],
    title: str = "Shop API",
    version: str = "v1",
    server_url: str = "http://127.0.0.1:8080",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what the edge serves for `services`.

    `services` are short names (`catalog` for `shop.catalog.v1`); `public_methods` and
    `scopes` are keyed by gRPC path (`/shop.catalog.v1.CatalogService/GetProduct`), as the
    edge's JWT rules are. Raises ValueError when a service or a type is missing from
    `files`, or when two bindings claim the same HTTP method and path.
    """
    index = _Index.of(files)
    schemas = _Schemas(index)
    methods, tags = _exposed_methods(files, index, services)
    paths: dict[str, dict[str, Schema]] = {}
    for method in methods:
        for n, binding in enumerate(_bindings(method.rule)):
            verb, template = _verb_and_template(binding)
            if verb not in _HTTP_METHODS:
                raise ValueError(f"{method.grpc_path}: unsupported HTTP method {verb!r}")
            path = _TEMPLATE_VARIABLE.sub(lambda m: "{" + path_parameter_name(m[1]) + "}", template)
            if verb in paths.get(path, {}):
                raise ValueError(f"{verb.upper()} {path} is bound twice ({method.grpc_path})")
            operation_id = f"{method.service}_{method.proto.name}" + (f"_{n}" if n else "")
            paths.setdefault(path, {})[verb] = _operation(
                schemas,
                method,
                binding,
                operation_id,
                template,
                public=method.grpc_path in public_methods,
                scope=scopes.get(method.grpc_path),
            )

    schemas.components[_ANY] = _any_schema()
    schemas.components[STATUS_SCHEMA_NAME] = _status_schema()
    error = {"$ref": f"#/components/schemas/{STATUS_SCHEMA_NAME}"}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": _API_DESCRIPTION},
        "servers": [{"url": server_url}],
        "tags": tags,
        "paths": {path: dict(sorted(ops.items())) for path, ops in sorted(paths.items())},
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {name: _json_body(error, description=about) for _, name, about in _ERRORS},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def write_openapi(document: Mapping[str, Any], path: Path) -> Path:
    """Write `document` as JSON with sorted keys, so two builds diff cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
