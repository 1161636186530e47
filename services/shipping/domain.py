"""Shipping's domain: what a parcel costs to send, and the shipments of orders."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from mesh.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from mesh.runtime.money import Money

#: The region the shop ships from; parcels that stay in it are domestic.
HOME_REGION = "DE"

#: Member states of the European Union (CLDR region codes), the shop's second zone.
EU_REGIONS = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
        "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
    }
)  # fmt: skip

#: The heaviest parcel a carrier accepts, in grams.
MAX_WEIGHT_GRAMS = 31_500
#: The postal code at which the (simulated) carrier finds no delivery address when a
#: parcel is booked. A real carrier checks an address only then, so an order is placed
#: and paid before it can know: its shipment fails (`ShipmentFailed`), the payment is
#: refunded and the stock released. The tests and the README use it for that path, as
#: the processor's `tok_declined` for a declined card.
UNDELIVERABLE_POSTAL_CODE = "00000"

_REGION_CODE = re.compile(r"[A-Z]{2}")

#: Tracking numbers are "SHP" and 12 characters of the RFC 4648 base32 alphabet.
TRACKING_PREFIX = "SHP"
TRACKING_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
TRACKING_LENGTH = 12
TRACKING_NUMBER = re.compile(rf"{TRACKING_PREFIX}[{TRACKING_ALPHABET}]{{{TRACKING_LENGTH}}}")


class Zone(Enum):
    """How far a parcel travels, which sets its carrier, price and delivery time."""

    DOMESTIC = "DOMESTIC"
    EU = "EU"
    WORLD = "WORLD"


@dataclass(frozen=True)
class Rate:
    """A zone's carrier and delivery time, and its price per weight band."""

    carrier: str
    estimated_days: int
    bands: tuple[tuple[int, int], ...]
    """(heaviest weight in grams, price in euro cents), lightest band first."""


RATES = {
    Zone.DOMESTIC: Rate("DHL", 2, ((1_000, 499), (5_000, 699), (MAX_WEIGHT_GRAMS, 999))),
    Zone.EU: Rate("DHL", 5, ((1_000, 999), (5_000, 1_499), (MAX_WEIGHT_GRAMS, 2_499))),
    Zone.WORLD: Rate("UPS", 10, ((1_000, 1_999), (5_000, 3_499), (MAX_WEIGHT_GRAMS, 5_999))),
}


@dataclass(frozen=True)
class Destination:
    """The address a parcel goes to (the parts of a `google.type.PostalAddress` we keep)."""

    region_code: str
    postal_code: str = ""
    administrative_area: str = ""
    locality: str = ""
    address_lines: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    organization: str = ""


@dataclass(frozen=True)
class Quote:
    """What sending a parcel costs, who carries it and how long it takes."""

    cost: Money
    carrier: str
    estimated_days: int


class ShipmentStatus(Enum):
    SCHEDULED = "SCHEDULED"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Shipment:
    """The parcel that carries one order to its customer."""

    id: str
    order_id: str
    customer_id: str
    """The customer whose order it carries: the only one who may read it."""
    destination: Destination
    weight_grams: int
    cost: Money
    carrier: str
    tracking_number: str
    status: ShipmentStatus
    cancel_reason: str
    create_time: datetime
    update_time: datetime


def shipment_not_found(shipment_id: str) -> NotFound:
    return NotFound(
        f"shipment {shipment_id!r} does not exist",
        reason="SHIPMENT_NOT_FOUND",
        metadata={"shipment_id": shipment_id},
    )


def visible_to(shipment: Shipment, customer: str) -> bool:
    """Whether `customer` may see `shipment`: only its own customer may."""
    return shipment.customer_id == customer


def _violations(destination: Destination, weight_grams: int) -> list[FieldViolation]:
    problems = []
    if not destination.region_code:
        problems.append(
            FieldViolation("destination.region_code", "The region code is required.", "REQUIRED")
        )
    elif not _REGION_CODE.fullmatch(destination.region_code):
        problems.append(
            FieldViolation(
                "destination.region_code",
                "The region code must be a two-letter CLDR region code, e.g. DE.",
            )
        )
    if not destination.postal_code.strip() and not any(
        line.strip() for line in destination.address_lines
    ):
        problems.append(
            FieldViolation(
                "destination.address_lines",
                "The destination needs a postal code or at least one address line.",
                "REQUIRED",
            )
        )
    if weight_grams <= 0:
        problems.append(FieldViolation("weight_grams", "The weight must be positive."))
    elif weight_grams > MAX_WEIGHT_GRAMS:
        problems.append(
            FieldViolation("weight_grams", f"The weight must be at most {MAX_WEIGHT_GRAMS} grams.")
        )
    return problems


def zone_of(region_code: str) -> Zone:
    if region_code == HOME_REGION:
        return Zone.DOMESTIC
    return Zone.EU if region_code in EU_REGIONS else Zone.WORLD


def quote(destination: Destination, weight_grams: int) -> Quote:
    """The price, carrier and delivery time of a parcel, from its zone and weight band."""
    problems = _violations(destination, weight_grams)
    if problems:
        raise InvalidArgument.of(problems)
    rate = RATES[zone_of(destination.region_code)]
    cents = next(price for heaviest, price in rate.bands if weight_grams <= heaviest)
    return Quote(Money("EUR", cents), rate.carrier, rate.estimated_days)


def new_tracking_number() -> str:
    """A fresh random tracking number (60 random bits; the database refuses a repeat)."""
    return TRACKING_PREFIX + "".join(
        secrets.choice(TRACKING_ALPHABET) for _ in range(TRACKING_LENGTH)
    )


def new_shipment(
    *,
    order_id: str,
    customer_id: str,
    destination: Destination,
    weight_grams: int,
    now: datetime,
) -> Shipment:
    """A scheduled shipment of a customer's order, costing what it is quoted, if the
    carrier finds the address (FAILED_PRECONDITION, ADDRESS_UNDELIVERABLE, if not)."""
    priced = quote(destination, weight_grams)
    if destination.postal_code.strip() == UNDELIVERABLE_POSTAL_CODE:
        raise FailedPrecondition(
            f"the carrier finds no delivery address at postal code {UNDELIVERABLE_POSTAL_CODE}",
            reason="ADDRESS_UNDELIVERABLE",
            metadata={"postal_code": UNDELIVERABLE_POSTAL_CODE},
        )
    return Shipment(
        id=str(uuid.uuid4()),
        order_id=order_id,
        customer_id=customer_id,
        destination=destination,
        weight_grams=weight_grams,
        cost=priced.cost,
        carrier=priced.carrier,
        tracking_number=new_tracking_number(),
        status=ShipmentStatus.SCHEDULED,
        cancel_reason="",
        create_time=now,
        update_time=now,
    )


def cancelled(shipment: Shipment, reason: str, now: datetime) -> Shipment:
    """`shipment`, called off; a shipment already cancelled stays as it was."""
    if shipment.status is ShipmentStatus.CANCELLED:
        return shipment
    return replace(shipment, status=ShipmentStatus.CANCELLED, cancel_reason=reason, update_time=now)
