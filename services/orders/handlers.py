"""The orders' use cases: each takes a command and the ports, and returns domain objects.

`caller` is the customer the request comes from, or None for a trusted call from inside
the mesh (no caller identity at all); see `mesh.runtime.caller`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.runtime.admission import Backlog
from mesh.runtime.caller import acting_customer, customer_of
from mesh.runtime.errors import Aborted
from mesh.runtime.pagination import page_size
from mesh.runtime.storage import utc_now
from services.orders.domain import (
    BACKLOG_WINDOW,
    Order,
    ProductNotInCatalog,
    RequestedLine,
    ShippingAddress,
    cancelled_order,
    check_request,
    new_order,
    order_not_found,
    order_weight,
    priced_lines,
    shop_backlog_full,
    too_many_pending,
    unknown_product,
    visible_to,
)
from services.orders.messages import order_ended, order_placed
from services.orders.ports import Catalog, OrdersStore, OrdersTransaction


@dataclass(frozen=True)
class PlaceOrder:
    caller: str | None
    customer_id: str
    lines: tuple[RequestedLine, ...]
    shipping_address: ShippingAddress
    payment_token: str
    request_id: str


@dataclass(frozen=True)
class ListOrders:
    caller: str | None
    customer_id: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class CancelOrder:
    caller: str | None
    order_id: str
    reason: str
    request_id: str


@dataclass(frozen=True)
class OrderPage:
    orders: list[Order]
    next_page_token: str


async def place_order(
    store: OrdersStore, catalog: Catalog, command: PlaceOrder, backlog: Backlog | None = None
) -> Order:
    """Price the lines from the catalog and store the order PENDING, once per request id.

    A new order is refused while the customer's, or the shop's, orders still PENDING
    reach the `backlog` (`check_backlog`); a request already served returns its order.
    The catalog is asked outside the write transaction so no lock is held over the
    network; the request log is checked again inside it, so a retry racing the first
    request still stores one order.
    """
    customer_id = acting_customer(command.caller, command.customer_id)
    async with store.snapshot() as tx:
        prior = await tx.find_request("PlaceOrder", command.request_id)
        order = await tx.get(prior["order_id"]) if prior else None
        if order is not None:
            return order
        check_request(command.lines, command.shipping_address)
        await check_backlog(tx, backlog, customer_id)
    try:
        products = await catalog.products(sorted({line.product_id for line in command.lines}))
    except ProductNotInCatalog as error:
        raise unknown_product(command.lines, error.product_id) from None
    lines = priced_lines(command.lines, products)
    weight = order_weight(lines, products)
    async with store.transaction() as tx:
        prior = await tx.find_request("PlaceOrder", command.request_id)
        order = await tx.get(prior["order_id"]) if prior else None
        if order is None:
            order = new_order(
                customer_id=customer_id,
                lines=lines,
                shipping_address=command.shipping_address,
                payment_token=command.payment_token,
                now=utc_now(),
            )
            await tx.add(order)
            await tx.enqueue_event(order_placed(order, weight))
            await tx.record_request("PlaceOrder", command.request_id, {"order_id": order.id})
    return order


async def check_backlog(tx: OrdersTransaction, backlog: Backlog | None, customer_id: str) -> None:
    """Refuse a new order while the customer's PENDING orders, or everyone's, reach the
    backlog's bounds: sagas that fall behind are not fed faster than they finish, and one
    customer cannot take the whole of it. Orders placed before `BACKLOG_WINDOW` are stuck
    rather than queued and do not count. Counted before the write, as a bound on the
    saga's lag rather than an exact quota: the few orders in flight at once may pass it."""
    if backlog is None:
        return
    since = utc_now() - BACKLOG_WINDOW
    if await tx.count_pending(since, backlog.per_client, customer_id) >= backlog.per_client:
        raise too_many_pending(customer_id, backlog.per_client)
    if await tx.count_pending(since, backlog.total) >= backlog.total:
        raise shop_backlog_full(backlog.total)


async def get_order(store: OrdersStore, caller: str | None, order_id: str) -> Order:
    """The order, if the caller may see it; another customer's order does not exist."""
    customer = customer_of(caller)
    async with store.snapshot() as tx:
        order = await tx.get(order_id)
    if order is None or not visible_to(order, customer):
        raise order_not_found(order_id)
    return order


async def list_orders(store: OrdersStore, query: ListOrders) -> OrderPage:
    """One page of a customer's orders, newest first, continuing after the page token."""
    customer_id = acting_customer(query.caller, query.customer_id)
    limit = page_size(query.page_size)
    filters = {"customer_id": customer_id}
    cursor = store.page_tokens.decode_time_cursor(query.page_token, filters)
    async with store.snapshot() as tx:
        rows = await tx.page(customer_id, cursor, limit + 1)
    orders, more = rows[:limit], len(rows) > limit
    last = orders[-1] if more else None
    token = store.page_tokens.encode_time_cursor(last.create_time, last.id, filters) if last else ""
    return OrderPage(orders, token)


async def cancel_order(store: OrdersStore, command: CancelOrder) -> Order:
    """Cancel a PENDING order; a retry with the same request id returns it again."""
    customer = customer_of(command.caller)
    async with store.transaction() as tx:
        prior = await tx.find_request("CancelOrder", command.request_id)
        order = await tx.get(command.order_id)
        if order is None or not visible_to(order, customer):
            raise order_not_found(command.order_id)
        if prior and prior["order_id"] == order.id:
            return order
        cancelled = cancelled_order(order, command.reason, utc_now())
        if not await tx.save(cancelled, was=order.status):
            raise Aborted(
                f"order {order.id!r} changed while it was being cancelled; retry",
                reason="ORDER_CHANGED",
                metadata={"order_id": order.id},
            )
        await tx.enqueue_event(order_ended(cancelled))
        await tx.record_request("CancelOrder", command.request_id, {"order_id": order.id})
    return cancelled
