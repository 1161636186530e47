"""The orders' domain: orders, their lines and saga history, and the rules they follow."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from mesh.runtime.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from mesh.runtime.money import Money

MAX_LINES = 100
MAX_QUANTITY = 1000
#: The heaviest order, in grams. An order is shipped as one parcel, and a carrier takes
#: none heavier (shipping refuses it): refused here, before the order's saga charges for
#: a parcel that cannot be sent.
MAX_WEIGHT_GRAMS = 31_500
#: A region code shipping can send to: two capital letters (CLDR), e.g. DE.
REGION_CODE = re.compile(r"[A-Z]{2}")

#: An order still PENDING this long after it was placed is stuck (its saga waits on a
#: dead letter), not queued: it no longer counts in the backlog of sagas, so a few stuck
#: orders cannot close the shop to new ones.
BACKLOG_WINDOW = timedelta(minutes=1)
#: When a customer refused for the backlog may try again: about the time the saga takes.
BACKLOG_RETRY_SECONDS = 1.0

#: The first step of every order's history: the order was accepted, PENDING.
ORDER_PLACED = "OrderPlaced"
#: The last step of an order's history: it was confirmed, or it was cancelled.
ORDER_CONFIRMED = "OrderConfirmed"
ORDER_CANCELLED = "OrderCancelled"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


class StepOutcome(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"


@dataclass(frozen=True)
class PricedProduct:
    """A product as the catalog prices it: the only source of an order's prices."""

    id: str
    name: str
    unit_price: Money
    weight_grams: int = 0


@dataclass(frozen=True)
class RequestedLine:
    """What a customer asks for on one line: a product and a quantity, nothing else."""

    product_id: str
    quantity: int


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    product_name: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> Money:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class ShippingAddress:
    """A postal address (the fields of `google.type.PostalAddress` the shop keeps)."""

    region_code: str
    language_code: str = ""
    postal_code: str = ""
    sorting_code: str = ""
    administrative_area: str = ""
    locality: str = ""
    sublocality: str = ""
    address_lines: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    organization: str = ""


@dataclass(frozen=True)
class SagaStep:
    name: str
    outcome: StepOutcome
    detail: str
    time: datetime


@dataclass(frozen=True)
class Order:
    """A customer's purchase; `payment_token` is kept for the saga and never shown."""

    id: str
    customer_id: str
    lines: tuple[OrderLine, ...]
    shipping_address: ShippingAddress
    payment_token: str
    status: OrderStatus
    cancel_reason: str
    history: tuple[SagaStep, ...]
    create_time: datetime
    update_time: datetime
    payment_id: str = ""
    shipment_id: str = ""
    tracking_number: str = ""

    @property
    def total(self) -> Money:
        return lines_total(self.lines)


def lines_total(lines: Sequence[OrderLine]) -> Money:
    """What the lines cost together; OUT_OF_RANGE past the largest amount."""
    total = Money.zero(lines[0].unit_price.currency)
    for line in lines:
        total += line.line_total
    return total


def order_weight(lines: Sequence[OrderLine], catalog: Mapping[str, PricedProduct]) -> int:
    """What the lines weigh together, in grams: FAILED_PRECONDITION for a product without
    a weight (the catalog has required one since; shipping sends nothing without), and
    OUT_OF_RANGE past `MAX_WEIGHT_GRAMS`, one parcel's most."""
    for line in lines:
        if catalog[line.product_id].weight_grams <= 0:
            raise FailedPrecondition(
                f"product {line.product_id!r} has no shipping weight, so it cannot be "
                "shipped; the catalog must give it one before it can be ordered",
                reason="PRODUCT_NOT_SHIPPABLE",
                metadata={"product_id": line.product_id},
            )
    weight = sum(catalog[line.product_id].weight_grams * line.quantity for line in lines)
    if weight > MAX_WEIGHT_GRAMS:
        raise OutOfRange(
            f"the order weighs {weight:,} grams, more than one parcel can "
            f"({MAX_WEIGHT_GRAMS:,}); place it as several orders",
            reason="ORDER_TOO_HEAVY",
            metadata={"weight_grams": str(weight), "limit": str(MAX_WEIGHT_GRAMS)},
        )
    return weight


class ProductNotInCatalog(Exception):
    """The catalog does not know `product_id` (raised by the catalog port)."""

    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id!r} is not in the catalog")
        self.product_id = product_id


def order_not_found(order_id: str) -> NotFound:
    return NotFound(
        f"order {order_id!r} does not exist",
        reason="ORDER_NOT_FOUND",
        metadata={"order_id": order_id},
    )


def too_many_pending(customer_id: str, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        message=f"you have {limit} orders still being processed; "
        "place this one when some of them are done",
        reason="TOO_MANY_PENDING_ORDERS",
        metadata={"customer_id": customer_id, "limit": str(limit)},
        subject=f"customer:{customer_id}",
        retry_after_seconds=BACKLOG_RETRY_SECONDS,
    )


def shop_backlog_full(limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        message=f"the shop is processing {limit} orders already; try again shortly",
        reason="ORDER_BACKLOG_FULL",
        metadata={"limit": str(limit)},
        subject="service:orders",
        retry_after_seconds=BACKLOG_RETRY_SECONDS,
    )


