"""The orders' rules and use cases, with in-memory fakes of the store and the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest

from mesh.runtime.admission import Backlog
from mesh.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from mesh.runtime.money import MAX_MINOR_UNITS, Money
from mesh.runtime.pagination import PageTokens
from services.orders import handlers
from services.orders.domain import (
    Order,
    OrderStatus,
    PricedProduct,
    ProductNotInCatalog,
    RequestedLine,
    ShippingAddress,
    StepOutcome,
)
from shop.events.v1 import events_pb2


class FakeOrders:
    """The orders' store in dictionaries; one object serves as every transaction."""

    def __init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.requests: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[events_pb2.EventEnvelope] = []
        self.page_tokens = PageTokens(b"a key for tests")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeOrders]:
        yield self

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[FakeOrders]:
        yield self

    async def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    async def add(self, order: Order) -> None:
        self.orders[order.id] = order

    async def save(self, order: Order, *, was: OrderStatus) -> bool:
        if self.orders[order.id].status is not was:
            return False
        self.orders[order.id] = order
        return True

    async def page(
        self, customer_id: str, before: tuple[datetime, str] | None, limit: int
    ) -> list[Order]:
        mine = sorted(
            (o for o in self.orders.values() if o.customer_id == customer_id),
            key=lambda o: (o.create_time, o.id),
            reverse=True,
        )
        if before is not None:
            mine = [o for o in mine if (o.create_time, o.id) < before]
        return mine[:limit]

    async def count_pending(
        self, placed_since: datetime, limit: int, customer_id: str | None = None
    ) -> int:
        pending = [
            o
            for o in self.orders.values()
            if o.status is OrderStatus.PENDING
            and o.create_time >= placed_since
            and customer_id in (None, o.customer_id)
        ]
        return min(len(pending), limit)

    async def enqueue_event(self, envelope: events_pb2.EventEnvelope) -> None:
        self.events.append(envelope)

    async def find_request(self, method: str, request_id: str) -> dict[str, Any] | None:
        return self.requests.get((method, request_id)) if request_id else None

    async def record_request(self, method: str, request_id: str, result: dict[str, Any]) -> None:
        if request_id:
            self.requests[(method, request_id)] = result


class FakeCatalog:
    def __init__(self, *products: PricedProduct) -> None:
        self.products_by_id = {p.id: p for p in products}
        self.calls = 0

    async def products(self, ids: Sequence[str]) -> dict[str, PricedProduct]:
        self.calls += 1
        for product_id in ids:
            if product_id not in self.products_by_id:
                raise ProductNotInCatalog(product_id)
        return {pid: self.products_by_id[pid] for pid in ids}


TEA = PricedProduct("tea", "Tea", Money("EUR", 450), weight_grams=250)
CUP = PricedProduct("cup", "Cup", Money("EUR", 1299), weight_grams=400)
MUG = PricedProduct("mug", "Mug", Money("USD", 800))
HOME = ShippingAddress(region_code="DE", locality="Berlin", address_lines=("Hauptstr. 1",))


def place(
    *lines: tuple[str, int],
    caller: str | None = "alice",
    customer_id: str = "",
    address: ShippingAddress = HOME,
    request_id: str = "",
) -> handlers.PlaceOrder:
    return handlers.PlaceOrder(
        caller=caller,
        customer_id=customer_id,
        lines=tuple(RequestedLine(pid, qty) for pid, qty in lines),
        shipping_address=address,
        payment_token="tok_visa",
        request_id=request_id,
    )


@pytest.fixture
def store() -> FakeOrders:
    return FakeOrders()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(TEA, CUP, MUG)


