"""Money's checked arithmetic and its parsing of the wire form."""

from __future__ import annotations

import pytest
from google.type import money_pb2

from mesh.runtime.errors import InvalidArgument, OutOfRange
from mesh.runtime.money import MAX_MINOR_UNITS, Money, MoneyError


def test_the_largest_amount_either_way_is_an_amount() -> None:
    assert Money("EUR", MAX_MINOR_UNITS).to_proto().units == MAX_MINOR_UNITS // 100
    assert Money("EUR", -MAX_MINOR_UNITS).minor_units == -MAX_MINOR_UNITS


@pytest.mark.parametrize(
    "compute",
    [
        lambda: Money("EUR", MAX_MINOR_UNITS) + Money("EUR", 1),
        lambda: Money("EUR", -MAX_MINOR_UNITS) - Money("EUR", 1),
        lambda: Money("EUR", MAX_MINOR_UNITS // 3 + 1) * 3,
    ],
    ids=["sum", "difference", "product"],
)
def test_arithmetic_past_the_largest_amount_is_out_of_range(compute: object) -> None:
    with pytest.raises(OutOfRange) as failure:
        compute()  # type: ignore[operator]
    assert failure.value.reason == "AMOUNT_OUT_OF_RANGE"


def test_a_wire_amount_past_the_largest_is_a_money_error_on_its_field() -> None:
    wire = money_pb2.Money(currency_code="EUR", units=MAX_MINOR_UNITS // 100 + 1)
    with pytest.raises(MoneyError):
        Money.from_proto(wire)
    with pytest.raises(InvalidArgument) as failure:
        Money.from_request(wire, "product.price")
    assert [v.field for v in failure.value.violations] == ["product.price"]


def test_an_unknown_currency_is_not_echoed() -> None:
    with pytest.raises(InvalidArgument) as failure:
        Money.from_request(money_pb2.Money(currency_code="<script>"), "price")
    assert "<script>" not in failure.value.message
    assert "ISO 4217" in failure.value.violations[0].description
