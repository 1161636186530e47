"""Field paths in a REST client's words: JSON names for calls the edge transcoded, on the
real generated types."""

from __future__ import annotations

from google.protobuf import struct_pb2

from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.json_names import (
    CLIENT_CERT_HEADER,
    REST_METHOD_HEADER,
    from_rest_client,
    json_path,
)
from mesh.runtime.validation import validate
from shop.events.v1 import events_pb2 as events
from shop.orders.v1 import orders_service_pb2 as orders

PLACE_ORDER = orders.PlaceOrderRequest()


def _client_cert(caller: str) -> tuple[str, str]:
    """The header a sidecar sets for a verified `caller` (its own id in `By`)."""
    sidecar = "spiffe://shop.local/ns/shop/sa/orders"
    caller_id = f"spiffe://shop.local/ns/shop/sa/{caller}"
    return CLIENT_CERT_HEADER, f"By={sidecar};Hash=0a1b2c;URI={caller_id}"


def test_nested_and_indexed_fields_take_their_json_names() -> None:
    assert json_path(PLACE_ORDER, "shipping_address.address_lines[0]") == (
        "shippingAddress.addressLines[0]"
    )
    assert json_path(PLACE_ORDER, "lines[2].product_id") == "lines[2].productId"
    assert json_path(PLACE_ORDER, "payment_token") == "paymentToken"


def test_a_name_that_is_already_its_json_name_is_kept() -> None:
    assert json_path(PLACE_ORDER, "lines") == "lines"
    assert json_path(PLACE_ORDER, "lines[0].quantity") == "lines[0].quantity"


def test_a_map_field_and_the_fields_of_its_message_values_are_renamed() -> None:
    assert json_path(events.EventEnvelope(), "trace_context") == "traceContext"
    assert json_path(struct_pb2.Struct(), "fields.string_value") == "fields.stringValue"


def test_from_a_name_that_is_no_field_on_the_path_is_kept_as_it_is() -> None:
    assert json_path(PLACE_ORDER, "no_such_field.address_lines") == "no_such_field.address_lines"
    assert json_path(PLACE_ORDER, "shipping_address.no_such_field.region_code") == (
        "shippingAddress.no_such_field.region_code"
    )
    # A scalar has no fields below it.
    assert json_path(PLACE_ORDER, "payment_token.some_part") == "paymentToken.some_part"


def test_validation_violations_renamed_name_the_field_as_a_rest_client_sent_it() -> None:
    request = orders.PlaceOrderRequest(payment_token="tok_visa")
    request.lines.add(product_id="p", quantity=1)
    request.shipping_address.region_code = "DE"
    request.shipping_address.address_lines.append("x" * 201)
    error = InvalidArgument.of(validate(request))
    renamed = error.renamed(lambda path: json_path(PLACE_ORDER, path))
    assert [(v.field, v.description, v.reason) for v in renamed.violations] == [
        (
            "shippingAddress.addressLines[0]",
            "shippingAddress.addressLines[0] is longer than 200 characters.",
            "TOO_LONG",
        )
    ]
    assert renamed.message == (
        "invalid request: shippingAddress.addressLines[0]: "
        "shippingAddress.addressLines[0] is longer than 200 characters."
    )
    assert error.violations[0].field == "shipping_address.address_lines[0]"


def test_renaming_rewords_only_whole_paths() -> None:
    error = InvalidArgument.of(
        [
            FieldViolation("shipping_address", "shipping_address is required."),
            FieldViolation("payment_token", "payment_tokens and payment_token.x are other names."),
        ]
    )
    renamed = error.renamed(lambda path: json_path(PLACE_ORDER, path))
    assert [(v.field, v.description) for v in renamed.violations] == [
        ("shippingAddress", "shippingAddress is required."),
        ("paymentToken", "payment_tokens and payment_token.x are other names."),
    ]


def test_renaming_keeps_what_is_not_a_path_and_an_error_with_nothing_to_rename() -> None:
    error = InvalidArgument(
        message="invalid request: product 'p' is not in the catalog",
        reason="UNKNOWN_PRODUCT",
        metadata={"product_id": "p"},
        violations=[FieldViolation("lines[1].product_id", "Product 'p' is unknown.")],
    )
    renamed = error.renamed(lambda path: json_path(PLACE_ORDER, path))
    assert (renamed.message, renamed.reason, dict(renamed.metadata)) == (
        error.message,
        "UNKNOWN_PRODUCT",
        {"product_id": "p"},
    )
    assert [v.field for v in renamed.violations] == ["lines[1].productId"]
    same = InvalidArgument.of([FieldViolation("lines", "lines is required.")])
    assert same.renamed(lambda path: json_path(PLACE_ORDER, path)) is same


def test_a_call_the_edge_marked_as_rest_is_a_rest_clients() -> None:
    assert from_rest_client([(REST_METHOD_HEADER, "POST"), _client_cert("edge")])


def test_the_mark_counts_only_from_the_edge() -> None:
    assert not from_rest_client([(REST_METHOD_HEADER, "POST"), _client_cert("orders")])
    assert not from_rest_client([(REST_METHOD_HEADER, "POST")])
    # The sidecar's own id (`By`) is not the caller's.
    edge_sidecar = "By=spiffe://shop.local/ns/shop/sa/edge;URI=spiffe://shop.local/ns/shop/sa/x"
    assert not from_rest_client([(REST_METHOD_HEADER, "GET"), (CLIENT_CERT_HEADER, edge_sidecar)])


def test_a_call_from_the_edge_without_the_mark_is_a_grpc_clients() -> None:
    assert not from_rest_client([_client_cert("edge")])
    assert not from_rest_client([(REST_METHOD_HEADER, ""), _client_cert("edge")])
    assert not from_rest_client(None)
