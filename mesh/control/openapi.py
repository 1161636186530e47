"""The OpenAPI 3.1 document of the edge's REST API, derived from the contracts.

The edge serves REST/JSON with Envoy's `grpc_json_transcoder`, reading the descriptor set
that `meshctl proto gen` builds (`gen/descriptors/shop.binpb`). This module reads the same
descriptor set, so the document describes exactly what the edge serves and cannot drift
from it:

* an operation for every method of an exposed service that carries a `google.api.http`
  rule (and each of its `additional_bindings`); methods marked INTERNAL have no rule and
  are not served, so they do not appear;
* every version of each exposed service's API (`shop.catalog.v1`, `shop.catalog.v2`), each
  its own tag (`CatalogService`; a version past v1 qualified: `CatalogServiceV2`, so
  operation ids stay unique: `CatalogServiceV2_GetProduct`);
* path parameters, the request body and query parameters as the transcoder binds them,
  all named by the fields' JSON names: path-bound fields come from the template (its
  variables renamed: `{product_id}` is `{productId}`; a variable bound to a resource
  name pattern written out as the segments it matches, each wildcard a parameter named
  after the collection before it, as Google's flat paths do: `{name=products/*}` is
  `products/{productsId}`), `body: "*"` takes every other field,
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, visibility_pb2
from google.protobuf import descriptor_pb2

from mesh.control.openapi_schemas import (
    ANY,
    FILE_SERVICE,
    SERVICE_METHOD,
    Field,
    Index,
    Located,
    Schema,
    Schemas,
    any_schema,
    field_behaviors,
    json_name,
)

#: The schema of the JSON error body the transcoder returns for a failed call.
STATUS_SCHEMA_NAME = "google.rpc.Status"

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")

#: A path variable in an HttpRule template: `{id}`, `{product.id}` or `{name=shelves/*}`,
#: with the field it binds and the segments it matches, if the template says.
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
#: The type of a field mask, as a field of a descriptor names it.
_FIELD_MASK = ".google.protobuf.FieldMask"
#: The version whose tags and operation ids are the service's bare name: the first.
_FIRST_VERSION = "v1"


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
                "items": {"$ref": f"#/components/schemas/{ANY}"},
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


def _first_sentence(text: str) -> str:
    paragraph = text.split("\n\n", 1)[0]
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def _resolve(index: Index, message: Located, dotted: str) -> tuple[Field, str]:
    """The field at `dotted` (proto names, e.g. `product.id`) below `message`, and its comment."""
    *parents, last = dotted.split(".")
    current = message
    for name in parents:
        parent = next((f for f, _ in index.fields(current) if f.name == name), None)
        if parent is None or parent.type != Field.TYPE_MESSAGE:
            raise ValueError(f"{dotted}: {name} is not a message field of {current.proto.name}")
        current = index.message(parent.type_name)
    for proto, comment in index.fields(current):
        if proto.name == last:
            return proto, comment
    raise ValueError(f"{dotted}: no field {last} in {current.proto.name}")


def _is_query_field(schemas: Schemas, proto: Field) -> bool:
    """Whether the transcoder reads this field from the query string: scalars and enums,
    and a field mask, whose JSON form is a string (`updateMask=displayName,price`)."""
    if schemas.map_entry(proto) is not None:
        return False
    if proto.type_name == _FIELD_MASK:
        return True
    return proto.type not in (Field.TYPE_MESSAGE, Field.TYPE_GROUP)


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


def _tag(package: str, service: str) -> str:
    """The tag of a service in one API version: its name, qualified past the first
    version (`CatalogServiceV2` for `shop.catalog.v2.CatalogService`)."""
    version = package.rpartition(".")[2]
    return service if version == _FIRST_VERSION else f"{service}{version.capitalize()}"


@dataclass(frozen=True)
class _Method:
    """One RPC to document, with what the edge's arguments say about it."""

    service: str
    """Its service's tag (`_tag`)."""
    proto: descriptor_pb2.MethodDescriptorProto
    grpc_path: str
    comment: str
    rule: Any


def _service_of(package: str) -> str | None:
    """The service a package of ours is a version of: `catalog` for `shop.catalog.v2`."""
    parts = package.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "shop" else None


