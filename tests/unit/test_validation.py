"""Validation from `google.api.field_behavior` declarations, on the real generated types."""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from google.type import money_pb2, postal_address_pb2

from mesh.validation import validate
from shop.catalog.v1 import catalog_service_pb2 as catalog
from shop.orders.v1 import orders_service_pb2 as orders


def _fields(message: object) -> list[str]:
    return [v.field for v in validate(message)]  # type: ignore[arg-type]


def _product(**overrides: object) -> catalog.Product:
    values: dict[str, object] = {
        "name": "Tea",
        "category": "food",
        "price": money_pb2.Money(currency_code="EUR", units=4),
    }
    values.update(overrides)
    return catalog.Product(**values)  # type: ignore[arg-type]


def test_complete_request_has_no_violations() -> None:
    assert validate(catalog.CreateProductRequest(product=_product())) == []


def test_missing_message_is_reported_and_not_descended_into() -> None:
    assert _fields(catalog.CreateProductRequest()) == ["product"]


def test_nested_required_fields_are_reported_by_path() -> None:
    request = catalog.CreateProductRequest(product=_product(name="", category=""))
    violations = validate(request)
    assert [v.field for v in violations] == ["product.name", "product.category"]
    assert all(v.reason == "REQUIRED" for v in violations)
    assert violations[0].description == "product.name is required."


def test_repeated_message_elements_are_reported_with_their_index() -> None:
    request = orders.PlaceOrderRequest(
        lines=[
            orders.OrderLine(product_id="a", quantity=1),
            orders.OrderLine(quantity=2),
        ],
        shipping_address=postal_address_pb2.PostalAddress(region_code="DE"),
        payment_token="tok_visa",
    )
    violations = _fields(request)
    assert "lines[1].product_id" in violations
    assert "lines[0].product_id" not in violations


def test_empty_repeated_required_field_is_reported() -> None:
    request = orders.PlaceOrderRequest(
        shipping_address=postal_address_pb2.PostalAddress(region_code="DE"),
        payment_token="tok_visa",
    )
    assert "lines" in _fields(request)


def test_update_mask_limits_required_fields_to_the_masked_ones() -> None:
    partial = catalog.Product(id="p1", description="now organic")
    masked = catalog.UpdateProductRequest(
        product=partial, update_mask=field_mask_pb2.FieldMask(paths=["description"])
    )
    assert validate(masked) == []

    masked_name = catalog.UpdateProductRequest(
        product=partial, update_mask=field_mask_pb2.FieldMask(paths=["name"])
    )
    assert _fields(masked_name) == ["product.name"]


def test_update_without_mask_replaces_everything_so_everything_is_required() -> None:
    request = catalog.UpdateProductRequest(product=catalog.Product(id="p1", name="Tea"))
    assert _fields(request) == ["product.price", "product.category"]
