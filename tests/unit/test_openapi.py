"""The OpenAPI document built from the real descriptor set, as the edge's clients read it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, wrappers_pb2
from openapi_spec_validator import validate

from mesh.control.contracts import DESCRIPTOR_SET, Workspace, load_descriptor_set
from mesh.control.openapi import build_openapi, write_openapi

_T = descriptor_pb2.FieldDescriptorProto

SERVICES = {"catalog", "orders", "identity", "inventory"}
GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"
LIST_PRODUCTS = "/shop.catalog.v1.CatalogService/ListProducts"
CREATE_PRODUCT = "/shop.catalog.v1.CatalogService/CreateProduct"
PUBLIC = {GET_PRODUCT, LIST_PRODUCTS, "/shop.identity.v1.IdentityService/Login"}
SCOPES = {CREATE_PRODUCT: "catalog:write"}


@pytest.fixture(scope="module")
def files() -> descriptor_pb2.FileDescriptorSet:
    root = Workspace.find(Path(__file__).parent).root
    return load_descriptor_set(root / DESCRIPTOR_SET)


@pytest.fixture(scope="module")
def doc(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    return build_openapi(files, services=SERVICES, public_methods=PUBLIC, scopes=SCOPES)


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def _params(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _body_schema(operation: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "http://127.0.0.1:8080"}]
    assert doc["info"]["title"] == "Shop API"
    assert "lowerCamelCase" in doc["info"]["description"]


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert "#/components/schemas/shop.catalog.v1.Product" in refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref


def test_internal_methods_are_absent(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert "ReserveStock" not in text
    assert "CommitReservation" not in text
    # The public inventory methods of the same service are there.
    assert "get" in doc["paths"]["/v1/products/{productId}/stock"]


def test_only_exposed_services_appear(doc: dict[str, Any]) -> None:
    assert [tag["name"] for tag in doc["tags"]] == [
        "CatalogService",
        "CatalogServiceV2",
        "IdentityService",
        "InventoryService",
        "OrdersService",
    ]
    assert "/v1/payments/{id}" not in doc["paths"]
    assert not any(name.startswith("shop.payments.") for name in doc["components"]["schemas"])


def test_every_version_of_a_service_is_documented_under_its_own_tag(
    doc: dict[str, Any],
) -> None:
    tags = {tag["name"]: tag for tag in doc["tags"]}
    assert "Version 2 of the API" in tags["CatalogServiceV2"]["description"]
    v1, v2 = doc["paths"]["/v1/products/{id}"], doc["paths"]["/v2/products/{productsId}"]
    assert v1["get"]["operationId"] == "CatalogService_GetProduct"
    assert v2["get"]["operationId"] == "CatalogServiceV2_GetProduct"
    assert v2["get"]["tags"] == ["CatalogServiceV2"]
    assert _body_schema(doc["paths"]["/v2/products"]["post"]) == {
        "$ref": "#/components/schemas/shop.catalog.v2.Product"
    }
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_a_resource_name_in_the_path_is_written_out_by_its_segments(
    doc: dict[str, Any],
) -> None:
    """`/v2/{name=products/*}`: a client sends `/v2/products/tea`, and the document says so."""
    for verb, field in [("get", "name"), ("delete", "name"), ("patch", "product.name")]:
        operation = doc["paths"]["/v2/products/{productsId}"][verb]
        segment = _params(operation, "path")["productsId"]
        assert segment["schema"] == {"type": "string", "pattern": "^[^/]+$"}
        assert segment["required"] is True
        assert segment["description"].endswith(f"The segment after `products/` of `{field}`.")
        assert "name" not in _params(operation, "query")


def test_an_update_mask_is_a_query_parameter_of_an_update(doc: dict[str, Any]) -> None:
    v2_mask = _params(doc["paths"]["/v2/products/{productsId}"]["patch"], "query")["updateMask"]
    assert v2_mask["schema"]["type"] == "string"
    assert v2_mask["required"] is True
    v1_mask = _params(doc["paths"]["/v1/products/{id}"]["patch"], "query")["updateMask"]
    assert "required" not in v1_mask


def test_unknown_service_is_an_error(files: descriptor_pb2.FileDescriptorSet) -> None:
    with pytest.raises(ValueError, match=r"shop\.billing\.<version>"):
        build_openapi(files, services={"billing"}, public_methods=(), scopes={})


def test_list_products_takes_query_parameters(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/products"]["get"]
    query = _params(operation, "query")
    assert list(query) == ["category", "pageSize", "pageToken", "view"]
    assert query["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["view"]["schema"] == {"$ref": "#/components/schemas/shop.catalog.v1.ProductView"}
    assert "requestBody" not in operation
    assert operation["operationId"] == "CatalogService_ListProducts"


def test_repeated_query_parameter_is_an_exploded_array(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/products:batchGet"]["get"]
    ids = _params(operation, "query")["ids"]
    assert ids["schema"] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 64},
        "maxItems": 100,
    }
    assert (ids["style"], ids["explode"], ids["required"]) == ("form", True, True)


def test_create_product_has_a_body_and_needs_a_scoped_token(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/products"]["post"]
    assert _body_schema(operation) == {
        "$ref": "#/components/schemas/shop.catalog.v1.CreateProductRequest"
    }
    assert operation["requestBody"]["required"] is True
    assert "parameters" not in operation
    assert operation["security"] == [{"bearerAuth": []}]
    assert operation["x-required-scopes"] == ["catalog:write"]
    assert "Requires scope `catalog:write`." in operation["description"]
    assert {"401", "403"} <= set(operation["responses"])


def test_get_product_binds_the_id_in_the_path(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/products/{id}"]["get"]
    assert operation["parameters"] == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "maxLength": 64},
            "description": "The id of the product to return.",
        },
        {
            "name": "view",
            "in": "query",
            "schema": {"$ref": "#/components/schemas/shop.catalog.v1.ProductView"},
            "description": "Which fields of the product to return; the basic view when it is "
            "not given. Over REST, `?view=PRODUCT_VIEW_WITH_STOCK`.",
        },
    ]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/shop.catalog.v1.GetProductResponse"
    }


def test_update_product_body_is_the_product(doc: dict[str, Any]) -> None:
    # `{product.id}` shares the path of `GET /v1/products/{id}`, under the field's JSON name.
    operation = doc["paths"]["/v1/products/{id}"]["patch"]
    assert set(doc["paths"]["/v1/products/{id}"]) == {"get", "patch", "delete"}
    assert _body_schema(operation) == {"$ref": "#/components/schemas/shop.catalog.v1.Product"}
    path = _params(operation, "path")
    assert list(path) == ["id"]
    assert path["id"]["required"] is True
    # Fields outside the body and the path may still come in the query string.
    assert "requestId" in _params(operation, "query")


def test_path_parameters_go_by_their_json_names_as_bodies_and_queries_do(
    doc: dict[str, Any],
) -> None:
    stock_paths = [path for path in doc["paths"] if path.startswith("/v1/products/{productId}")]
    assert stock_paths == [
        "/v1/products/{productId}/stock",
        "/v1/products/{productId}/stock:adjust",
    ]
    assert not [path for path in doc["paths"] if "_" in path]
    for path in stock_paths:
        for operation in doc["paths"][path].values():
            assert list(_params(operation, "path")) == ["productId"]
            if "requestBody" in operation:
                assert "productId" not in _body_schema(operation).get("properties", {})


def test_body_star_leaves_out_path_bound_fields(doc: dict[str, Any]) -> None:
    operation = doc["paths"]["/v1/orders/{id}:cancel"]["post"]
    body = _body_schema(operation)
    assert set(body["properties"]) == {"reason", "requestId"}
    assert list(_params(operation, "path")) == ["id"]


def test_field_behavior_shapes_the_product_schema(doc: dict[str, Any]) -> None:
    product = _schema(doc, "shop.catalog.v1.Product")
    assert product["properties"]["id"]["readOnly"] is True
    assert "id" not in product["required"]
    assert {"name", "price", "category"} <= set(product["required"])
    assert "weightGrams" in product["properties"]
    assert "weight_grams" not in product["properties"]


def test_input_only_field_is_write_only_and_still_required(doc: dict[str, Any]) -> None:
    request = _schema(doc, "shop.orders.v1.PlaceOrderRequest")
    assert request["properties"]["paymentToken"]["writeOnly"] is True
    assert "paymentToken" in request["required"]


def test_money_units_is_a_64_bit_string(doc: dict[str, Any]) -> None:
    units = _schema(doc, "shop.catalog.v1.Product")["properties"]["price"]["properties"]["units"]
    assert units["type"] == "string"
    assert units["format"] == "int64"
    assert units["pattern"] == "^-?[0-9]+$"


def test_timestamps_are_date_time_strings(doc: dict[str, Any]) -> None:
    create_time = _schema(doc, "shop.catalog.v1.Product")["properties"]["createTime"]
    assert (create_time["type"], create_time["format"]) == ("string", "date-time")
    assert "google.protobuf.Timestamp" not in doc["components"]["schemas"]


def test_enums_list_their_value_names(doc: dict[str, Any]) -> None:
    status = _schema(doc, "shop.orders.v1.OrderStatus")
    assert status["type"] == "string"
    assert status["enum"] == [
        "ORDER_STATUS_UNSPECIFIED",
        "ORDER_STATUS_PENDING",
        "ORDER_STATUS_CONFIRMED",
        "ORDER_STATUS_CANCELLED",
    ]
    assert "`ORDER_STATUS_PENDING`: The order was placed" in status["description"]


def test_descriptions_come_from_the_proto_comments(doc: dict[str, Any]) -> None:
    product = _schema(doc, "shop.catalog.v1.Product")
    assert product["description"] == "A Product is something the shop sells."
    assert product["properties"]["name"]["description"] == (
        "The product's display name; it must not be empty."
    )
    get_order = doc["paths"]["/v1/orders/{id}"]["get"]
    assert get_order["summary"] == "Returns one order by its id."
    # Wrapped comment lines are joined into one paragraph.
    assert get_order["description"] == (
        "Returns one order by its id. A customer sees only their own orders; another "
        "customer's order fails with NOT_FOUND, as if it did not exist."
    )
    tags = {tag["name"]: tag for tag in doc["tags"]}
    assert tags["CatalogService"]["description"].startswith(
        "CatalogService owns the shop's products"
    )


def test_public_and_secured_operations_follow_the_arguments(doc: dict[str, Any]) -> None:
    public = doc["paths"]["/v1/products/{id}"]["get"]
    assert public["security"] == []
    assert "401" not in public["responses"]
    assert "x-required-scopes" not in public
    secured = doc["paths"]["/v1/orders"]["post"]
    assert secured["security"] == [{"bearerAuth": []}]
    assert "x-required-scopes" not in secured
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for operation in (public, secured):
        assert {"400", "404", "429", "500", "503", "default"} <= set(operation["responses"])
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth"}


def test_with_api_keys_a_key_may_stand_for_the_token(
    files: descriptor_pb2.FileDescriptorSet,
) -> None:
    doc = build_openapi(
        files, services=SERVICES, public_methods=PUBLIC, scopes=SCOPES, api_keys=True
    )
    assert doc["paths"]["/v1/products/{id}"]["get"]["security"] == []
    secured = doc["paths"]["/v1/orders"]["post"]
    assert secured["security"] == [{"bearerAuth": []}, {"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
    }


def test_errors_are_google_rpc_status(doc: dict[str, Any]) -> None:
    not_found = doc["components"]["responses"]["NotFound"]
    assert not_found["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/google.rpc.Status"
    }
    status = _schema(doc, "google.rpc.Status")
    assert status["properties"]["code"]["type"] == "integer"
    assert status["properties"]["message"]["type"] == "string"
    detail = _schema(doc, "google.protobuf.Any")
    assert detail["required"] == ["@type"]
    assert detail["additionalProperties"] is True


def test_output_is_deterministic(files: descriptor_pb2.FileDescriptorSet, tmp_path: Path) -> None:
    def build() -> dict[str, Any]:
        return build_openapi(
            files, services=list(SERVICES), public_methods=list(PUBLIC), scopes=dict(SCOPES)
        )

    first = write_openapi(build(), tmp_path / "a" / "openapi.json")
    second = write_openapi(build(), tmp_path / "b" / "openapi.json")
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_text()) == build()


def _kinds_set(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """The real set plus a small contract using the types our own protos do not use."""
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    kinds = descriptor_pb2.FileDescriptorProto(
        name="shop/kinds/v1/kinds.proto",
        package="shop.kinds.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/field_mask.proto",
            wrappers.name,
        ],
    )
    message = kinds.message_type.add(name="Kinds")
    entry = message.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_T.TYPE_STRING, json_name="key")
    entry.field.add(name="value", number=2, type=_T.TYPE_INT64, json_name="value")
    for number, (name, kind, type_name) in enumerate(
        [
            ("count", _T.TYPE_UINT64, ""),
            ("blob", _T.TYPE_BYTES, ""),
            ("ratio", _T.TYPE_DOUBLE, ""),
            ("nickname", _T.TYPE_MESSAGE, ".google.protobuf.StringValue"),
            ("update_mask", _T.TYPE_MESSAGE, ".google.protobuf.FieldMask"),
        ],
        start=1,
    ):
        message.field.add(name=name, number=number, type=kind, type_name=type_name)
    message.field.add(
        name="labels",
        number=6,
        type=_T.TYPE_MESSAGE,
        label=_T.LABEL_REPEATED,
        type_name=".shop.kinds.v1.Kinds.LabelsEntry",
        json_name="labels",
    )
    service = kinds.service.add(name="KindsService")
    method = service.method.add(
        name="GetKinds", input_type=".shop.kinds.v1.Kinds", output_type=".shop.kinds.v1.Kinds"
    )
    rule = method.options.Extensions[annotations_pb2.http]
    rule.get = "/v1/kinds/{count}"
    rule.additional_bindings.add(post="/v1/kinds:get", body="*")
    combined = descriptor_pb2.FileDescriptorSet()
    combined.CopyFrom(files)
    combined.file.extend([wrappers, kinds])
    return combined


def test_scalar_map_and_wrapper_types(files: descriptor_pb2.FileDescriptorSet) -> None:
    doc = build_openapi(_kinds_set(files), services={"kinds"}, public_methods=(), scopes={})
    validate(doc)
    properties = _schema(doc, "shop.kinds.v1.Kinds")["properties"]
    assert properties["count"] == {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"}
    assert properties["blob"] == {"type": "string", "contentEncoding": "base64"}
    assert properties["ratio"] == {"type": "number", "format": "double"}
    assert properties["nickname"] == {"type": ["string", "null"]}
    assert properties["updateMask"]["type"] == "string"
    assert properties["labels"]["type"] == "object"
    assert properties["labels"]["additionalProperties"]["format"] == "int64"
    # A map entry is an implementation detail of the descriptor, not a schema of its own.
    assert "shop.kinds.v1.Kinds.LabelsEntry" not in doc["components"]["schemas"]


def test_additional_bindings_become_operations(files: descriptor_pb2.FileDescriptorSet) -> None:
    doc = build_openapi(_kinds_set(files), services={"kinds"}, public_methods=(), scopes={})
    primary = doc["paths"]["/v1/kinds/{count}"]["get"]
    extra = doc["paths"]["/v1/kinds:get"]["post"]
    assert primary["operationId"] == "KindsService_GetKinds"
    assert extra["operationId"] == "KindsService_GetKinds_1"
    # Non-scalar fields (the map, the wrapper) never become query parameters; a field
    # mask does, in its JSON form, a string.
    assert list(_params(primary, "query")) == ["blob", "ratio", "updateMask"]
    assert "requestBody" in extra
    assert "parameters" not in extra


def test_declared_limits_are_schema_bounds(doc: dict[str, Any]) -> None:
    request = _schema(doc, "shop.orders.v1.PlaceOrderRequest")["properties"]
    assert request["lines"]["maxItems"] == 100
    assert request["customerId"]["maxLength"] == 64
    quantity = _schema(doc, "shop.orders.v1.OrderLine")["properties"]["quantity"]
    assert (quantity["minimum"], quantity["maximum"]) == (1, 1000)


def test_a_message_bounded_by_its_field_is_written_in_place(doc: dict[str, Any]) -> None:
    address = _schema(doc, "shop.orders.v1.PlaceOrderRequest")["properties"]["shippingAddress"]
    assert "$ref" not in address
    lines = address["properties"]["addressLines"]
    assert lines["maxItems"] == 5
    assert lines["items"]["maxLength"] == 200
    assert address["properties"]["regionCode"]["maxLength"] == 200
    assert "google.type.PostalAddress" not in doc["components"]["schemas"]