def _exposed_packages(
    files: descriptor_pb2.FileDescriptorSet, services: Collection[str]
) -> set[str]:
    """The packages of every version of the services' APIs (`shop.catalog.v1`, ...)."""
    packages = {file.package for file in files.file if _service_of(file.package) in services}
    missing = set(services) - {_service_of(package) for package in packages}
    if missing:
        named = ", ".join(f"shop.{name}.<version>" for name in sorted(missing))
        raise ValueError(f"services not in the descriptor set: {named}")
    return packages


def _exposed_methods(
    files: descriptor_pb2.FileDescriptorSet, index: Index, services: Collection[str]
) -> tuple[list[_Method], list[Schema]]:
    packages = _exposed_packages(files, services)
    methods: list[_Method] = []
    tags: list[Schema] = []
    for file in files.file:
        if file.package not in packages:
            continue
        for s, service in enumerate(file.service):
            tag: Schema = {"name": _tag(file.package, service.name)}
            about = index.comment(file.name, (FILE_SERVICE, s))
            if about:
                tag["description"] = about
            tags.append(tag)
            methods += _routed_methods(file, s, tag["name"], index)
    return methods, sorted(tags, key=lambda t: str(t["name"]))


def _routed_methods(
    file: descriptor_pb2.FileDescriptorProto, s: int, tag: str, index: Index
) -> list[_Method]:
    """The methods of the file's `s`th service the edge routes: those with an HTTP rule,
    never an INTERNAL one."""
    service = file.service[s]
    methods = []
    for m, method in enumerate(service.method):
        options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
        visibility = options.Extensions[visibility_pb2.method_visibility].restriction
        internal = "INTERNAL" in (label.strip() for label in visibility.split(","))
        if internal or not options.HasExtension(annotations_pb2.http):
            continue
        methods.append(
            _Method(
                service=tag,
                proto=method,
                grpc_path=f"/{file.package}.{service.name}/{method.name}",
                comment=index.comment(file.name, (FILE_SERVICE, s, SERVICE_METHOD, m)),
                rule=options.Extensions[annotations_pb2.http],
            )
        )
    return methods


def path_parameter_name(index: Index, request: Located, field_path: str) -> str:
    """The OpenAPI name of a path variable: the bound field's JSON name, as the body and
    the query string name fields (`{product_id}` becomes `{productId}`).

    `{product.id}` becomes `{id}`, so `PATCH /v1/products/{product.id}` and
    `GET /v1/products/{id}` share one OpenAPI path (OpenAPI refuses two templates that
    differ only in variable names, and dotted names trip common tools). The name is only
    a name: the transcoder binds a path's segments by their place in the template.
    """
    return json_name(_resolve(index, request, field_path)[0])


@dataclass(frozen=True)
class _PathVariable:
    """One parameter of an OpenAPI path, and the field of the request it sets."""

    name: str
    field: str
    collection: str = ""
    """For a segment of a resource name (`{name=products/*}`): the collection before it."""


def _segments(field: str, pattern: str) -> tuple[str, list[_PathVariable]]:
    """A variable bound to a resource name pattern (`{name=products/*}`) as the segments
    it matches, each wildcard a parameter named after the collection before it
    (`products/{productsId}`), as Google's flat paths name them: the path shows what a
    client sends, where one `{name}` parameter would have it escape the slash."""
    written: list[str] = []
    variables: list[_PathVariable] = []
    for segment in pattern.split("/"):
        collection = written[-1] if written and "{" not in written[-1] else ""
        if segment == "*" and collection:
            variables.append(_PathVariable(f"{collection}Id", field, collection))
            written.append("{" + f"{collection}Id" + "}")
        elif "*" in segment:
            raise ValueError(
                f"{{{field}={pattern}}}: only a wildcard after a collection is supported"
            )
        else:
            written.append(segment)
    return "/".join(written), variables