async def test_an_order_is_priced_from_the_catalog_and_starts_pending(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    order = await handlers.place_order(store, catalog, place(("tea", 3), ("cup", 1)))
    assert [(line.product_name, line.line_total) for line in order.lines] == [
        ("Tea", Money("EUR", 1350)),
        ("Cup", Money("EUR", 1299)),
    ]
    assert order.total == Money("EUR", 2649)
    assert order.status is OrderStatus.PENDING
    assert [(s.name, s.outcome) for s in order.history] == [("OrderPlaced", StepOutcome.SUCCEEDED)]
    assert order.customer_id == "alice"
    assert order.payment_token == "tok_visa"
    assert store.orders[order.id] == order


@pytest.mark.parametrize(
    ("lines", "fields"),
    [
        ((("tea", 0),), ["lines[0].quantity"]),
        ((("tea", 1001),), ["lines[0].quantity"]),
        ((("tea", 1), ("cup", -2)), ["lines[1].quantity"]),
        ((("tea", 1), ("tea", 2)), ["lines[1].product_id"]),
        (tuple((f"p{i}", 1) for i in range(101)), ["lines"]),
    ],
    ids=["zero", "too-many-units", "negative", "duplicate", "too-many-lines"],
)
async def test_bad_lines_are_refused_before_the_catalog_is_asked(
    store: FakeOrders, catalog: FakeCatalog, lines: tuple[tuple[str, int], ...], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as failure:
        await handlers.place_order(store, catalog, place(*lines))
    assert [v.field for v in failure.value.violations] == fields
    assert catalog.calls == 0
    assert store.orders == {}


async def test_an_address_without_region_is_refused(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    with pytest.raises(InvalidArgument) as failure:
        await handlers.place_order(
            store,
            catalog,
            place(("tea", 1), address=ShippingAddress(region_code=" ", postal_code="10115")),
        )
    assert [v.field for v in failure.value.violations] == ["shipping_address.region_code"]


async def test_an_unknown_product_names_its_line(store: FakeOrders, catalog: FakeCatalog) -> None:
    with pytest.raises(InvalidArgument) as failure:
        await handlers.place_order(store, catalog, place(("tea", 1), ("ghost", 1)))
    assert failure.value.reason == "UNKNOWN_PRODUCT"
    assert [v.field for v in failure.value.violations] == ["lines[1].product_id"]
    assert store.orders == {}


async def test_mixed_currencies_are_refused(store: FakeOrders, catalog: FakeCatalog) -> None:
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.place_order(store, catalog, place(("tea", 1), ("mug", 1)))
    assert failure.value.reason == "MIXED_CURRENCIES"
    assert store.orders == {}


async def test_a_total_past_the_largest_amount_is_out_of_range(store: FakeOrders) -> None:
    dear = PricedProduct("yacht", "Yacht", Money("EUR", MAX_MINOR_UNITS // 2 + 1))
    with pytest.raises(OutOfRange) as failure:
        await handlers.place_order(store, FakeCatalog(dear), place(("yacht", 2)))
    assert failure.value.reason == "AMOUNT_OUT_OF_RANGE"
    assert store.orders == {}
    assert store.events == []


async def test_an_order_heavier_than_one_parcel_is_refused_before_its_saga(
    store: FakeOrders,
) -> None:
    """Shipping sends an order as one parcel of at most 31,500 g: a heavier order would be
    charged, then refunded when its shipment failed."""
    kettlebell = PricedProduct("k", "Kettlebell", Money("EUR", 4000), 16_000)
    with pytest.raises(OutOfRange) as failure:
        await handlers.place_order(store, FakeCatalog(kettlebell), place(("k", 2)))
    assert failure.value.reason == "ORDER_TOO_HEAVY"
    assert failure.value.metadata == {"weight_grams": "32000", "limit": "31500"}
    assert store.orders == {}
    assert store.events == []
    one = await handlers.place_order(store, FakeCatalog(kettlebell), place(("k", 1)))
    assert store.orders[one.id].status.value == "PENDING"


async def test_a_product_without_a_weight_cannot_be_ordered(store: FakeOrders) -> None:
    """A product the catalog kept from before weights were required: shipping would refuse
    its parcel after the payment, so no saga starts."""
    weightless = PricedProduct("old", "Old stock", Money("EUR", 100), 0)
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.place_order(
            store, FakeCatalog(weightless, TEA), place(("tea", 1), ("old", 1))
        )
    assert failure.value.reason == "PRODUCT_NOT_SHIPPABLE"
    assert failure.value.metadata == {"product_id": "old"}
    assert store.orders == {}
    assert store.events == []


async def test_the_caller_may_not_order_for_someone_else(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    with pytest.raises(PermissionDenied):
        await handlers.place_order(store, catalog, place(("tea", 1), customer_id="bob"))
    same = await handlers.place_order(store, catalog, place(("tea", 1), customer_id="alice"))
    assert same.customer_id == "alice"


async def test_without_a_caller_nothing_is_placed_even_for_a_named_customer(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    with pytest.raises(Unauthenticated):
        await handlers.place_order(store, catalog, place(("tea", 1), caller=None))
    with pytest.raises(Unauthenticated):
        await handlers.place_order(store, catalog, place(("tea", 1), caller=None, customer_id="c"))
    assert store.orders == {}


async def test_a_retried_place_returns_the_first_order_without_asking_the_catalog(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    first = await handlers.place_order(store, catalog, place(("tea", 1), request_id="r1"))
    again = await handlers.place_order(store, catalog, place(("tea", 1), request_id="r1"))
    assert again == first
    assert catalog.calls == 1
    assert len(store.orders) == 1
    assert [e.order_id for e in store.events] == [first.id]  # one OrderPlaced, not two


async def test_a_placed_order_starts_its_saga_with_an_order_placed_event(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    order = await handlers.place_order(store, catalog, place(("tea", 2), ("cup", 1)))
    [event] = store.events
    assert (event.producer, event.order_id, event.WhichOneof("payload")) == (
        "orders",
        order.id,
        "order_placed",
    )
    placed = event.order_placed
    assert placed.customer_id == order.customer_id
    assert placed.payment_token == order.payment_token
    assert placed.weight_grams == 2 * 250 + 400
    assert Money.from_proto(placed.total) == order.total
    assert [(line.product_id, line.quantity) for line in placed.lines] == [
        (line.product_id, line.quantity) for line in order.lines
    ]


async def test_another_customers_order_is_not_found(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    order = await handlers.place_order(store, catalog, place(("tea", 1)))
    assert await handlers.get_order(store, "alice", order.id) == order
    with pytest.raises(Unauthenticated):
        await handlers.get_order(store, None, order.id)
    with pytest.raises(NotFound):
        await handlers.get_order(store, "bob", order.id)
    with pytest.raises(NotFound):
        await handlers.cancel_order(store, handlers.CancelOrder("bob", order.id, "", ""))


async def test_cancel_records_the_reason_and_only_once(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    order = await handlers.place_order(store, catalog, place(("tea", 1)))
    cancel = handlers.CancelOrder("alice", order.id, "changed my mind", "c1")
    cancelled = await handlers.cancel_order(store, cancel)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.cancel_reason == "changed my mind"
    assert [s.name for s in cancelled.history] == ["OrderPlaced", "OrderCancelled"]
    assert await handlers.cancel_order(store, cancel) == cancelled
    with pytest.raises(FailedPrecondition) as failure:
        await handlers.cancel_order(store, handlers.CancelOrder("alice", order.id, "", "c2"))
    assert failure.value.reason == "ORDER_NOT_PENDING"


async def test_list_pages_through_the_callers_orders_newest_first(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    placed = [(await handlers.place_order(store, catalog, place(("tea", 1)))).id for _ in range(5)]
    await handlers.place_order(store, catalog, place(("tea", 1), caller="bob"))
    seen: list[str] = []
    token = ""
    while True:
        page = await handlers.list_orders(store, handlers.ListOrders("alice", "", 2, token))
        seen += [o.id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    newest_first = sorted(placed, key=lambda i: (store.orders[i].create_time, i), reverse=True)
    assert seen == newest_first
    with pytest.raises(PermissionDenied):
        await handlers.list_orders(store, handlers.ListOrders("alice", "bob", 0, ""))


async def test_a_full_backlog_refuses_new_orders_before_the_catalog_is_asked(
    store: FakeOrders, catalog: FakeCatalog
) -> None:
    backlog = Backlog(total=3, per_client=1)
    await handlers.place_order(store, catalog, place(("tea", 1)), backlog)
    with pytest.raises(ResourceExhausted) as mine:
        await handlers.place_order(store, catalog, place(("tea", 1)), backlog)
    assert mine.value.reason == "TOO_MANY_PENDING_ORDERS"
    await handlers.place_order(store, catalog, place(("tea", 1), caller="bob"), backlog)
    await handlers.place_order(store, catalog, place(("tea", 1), caller="carol"), backlog)
    asked = catalog.calls
    with pytest.raises(ResourceExhausted) as everyones:
        await handlers.place_order(store, catalog, place(("tea", 1), caller="dave"), backlog)
    assert everyones.value.reason == "ORDER_BACKLOG_FULL"
    assert catalog.calls == asked
    assert len(store.orders) == 3
