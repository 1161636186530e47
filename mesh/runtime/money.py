"""Money as the services compute with it, and its `google.type.Money` wire form.

Amounts are whole minor units (cents) in an ISO 4217 currency, so totals never suffer
binary rounding; `google.type.Money` (units + nanos) is the contract's representation.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.type import money_pb2

from mesh.runtime.errors import FieldViolation, InvalidArgument, OutOfRange

#: ISO 4217 currencies the shop accepts, with their number of minor-unit digits.
CURRENCIES: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2,
    "CZK": 2, "CAD": 2, "AUD": 2, "NZD": 2, "JPY": 0, "KRW": 0, "INR": 2, "CNY": 2,
    "BRL": 2, "MXN": 2, "ZAR": 2, "SGD": 2, "HKD": 2,
}  # fmt: skip

_NANOS_PER_UNIT = 1_000_000_000

#: The largest amount in minor units: what a BIGINT column and an int64 field hold.
MAX_MINOR_UNITS = 2**63 - 1

_UNKNOWN_CURRENCY = "unknown currency; use an ISO 4217 code the shop accepts, such as EUR"


class MoneyError(ValueError):
    """An amount that cannot be represented: unknown currency, sub-minor-unit precision,
    or more than `MAX_MINOR_UNITS`."""


@dataclass(frozen=True, order=True)
class Money:
    """An amount of one currency, in its minor units.

    Arithmetic is checked: a result past `MAX_MINOR_UNITS` either way is OUT_OF_RANGE
    (AMOUNT_OUT_OF_RANGE), raised where it is computed rather than where it is stored.
    """

    currency: str
    minor_units: int

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise MoneyError(_UNKNOWN_CURRENCY)
        if abs(self.minor_units) > MAX_MINOR_UNITS:
            raise OutOfRange(
                f"the amount is larger than the shop can hold ({MAX_MINOR_UNITS} minor units)",
                reason="AMOUNT_OUT_OF_RANGE",
                metadata={"currency": self.currency},
            )

    @property
    def _scale(self) -> int:
        scale: int = 10 ** CURRENCIES[self.currency]
        return scale

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.currency, self.minor_units + other.minor_units)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.currency, self.minor_units - other.minor_units)

    def __mul__(self, factor: int) -> Money:
        return Money(self.currency, self.minor_units * factor)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise MoneyError(f"cannot combine {self.currency} with {other.currency}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(currency, 0)

    @classmethod
    def from_proto(cls, money: money_pb2.Money) -> Money:
        """Parse the wire form; raise MoneyError if it is not a valid amount."""
        currency = money.currency_code.upper()
        if currency not in CURRENCIES:
            raise MoneyError(_UNKNOWN_CURRENCY)
        if (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
            raise MoneyError("units and nanos must have the same sign")
        if not -_NANOS_PER_UNIT < money.nanos < _NANOS_PER_UNIT:
            raise MoneyError("nanos must lie between -999,999,999 and +999,999,999")
        scale = 10 ** CURRENCIES[currency]
        nanos_per_minor = _NANOS_PER_UNIT // scale
        if money.nanos % nanos_per_minor:
            raise MoneyError(f"{currency} has no unit smaller than 1/{scale}")
        minor_units = money.units * scale + money.nanos // nanos_per_minor
        if abs(minor_units) > MAX_MINOR_UNITS:
            raise MoneyError(f"the amount is larger than the shop can hold in {currency}")
        return cls(currency, minor_units)

    @classmethod
    def from_request(cls, money: money_pb2.Money, field: str) -> Money:
        """Parse a request's money field; a bad amount is INVALID_ARGUMENT on `field`."""
        try:
            return cls.from_proto(money)
        except MoneyError as error:
            raise InvalidArgument.of([FieldViolation(field, f"{error}.")]) from None

    def to_proto(self) -> money_pb2.Money:
        units, minor = divmod(abs(self.minor_units), self._scale)
        sign = -1 if self.minor_units < 0 else 1
        nanos = minor * (_NANOS_PER_UNIT // self._scale)
        return money_pb2.Money(currency_code=self.currency, units=sign * units, nanos=sign * nanos)

    def __str__(self) -> str:
        digits = CURRENCIES[self.currency]
        units, minor = divmod(abs(self.minor_units), self._scale)
        sign = "-" if self.minor_units < 0 else ""
        return (
            f"{sign}{units}.{minor:0{digits}d} {self.currency}"
            if digits
            else f"{sign}{units} {self.currency}"
        )