def unknown_product(lines: Sequence[RequestedLine], product_id: str) -> InvalidArgument:
    """The error for a line whose product the catalog does not know."""
    fields = [
        f"lines[{i}].product_id" for i, line in enumerate(lines) if line.product_id == product_id
    ]
    violations = [
        FieldViolation(field, f"Product {product_id!r} is not in the catalog.", "UNKNOWN_PRODUCT")
        for field in fields or ["lines"]
    ]
    return InvalidArgument(
        message=f"invalid request: product {product_id!r} is not in the catalog",
        reason="UNKNOWN_PRODUCT",
        metadata={"product_id": product_id},
        violations=violations,
    )


def check_request(lines: Sequence[RequestedLine], address: ShippingAddress) -> None:
    """Refuse, naming every offending field, lines or an address an order cannot have."""
    problems: list[FieldViolation] = []
    if len(lines) > MAX_LINES:
        problems.append(FieldViolation("lines", f"An order has at most {MAX_LINES} lines."))
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if not 1 <= line.quantity <= MAX_QUANTITY:
            problems.append(
                FieldViolation(
                    f"lines[{index}].quantity",
                    f"The quantity must be between 1 and {MAX_QUANTITY}.",
                )
            )
        if line.product_id in seen:
            problems.append(
                FieldViolation(
                    f"lines[{index}].product_id",
                    "Each product may appear on one line only; add up the quantities.",
                    "DUPLICATE_PRODUCT",
                )
            )
        seen.add(line.product_id)
    problems += _address_violations(address)
    if problems:
        raise InvalidArgument.of(problems)


def _address_violations(address: ShippingAddress) -> list[FieldViolation]:
    """What shipping would refuse of the address, after the order's payment: a region it
    cannot read, or nothing to find the door by (no postal code and no address line)."""
    problems = []
    if not address.region_code.strip():
        problems.append(
            FieldViolation(
                "shipping_address.region_code",
                "The region code (a CLDR region such as 'DE') is required.",
                "REQUIRED",
            )
        )
    elif not REGION_CODE.fullmatch(address.region_code):
        problems.append(
            FieldViolation(
                "shipping_address.region_code",
                "The region code must be two capital letters (a CLDR region such as 'DE').",
            )
        )
    if not address.postal_code.strip() and not any(line.strip() for line in address.address_lines):
        problems.append(
            FieldViolation(
                "shipping_address.address_lines",
                "The address needs a postal code or at least one address line to be shipped to.",
                "REQUIRED",
            )
        )
    return problems


def priced_lines(
    lines: Sequence[RequestedLine], catalog: Mapping[str, PricedProduct]
) -> tuple[OrderLine, ...]:
    """The lines with the catalog's names and prices, all in one currency, whose total
    is an amount the shop can hold."""
    priced = []
    for line in lines:
        product = catalog.get(line.product_id)
        if product is None:
            raise unknown_product(lines, line.product_id)
        priced.append(OrderLine(line.product_id, product.name, line.quantity, product.unit_price))
    currencies = sorted({line.unit_price.currency for line in priced})
    if len(currencies) > 1:
        raise FailedPrecondition(
            f"the products are priced in several currencies ({', '.join(currencies)}); "
            "an order is paid in one currency, so place one order per currency",
            reason="MIXED_CURRENCIES",
            metadata={"currencies": ",".join(currencies)},
        )
    lines_total(priced)
    return tuple(priced)


def new_order(
    *,
    customer_id: str,
    lines: tuple[OrderLine, ...],
    shipping_address: ShippingAddress,
    payment_token: str,
    now: datetime,
) -> Order:
    """A PENDING order whose history starts with its placement."""
    return Order(
        id=str(uuid.uuid4()),
        customer_id=customer_id,
        lines=lines,
        shipping_address=shipping_address,
        payment_token=payment_token,
        status=OrderStatus.PENDING,
        cancel_reason="",
        history=(SagaStep(ORDER_PLACED, StepOutcome.SUCCEEDED, "The order was placed.", now),),
        create_time=now,
        update_time=now,
    )


def cancelled_order(order: Order, reason: str, now: datetime) -> Order:
    """`order` cancelled by its customer; only a PENDING order can be."""
    if order.status is not OrderStatus.PENDING:
        raise FailedPrecondition(
            f"order {order.id!r} is {order.status.value}; only a PENDING order can be cancelled",
            reason="ORDER_NOT_PENDING",
            metadata={"order_id": order.id, "status": order.status.value},
        )
    detail = f"Cancelled by the customer: {reason}" if reason else "Cancelled by the customer."
    return ended(
        order,
        OrderStatus.CANCELLED,
        detail,
        now,
        cancel_reason=reason or "cancelled by the customer",
    )


def with_step(order: Order, name: str, outcome: StepOutcome, detail: str, now: datetime) -> Order:
    """`order` with one more step in its history."""
    step = SagaStep(name, outcome, detail, now)
    return replace(order, history=(*order.history, step), update_time=now)


def ended(
    order: Order, status: OrderStatus, detail: str, now: datetime, cancel_reason: str = ""
) -> Order:
    """`order` in its final status, CONFIRMED or CANCELLED, with the step that says so."""
    name = ORDER_CONFIRMED if status is OrderStatus.CONFIRMED else ORDER_CANCELLED
    step = with_step(order, name, StepOutcome.SUCCEEDED, detail, now)
    return replace(step, status=status, cancel_reason=cancel_reason)


def first_failure(order: Order) -> str:
    """What went wrong first in the saga of `order` ("" if nothing did)."""
    return next((s.detail for s in order.history if s.outcome is StepOutcome.FAILED), "")


def visible_to(order: Order, customer: str) -> bool:
    """Whether `customer` may see `order`: only its own customer may."""
    return order.customer_id == customer