def _openapi_path(index: Index, request: Located, template: str) -> tuple[str, list[_PathVariable]]:
    """An HttpRule template as an OpenAPI path, and the path's parameters in order."""
    variables: list[_PathVariable] = []

    def written(variable: re.Match[str]) -> str:
        field, pattern = variable[1], variable[2]
        if pattern and pattern != "*":
            segments, found = _segments(field, pattern)
            variables.extend(found)
            return segments
        name = path_parameter_name(index, request, field)
        variables.append(_PathVariable(name, field))
        return "{" + name + "}"

    return _TEMPLATE_VARIABLE.sub(written, template), variables


def _operation(
    schemas: Schemas,
    method: _Method,
    binding: Any,
    operation_id: str,
    variables: list[_PathVariable],
    *,
    public: bool,
    scope: str | None,
) -> Schema:
    """The operation of one HTTP binding of `method`, whose path has `variables`."""
    request = schemas.index.message(method.proto.input_type)
    bound = list(dict.fromkeys(variable.field for variable in variables))
    parameters = [_path_parameter(schemas, request, variable) for variable in variables]
    operation: Schema = {"operationId": operation_id, "tags": [method.service]}
    body = _request_body(schemas, method, request, binding.body, bound)
    if body is not None:
        operation["requestBody"] = body
    if binding.body != "*":
        from_path_or_body = {dotted.split(".")[0] for dotted in bound} | {binding.body}
        parameters += _query_parameters(schemas, request, without=from_path_or_body)
    if parameters:
        operation["parameters"] = parameters
    operation.update(_description(method, scope))
    operation["responses"] = _responses(schemas, method, binding, public=public)
    operation["security"] = [] if public else [{"bearerAuth": []}]
    return operation


def _path_parameter(schemas: Schemas, request: Located, variable: _PathVariable) -> Schema:
    proto, about = _resolve(schemas.index, request, variable.field)
    if variable.collection:  # one segment of the field's resource name
        schema: Schema = {"type": "string", "pattern": "^[^/]+$"}
        segment = f"The segment after `{variable.collection}/` of `{variable.field}`."
        about = f"{about}\n\n{segment}" if about else segment
    else:
        schema = schemas.field_type(proto)
    parameter: Schema = {
        "name": variable.name,
        "in": "path",
        "required": True,
        "schema": schema,
    }
    if about:
        parameter["description"] = about
    return parameter


def _request_body(
    schemas: Schemas, method: _Method, request: Located, body: str, bound: list[str]
) -> Schema | None:
    """The request body as the rule's `body` binds it: every field not in the path
    (`*`), one field, or none."""
    if body == "*":
        # Path-bound fields come from the path; a field also set in the body is overwritten.
        direct = {dotted for dotted in bound if "." not in dotted}
        schema = schemas.object(request, without=direct) if direct else None
        return _json_body(schema or schemas.message(method.proto.input_type), required=True)
    if not body:
        return None
    proto, about = _resolve(schemas.index, request, body)
    request_body = _json_body(schemas.field_type(proto), required=True)
    if about:
        request_body["description"] = about
    return request_body


def _query_parameters(
    schemas: Schemas, request: Located, *, without: Collection[str]
) -> list[Schema]:
    """The request's fields the query string may set: those neither in the path nor the
    body (`without`) that the transcoder reads from a query string."""
    parameters: list[Schema] = []
    for proto, about in schemas.index.fields(request):
        if proto.name in without or not _is_query_field(schemas, proto):
            continue
        query: Schema = {"name": json_name(proto), "in": "query"}
        query["schema"] = schemas.field_type(proto)
        if proto.label == Field.LABEL_REPEATED:
            query.update(style="form", explode=True)
        if field_behavior_pb2.REQUIRED in field_behaviors(proto):
            query["required"] = True
        if about:
            query["description"] = about
        parameters.append(query)
    return parameters


def _description(method: _Method, scope: str | None) -> Schema:
    """The operation's description and summary from the method's comment, its scope and
    whether it is deprecated."""
    described: Schema = {}
    description = method.comment
    if scope:
        description = f"{description}\n\nRequires scope `{scope}`.".strip()
        described["x-required-scopes"] = [scope]
    if description:
        described["description"] = description
        described["summary"] = _first_sentence(description)
    if method.proto.options.deprecated:
        described["deprecated"] = True
    return described


