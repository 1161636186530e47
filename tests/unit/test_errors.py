"""AIP-193 statuses built from domain errors."""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2

from mesh.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    internal_status,
    to_status,
)


def test_domain_error_carries_error_info_first() -> None:
    error = FailedPrecondition(
        "not enough stock for p1", reason="OUT_OF_STOCK", metadata={"product_id": "p1"}
    )
    status = to_status(error, "shop.inventory.v1")
    assert status.code == code_pb2.FAILED_PRECONDITION
    assert status.message == "not enough stock for p1"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "OUT_OF_STOCK",
        "shop.inventory.v1",
        {"product_id": "p1"},
    )


def test_invalid_argument_lists_every_field_violation() -> None:
    error = InvalidArgument.of(
        [
            FieldViolation("product.name", "product.name is required.", reason="REQUIRED"),
            FieldViolation("product.price.units", "must be positive."),
        ]
    )
    status = to_status(error, "shop.catalog.v1")
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "product.name" in status.message
    assert "product.price.units" in status.message
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("product.name", "REQUIRED"),
        ("product.price.units", "INVALID_FIELD"),
    ]


def test_internal_status_says_nothing_of_the_cause() -> None:
    status = internal_status("shop.catalog.v1")
    assert (status.code, status.message) == (code_pb2.INTERNAL, "internal error")
    assert len(status.details) == 1
