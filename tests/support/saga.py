"""Placing orders through the edge and reading back what the saga did with them."""

from __future__ import annotations

import sqlite3
import time
import uuid
from typing import Any

import httpx

from mesh.tools import loadgen
from tests.support.mesh import RunningMesh, bearer
from tests.support.wait import wait_until

ADDRESS = {"regionCode": "DE", "postalCode": "10115", "addressLines": ["Hauptstr. 1"]}
#: Orders accepts it (a region is all it needs); shipping cannot send a parcel there.
#: An address orders takes, at which the carrier finds no door when the parcel is booked
#: (`services.shipping.domain.UNDELIVERABLE_POSTAL_CODE`): the shipment fails after the
#: payment, which is refunded.
UNSHIPPABLE = {"regionCode": "DE", "postalCode": "00000", "addressLines": ["Nowhere 1"]}
CONFIRMED, CANCELLED = "ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED"
HAPPY_PATH = ["OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentScheduled",
              "OrderConfirmed"]  # fmt: skip


def stocked_product(edge: httpx.Client, admin: dict[str, str], on_hand: int) -> str:
    product = {"name": "Kettle", "category": "kitchen", "weightGrams": 1200,
               "price": {"currencyCode": "EUR", "units": "25", "nanos": 500000000}}  # fmt: skip
    created = edge.post(
        "/v1/products", json={"product": product, "initialStock": on_hand}, headers=admin
    )
    assert created.status_code == 200, created.text
    product_id: str = created.json()["product"]["id"]
    return product_id


def place(
    edge: httpx.Client,
    token: str,
    product_id: str,
    quantity: int = 1,
    *,
    payment_token: str = "tok_visa",
    address: dict[str, Any] = ADDRESS,
    attempts: int = 1,
) -> str:
    """Place an order; on a 5xx (the orders service restarting, or refusing for load), or a
    429 with a `RetryInfo` (the customer's orders still being processed fill the backlog),
    try again with the same request id after a while (`attempts` in all), as a client does."""
    order = {"lines": [{"productId": product_id, "quantity": quantity}],
             "shippingAddress": address, "paymentToken": payment_token,
             "requestId": str(uuid.uuid4())}  # fmt: skip
    for attempt in range(1, attempts + 1):
        placed = edge.post("/v1/orders", json=order, headers=bearer(token))
        delay = _retry_delay(placed)
        if delay is None or attempt == attempts:
            break
        time.sleep(delay)
    assert placed.status_code == 200, placed.text
    order_id: str = placed.json()["order"]["id"]
    return order_id


def _retry_delay(response: httpx.Response) -> float | None:
    """How long a client waits before sending a refused request again; None: it does not."""
    if response.status_code >= 500:
        return 0.25
    return loadgen.retry_delay(response.status_code, response.content)


def get_order(edge: httpx.Client, token: str, order_id: str) -> dict[str, Any]:
    response = edge.get(f"/v1/orders/{order_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()["order"]
    return order


def wait_until_terminal(
    edge: httpx.Client, token: str, order_id: str, timeout: float = 60
) -> dict[str, Any]:
    """Poll the order until it is CONFIRMED or CANCELLED; a 5xx (the orders service
    restarting) is polled through, as a client would."""
    last: list[httpx.Response] = []

    def terminal() -> dict[str, Any] | None:
        response = edge.get(f"/v1/orders/{order_id}", headers=bearer(token))
        last[:] = [response]
        if response.status_code >= 500:
            return None
        assert response.status_code == 200, response.text
        order: dict[str, Any] = response.json()["order"]
        return order if order["status"] in (CONFIRMED, CANCELLED) else None

    return wait_until(terminal, lambda: f"order {order_id} terminal: {last[0].text}", timeout)


def steps(order: dict[str, Any]) -> list[str]:
    return [step["name"] for step in order["history"]]


def stock(edge: httpx.Client, product_id: str) -> tuple[int, int]:
    """(on hand, reserved) of the product; a 5xx (inventory restarting) is retried."""

    def answered() -> httpx.Response | None:
        response = edge.get(f"/v1/products/{product_id}/stock")
        return response if response.status_code < 500 else None

    response = wait_until(answered, f"the stock of {product_id} answered")
    assert response.status_code == 200, response.text
    level = response.json()["stock"]
    on_hand = int(level.get("onHand", 0))
    return on_hand, on_hand - int(level.get("available", 0))


def query(mesh: RunningMesh, service: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows from `service`'s own SQLite file, opened read-only."""
    uri = f"file:{mesh.database(service)}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as connection:
        return connection.execute(sql, args).fetchall()


def captures(mesh: RunningMesh, order_id: str) -> int:
    [(count,)] = query(
        mesh, "payments",
        "SELECT count(*) FROM captures JOIN payments ON payments.id = captures.payment_id "
        "WHERE payments.order_id = ?", order_id,
    )  # fmt: skip
    return int(count)


def notifications_for(edge: httpx.Client, token: str, order_id: str) -> list[dict[str, Any]]:
    listed = edge.get("/v1/notifications", params={"pageSize": 100}, headers=bearer(token))
    assert listed.status_code == 200, listed.text
    return [n for n in listed.json().get("notifications", []) if n["orderId"] == order_id]
