"""Validation from the contracts' declarations (`google.api.field_behavior` and
`shop.options.v1.limits`), on the real generated types."""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from google.type import money_pb2, postal_address_pb2

from mesh.runtime.validation import ELLIPSIS, fit, validate
from shop.catalog.v1 import catalog_service_pb2 as catalog
from shop.catalog.v2 import catalog_service_pb2 as catalog_v2
from shop.events.v1 import events_pb2 as events
from shop.orders.v1 import orders_service_pb2 as orders


def _fields(message: object) -> list[str]:
    return [v.field for v in validate(message)]  # type: ignore[arg-type]


def _product(**overrides: object) -> catalog.Product:
    values: dict[str, object] = {
        "name": "Tea",
        "category": "food",
        "price": money_pb2.Money(currency_code="EUR", units=4),
        "weight_grams": 250,
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
    assert _fields(request) == ["product.price", "product.category", "product.weight_grams"]


def test_an_update_mask_of_every_field_requires_every_field() -> None:
    """`*` is a full replacement (AIP-134): it waives nothing, as a named path would."""
    every = field_mask_pb2.FieldMask(paths=["*"])
    request = catalog_v2.UpdateProductRequest(
        product=catalog_v2.Product(name="products/p1", display_name="Tea"), update_mask=every
    )
    assert _fields(request) == ["product.price", "product.category", "product.weight_grams"]


def test_a_required_update_mask_must_name_something() -> None:
    """v2 takes no empty mask for "every field", which a client may send by mistake."""
    product = catalog_v2.Product(
        name="products/p1",
        display_name="Tea",
        category="food",
        price=money_pb2.Money(currency_code="EUR", units=4),
        weight_grams=250,
    )
    request = catalog_v2.UpdateProductRequest(product=product)
    assert _fields(request) == ["update_mask"]


def _order(**overrides: object) -> orders.PlaceOrderRequest:
    values: dict[str, object] = {
        "lines": [orders.OrderLine(product_id="p1", quantity=1)],
        "shipping_address": postal_address_pb2.PostalAddress(
            region_code="DE", address_lines=["Hauptstr. 1"]
        ),
        "payment_token": "tok_visa",
    }
    values.update(overrides)
    return orders.PlaceOrderRequest(**values)  # type: ignore[arg-type]


def test_a_text_at_its_bound_passes_and_one_past_it_is_too_long() -> None:
    # Characters, not bytes: 200 two-byte characters are within a bound of 200.
    assert validate(catalog.CreateProductRequest(product=_product(name="é" * 200))) == []
    violations = validate(catalog.CreateProductRequest(product=_product(name="n" * 201)))
    assert [(v.field, v.reason) for v in violations] == [("product.name", "TOO_LONG")]
    assert violations[0].description == "product.name is longer than 200 characters."


def test_a_violation_never_repeats_the_value_it_refuses() -> None:
    secret = "s3cr3t-" * 40
    request = _order(payment_token=secret, lines=[orders.OrderLine(product_id=secret, quantity=1)])
    violations = validate(request)
    assert {v.field for v in violations} == {"payment_token", "lines[0].product_id"}
    assert not any("s3cr3t" in v.description for v in violations)


def test_a_list_past_its_most_items_is_reported_once_without_its_elements() -> None:
    line = orders.OrderLine(product_id="p" * 100, quantity=1)  # each too long, too
    violations = validate(_order(lines=[line] * 101))
    assert [(v.field, v.reason) for v in violations] == [("lines", "TOO_MANY_ITEMS")]
    assert violations[0].description == "lines has more than 100 items."


def test_each_element_of_a_list_of_texts_is_bounded_by_its_index() -> None:
    request = catalog.BatchGetProductsRequest(ids=["a", "b" * 65, "c"])
    assert [(v.field, v.reason) for v in validate(request)] == [("ids[1]", "TOO_LONG")]


def test_an_integer_outside_its_range_is_out_of_range() -> None:
    line = orders.OrderLine(product_id="p1", quantity=1001)
    violations = validate(_order(lines=[orders.OrderLine(product_id="p1", quantity=1000), line]))
    assert [(v.field, v.reason) for v in violations] == [("lines[1].quantity", "OUT_OF_RANGE")]
    assert violations[0].description == "lines[1].quantity must be at least 1 and at most 1,000."


def test_limits_on_a_message_field_bound_the_texts_and_lists_inside_it() -> None:
    """google.type.PostalAddress declares nothing; `shipping_address` bounds its insides."""
    many = postal_address_pb2.PostalAddress(region_code="DE", address_lines=["x"] * 6)
    long_line = postal_address_pb2.PostalAddress(region_code="DE", address_lines=["x" * 201])
    long_city = postal_address_pb2.PostalAddress(region_code="DE", locality="x" * 10**6)
    assert _fields(_order(shipping_address=many)) == ["shipping_address.address_lines"]
    assert _fields(_order(shipping_address=long_line)) == ["shipping_address.address_lines[0]"]
    assert _fields(_order(shipping_address=long_city)) == ["shipping_address.locality"]


def test_limits_hold_outside_an_update_mask_too() -> None:
    request = catalog.UpdateProductRequest(
        product=catalog.Product(id="p1", name="Tea", description="d" * 10_001),
        update_mask=field_mask_pb2.FieldMask(paths=["name"]),
    )
    assert _fields(request) == ["product.description"]


def test_an_update_mask_is_bounded_in_paths_and_their_length() -> None:
    product = catalog.Product(id="p1", name="Tea")
    too_many = field_mask_pb2.FieldMask(paths=["name"] * 17)
    too_long = field_mask_pb2.FieldMask(paths=["n" * 65])
    assert _fields(catalog.UpdateProductRequest(product=product, update_mask=too_many)) == [
        "update_mask.paths"
    ]
    assert _fields(catalog.UpdateProductRequest(product=product, update_mask=too_long)) == [
        "update_mask.paths[0]"
    ]


def test_a_map_is_bounded_in_entries_and_in_its_keys_and_values() -> None:
    def envelope(context: dict[str, str]) -> events.EventEnvelope:
        return events.EventEnvelope(event_id="e1", trace_context=context)

    assert validate(envelope({"traceparent": "t" * 512})) == []
    assert _fields(envelope({f"k{i}": "v" for i in range(9)})) == ["trace_context"]
    long_key = validate(envelope({"k" * 513: "v"}))
    assert [(v.field, v.reason) for v in long_key] == [("trace_context", "TOO_LONG")]
    assert "k" * 20 not in long_key[0].description
    assert _fields(envelope({"traceparent": "t" * 513})) == ["trace_context"]


def test_fit_shortens_what_a_service_composes_to_its_contract() -> None:
    rejected = events.StockRejected(
        order_id="o1", reason="r" * 5000, unavailable_product_ids=["p"] * 150
    )
    message = events.EventEnvelope(event_id="e1", stock_rejected=rejected)
    assert validate(message) != []
    fit(message)
    assert validate(message) == []
    assert message.stock_rejected.reason == "r" * 999 + ELLIPSIS
    assert len(message.stock_rejected.unavailable_product_ids) == 100
    assert message.stock_rejected.order_id == "o1"
