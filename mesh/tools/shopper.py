"""Orders placed through the edge's REST API and followed to their end.

`meshctl bench saga` and `meshctl chaos` drive the order saga the way a client does: a
customer registered and logged in through the edge places orders with `POST /v1/orders`
(each with its own request id, kept for a retry). Following hundreds of orders by
polling `GetOrder` would load the edge with the measurement itself, so the end of each
order is taken from the event orders emits when it decides (`orders.order_confirmed` or
`orders.order_cancelled`), read as the mesh's administrator from an ordered JetStream
consumer, which resumes where it was after a NATS restart. `statuses` asks the edge for
the final word on each order, which is what a lost-order check must trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from mesh.runtime import events
from mesh.tools.loadgen import HttpConnections, http_request
from mesh.tools.trial import TrialMesh
from shop.events.v1 import events_pb2

ADDRESS = {"regionCode": "DE", "postalCode": "10115", "addressLines": ["Hauptstr. 1"]}
#: What an order's end is called in `shop.orders.v1` and in the events that report it.
CONFIRMED, CANCELLED = "ORDER_STATUS_CONFIRMED", "ORDER_STATUS_CANCELLED"
_ENDS = {"order_confirmed": CONFIRMED, "order_cancelled": CANCELLED}
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Ended:
    """An order's end as its event reported it: the status, and when it arrived here."""

    status: str
    at: float
    """`time.perf_counter()` when the event arrived."""


class Shopper:
    """One customer buying one stocked product through the edge; see the module docstring."""

    def __init__(self, edge: HttpConnections, host: str, token: str, product_id: str) -> None:
        self._edge = edge
        self._host = host
        self._headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
        self.product_id = product_id
        self.ended: dict[str, Ended] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def opened(cls, mesh: TrialMesh, stock: int) -> AsyncIterator[Shopper]:
        """A new customer, a product with `stock` units, and the order ends followed."""
        host, port = mesh.edge_url.removeprefix("http://").rsplit(":", 1)
        edge = HttpConnections(host, int(port))
        try:
            token = await _customer_token(edge, f"{host}:{port}")
            shopper = cls(edge, f"{host}:{port}", token, mesh.stocked_product(stock))
            async with mesh.jetstream() as js:
                subscription = await js.subscribe(
                    "shop.orders.>",
                    stream=events.EVENTS_STREAM,
                    ordered_consumer=True,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
                    cb=shopper._on_event,
                )
                try:
                    yield shopper
                finally:
                    await subscription.unsubscribe()
        finally:
            await edge.close()

    async def _on_event(self, message: Any) -> None:
        event = _ENDS.get(message.subject.rsplit(".", 1)[-1])
        if event is None:
            return
        order_id = events_pb2.EventEnvelope.FromString(message.data).order_id
        self.ended.setdefault(order_id, Ended(event, time.perf_counter()))

    def order_request(self, quantity: int = 1, payment_token: str = "tok_visa") -> bytes:
        """A PlaceOrder request, with a request id of its own, ready to `place`."""
        body = {
            "lines": [{"productId": self.product_id, "quantity": quantity}],
            "shippingAddress": ADDRESS,
            "paymentToken": payment_token,
            "requestId": str(uuid.uuid4()),
        }
        return http_request(
            "POST", "/v1/orders", self._host, self._headers, json.dumps(body).encode()
        )

    async def place(self, request: bytes) -> str:
        """Send a PlaceOrder request; the new order's id (HttpStatusError on a refusal)."""
        answer = json.loads(await self._edge.send(request))
        order_id: str = answer["order"]["id"]
        return order_id

    async def wait(self, order_ids: Iterable[str], seconds: float) -> set[str]:
        """Wait until every order in `order_ids` ended, `seconds` at most; those that didn't."""
        pending = set(order_ids)
        deadline = time.monotonic() + seconds
        while True:
            pending -= self.ended.keys()
            if not pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.05)

    async def fetch(self, order_id: str) -> dict[str, Any]:
        """The order as `GET /v1/orders/ID` answers now, its history included."""
        request = http_request("GET", f"/v1/orders/{order_id}", self._host, self._headers)
        order: dict[str, Any] = json.loads(await self._edge.send(request))["order"]
        return order

    async def statuses(self, order_ids: Iterable[str]) -> dict[str, str]:
        """Each order's status as `GET /v1/orders/ID` answers now."""
        return {order_id: (await self.fetch(order_id))["status"] for order_id in order_ids}


async def _customer_token(edge: HttpConnections, host: str) -> str:
    """Register a new customer and log in, as a client of the edge does."""
    email = f"shopper-{uuid.uuid4().hex[:12]}@example.org"
    credentials = json.dumps({"email": email, "password": PASSWORD}).encode()
    headers = {"content-type": "application/json"}
    await edge.send(http_request("POST", "/v1/users", host, headers, credentials))
    login = json.loads(
        await edge.send(http_request("POST", "/v1/tokens", host, headers, credentials))
    )
    token: str = login["accessToken"]
    return token
