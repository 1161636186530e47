"""Shipping's rates and use cases, against an in-memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mesh.runtime.errors import InvalidArgument, NotFound, Unauthenticated
from mesh.runtime.money import Money
from services.shipping import handlers
from services.shipping.domain import (
    MAX_WEIGHT_GRAMS,
    TRACKING_NUMBER,
    Destination,
    Quote,
    Shipment,
    ShipmentStatus,
    new_tracking_number,
    quote,
)

BERLIN = Destination("DE", postal_code="10115", address_lines=("Invalidenstr. 1",))
PARIS = Destination("FR", postal_code="75001")
NEW_YORK = Destination("US", address_lines=("1 Broadway",))


class InMemoryShipping:
    """The store's ports over dicts; a transaction that fails leaves nothing behind."""

    def __init__(self) -> None:
        self.shipments: dict[str, Shipment] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}

    async def get(self, shipment_id: str) -> Shipment | None:
        return self.shipments.get(shipment_id)

    async def get_by_order(self, order_id: str) -> Shipment | None:
        return next((s for s in self.shipments.values() if s.order_id == order_id), None)

    async def add(self, shipment: Shipment) -> None:
        assert shipment.id not in self.shipments
        self.shipments[shipment.id] = shipment

    async def save(self, shipment: Shipment) -> None:
        self.shipments[shipment.id] = shipment

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.requests[(method, request_id)] = result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryShipping]:
        shipments, requests = dict(self.shipments), dict(self.requests)
        try:
            yield self
        except BaseException:
            self.shipments, self.requests = shipments, requests
            raise

    def snapshot(self) -> Any:
        return self.transaction()