def _responses(schemas: Schemas, method: _Method, binding: Any, *, public: bool) -> Schema:
    """The success response (the rule's `response_body` field, or the whole response) and
    the error responses; a public method has no token to refuse."""
    response = schemas.index.message(method.proto.output_type)
    if binding.response_body:
        success = schemas.field_type(_resolve(schemas.index, response, binding.response_body)[0])
    else:
        success = schemas.message(method.proto.output_type)
    responses: Schema = {"200": _json_body(success, description="The call succeeded.")}
    for status, name, _ in _ERRORS:
        if status in _TOKEN_ERRORS and public:
            continue
        responses[status] = {"$ref": f"#/components/responses/{name}"}
    return responses


def _json_body(schema: Schema, *, required: bool = False, description: str = "") -> Schema:
    body: Schema = {"content": {"application/json": {"schema": schema}}}
    if required:
        body["required"] = True
    if description:
        body["description"] = description
    return body


def _paths(
    schemas: Schemas,
    methods: list[_Method],
    public_methods: Collection[str],
    scopes: Mapping[str, str],
) -> dict[str, dict[str, Schema]]:
    """Every binding of every method as an operation, by OpenAPI path, then HTTP method."""
    paths: dict[str, dict[str, Schema]] = {}
    operation_ids: set[str] = set()
    for method in methods:
        for n, binding in enumerate(_bindings(method.rule)):
            verb, template = _verb_and_template(binding)
            if verb not in _HTTP_METHODS:
                raise ValueError(f"{method.grpc_path}: unsupported HTTP method {verb!r}")
            request = schemas.index.message(method.proto.input_type)
            path, variables = _openapi_path(schemas.index, request, template)
            if verb in paths.get(path, {}):
                raise ValueError(f"{verb.upper()} {path} is bound twice ({method.grpc_path})")
            operation_id = f"{method.service}_{method.proto.name}" + (f"_{n}" if n else "")
            if operation_id in operation_ids:
                raise ValueError(f"operation id {operation_id} is taken twice ({method.grpc_path})")
            operation_ids.add(operation_id)
            paths.setdefault(path, {})[verb] = _operation(
                schemas,
                method,
                binding,
                operation_id,
                variables,
                public=method.grpc_path in public_methods,
                scope=scopes.get(method.grpc_path),
            )
    return paths


_BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
_API_KEY = "apiKey"


def _key_or_token(paths: Mapping[str, Mapping[str, Schema]]) -> None:
    """Every operation that needs a bearer token takes an API key instead."""
    for operations in paths.values():
        for operation in operations.values():
            if operation["security"]:
                operation["security"] = [*operation["security"], {_API_KEY: []}]


def build_openapi(
    files: descriptor_pb2.FileDescriptorSet,
    *,
    services: Collection[str],
    public_methods: Collection[str],
    scopes: Mapping[str, str],
    title: str = "Shop API",
    version: str = "v1",
    server_url: str = "http://127.0.0.1:8080",
    api_keys: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of what the edge serves for `services`; with `api_keys`,
    an API key in `x-api-key` may stand for the bearer token wherever one is needed.

    `services` are short names (`catalog` for every version, `shop.catalog.v1`,
    `shop.catalog.v2`); `public_methods` and `scopes` are keyed by gRPC path
    (`/shop.catalog.v1.CatalogService/GetProduct`), as the edge's JWT rules are. Raises
    ValueError when a service or a type is missing from `files`, or when two bindings
    claim the same HTTP method and path or two operations the same id.
    """
    index = Index.of(files)
    schemas = Schemas(index)
    methods, tags = _exposed_methods(files, index, services)
    paths = _paths(schemas, methods, public_methods, scopes)
    security_schemes: dict[str, Any] = {"bearerAuth": _BEARER}
    if api_keys:
        security_schemes[_API_KEY] = {"type": "apiKey", "in": "header", "name": "x-api-key"}
        _key_or_token(paths)
    schemas.components[ANY] = any_schema()
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
            "securitySchemes": security_schemes,
        },
    }


def write_openapi(document: Mapping[str, Any], path: Path) -> Path:
    """Write `document` as JSON with sorted keys, so two builds diff cleanly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