def violations(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


@pytest.mark.parametrize(
    ("destination", "weight", "expected"),
    [
        (BERLIN, 1, Quote(Money("EUR", 499), "DHL", 2)),
        (BERLIN, 1_000, Quote(Money("EUR", 499), "DHL", 2)),
        (BERLIN, 1_001, Quote(Money("EUR", 699), "DHL", 2)),
        (BERLIN, MAX_WEIGHT_GRAMS, Quote(Money("EUR", 999), "DHL", 2)),
        (PARIS, 500, Quote(Money("EUR", 999), "DHL", 5)),
        (PARIS, 5_000, Quote(Money("EUR", 1_499), "DHL", 5)),
        (PARIS, 5_001, Quote(Money("EUR", 2_499), "DHL", 5)),
        (NEW_YORK, 500, Quote(Money("EUR", 1_999), "UPS", 10)),
        (NEW_YORK, 2_000, Quote(Money("EUR", 3_499), "UPS", 10)),
        (NEW_YORK, 20_000, Quote(Money("EUR", 5_999), "UPS", 10)),
    ],
)
def test_quote_prices_by_zone_and_weight_band(
    destination: Destination, weight: int, expected: Quote
) -> None:
    assert quote(destination, weight) == expected


@pytest.mark.parametrize(
    ("destination", "weight", "fields"),
    [
        (BERLIN, 0, ["weight_grams"]),
        (BERLIN, -5, ["weight_grams"]),
        (BERLIN, MAX_WEIGHT_GRAMS + 1, ["weight_grams"]),
        (Destination("", postal_code="10115"), 100, ["destination.region_code"]),
        (Destination("de", postal_code="10115"), 100, ["destination.region_code"]),
        (Destination("DEU", postal_code="10115"), 100, ["destination.region_code"]),
        (Destination("DE", address_lines=("  ",)), 100, ["destination.address_lines"]),
        (
            Destination(""),
            0,
            ["destination.region_code", "destination.address_lines", "weight_grams"],
        ),
    ],
)
def test_quote_refuses_bad_input_naming_every_field(
    destination: Destination, weight: int, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as failure:
        quote(destination, weight)
    assert violations(failure.value) == fields


def test_tracking_numbers_are_well_formed_and_differ() -> None:
    numbers = {new_tracking_number() for _ in range(200)}
    assert len(numbers) == 200
    assert all(TRACKING_NUMBER.fullmatch(n) for n in numbers)


def create(order_id: str = "order-1", request_id: str = "", **fields: Any) -> Any:
    return handlers.CreateShipment(
        order_id=order_id,
        customer_id=fields.get("customer_id", "alice"),
        destination=fields.get("destination", PARIS),
        weight_grams=fields.get("weight_grams", 2_000),
        request_id=request_id,
    )


async def test_create_schedules_a_shipment_costing_its_quote() -> None:
    store = InMemoryShipping()
    shipment = await handlers.create_shipment(store, create())
    assert shipment.status is ShipmentStatus.SCHEDULED
    assert shipment.cost == Money("EUR", 1_499)
    assert shipment.carrier == "DHL"
    assert TRACKING_NUMBER.fullmatch(shipment.tracking_number)
    assert shipment.customer_id == "alice"
    assert await handlers.get_shipment(store, "alice", shipment.id) == shipment


async def test_an_order_gets_one_shipment_however_often_it_is_asked_for() -> None:
    store = InMemoryShipping()
    first = await handlers.create_shipment(store, create(request_id="a"))
    again = await handlers.create_shipment(store, create(request_id="b", weight_grams=9_000))
    assert again == first
    assert list(store.shipments) == [first.id]


async def test_a_retried_request_id_returns_the_first_shipment() -> None:
    store = InMemoryShipping()
    first = await handlers.create_shipment(store, create("order-1", request_id="a"))
    again = await handlers.create_shipment(store, create("order-2", request_id="a"))
    assert again == first
    assert len(store.shipments) == 1


async def test_an_invalid_create_stores_nothing() -> None:
    store = InMemoryShipping()
    with pytest.raises(InvalidArgument):
        await handlers.create_shipment(store, create(request_id="a", weight_grams=0))
    assert store.shipments == {}
    assert store.requests == {}


async def test_cancel_is_idempotent_and_keeps_the_first_reason() -> None:
    store = InMemoryShipping()
    shipment = await handlers.create_shipment(store, create())
    cancelled = await handlers.cancel_shipment(
        store, handlers.CancelShipment(shipment.id, "payment declined", "")
    )
    again = await handlers.cancel_shipment(
        store, handlers.CancelShipment(shipment.id, "changed mind", "")
    )
    assert cancelled.status is ShipmentStatus.CANCELLED
    assert cancelled.cancel_reason == "payment declined"
    assert again == cancelled


async def test_unknown_shipments_are_not_found() -> None:
    store = InMemoryShipping()
    with pytest.raises(NotFound) as failure:
        await handlers.get_shipment(store, "alice", "nope")
    assert failure.value.reason == "SHIPMENT_NOT_FOUND"
    with pytest.raises(NotFound) as failure:
        await handlers.cancel_shipment(store, handlers.CancelShipment("nope", "", ""))
    assert failure.value.reason == "SHIPMENT_NOT_FOUND"


async def test_a_customer_reads_only_their_own_shipments() -> None:
    store = InMemoryShipping()
    alices = await handlers.create_shipment(store, create("order-1"))
    bobs = await handlers.create_shipment(store, create("order-2", customer_id="bob"))
    assert await handlers.get_shipment(store, "alice", alices.id) == alices
    assert await handlers.get_shipment(store, "bob", bobs.id) == bobs
    with pytest.raises(NotFound) as failure:
        await handlers.get_shipment(store, "bob", alices.id)
    assert failure.value.reason == "SHIPMENT_NOT_FOUND"


@pytest.mark.parametrize("caller", [None, ""])
async def test_a_read_without_a_caller_is_refused(caller: str | None) -> None:
    store = InMemoryShipping()
    shipment = await handlers.create_shipment(store, create())
    with pytest.raises(Unauthenticated) as failure:
        await handlers.get_shipment(store, caller, shipment.id)
    assert failure.value.reason == "NO_SUBJECT"
