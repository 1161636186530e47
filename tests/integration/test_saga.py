"""The order saga end to end: the real mesh, real NATS JetStream, real SQLite files.

Orders are placed through the edge as a client would place them; what happened is read
back through the edge (GetOrder over REST and gRPC, stock, payments, notifications) and
from the services' own database files, opened read-only, to count captures, shipments
and payments that no API would hide.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import grpc
import httpx
import pytest
from nats.js.api import ConsumerInfo

from mesh.runtime import events
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.orders.v1 import orders_service_pb2 as orders_pb
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc
from tests.support.mesh import RunningMesh, bearer, customer, stream_events
from tests.support.saga import (
    CANCELLED,
    CONFIRMED,
    HAPPY_PATH,
    UNSHIPPABLE,
    captures,
    get_order,
    notifications_for,
    place,
    query,
    steps,
    stock,
    stocked_product,
    wait_until_terminal,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mesh: RunningMesh) -> dict[str, str]:
    return bearer(mesh.token("saga-admin", "catalog:write", "inventory:write"))


def test_an_order_placed_through_the_edge_is_confirmed_with_every_step_once(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order_id = place(edge, token, product_id, 2)
    order = wait_until_terminal(edge, token, order_id)

    assert order["status"] == CONFIRMED, order
    assert steps(order) == HAPPY_PATH
    assert {step["outcome"] for step in order["history"]} == {"SAGA_STEP_OUTCOME_SUCCEEDED"}
    times = [datetime.fromisoformat(step["time"]) for step in order["history"]]
    assert times == sorted(times)
    assert order["trackingNumber"].startswith("SHP")

    # Stock taken out once: the reservation was committed, nothing stays reserved.
    assert wait_until(lambda: stock(edge, product_id) == (3, 0), "stock committed")
    # One capture, of the order's total.
    # Read as the customer who paid: only they may see the payment.
    paid = edge.get(f"/v1/payments/{order['paymentId']}", headers=bearer(token))
    payment = paid.json()["payment"]
    assert payment["status"] == "PAYMENT_STATUS_CAPTURED"
    assert payment["capturedAmount"] == order["total"] == {
        "currencyCode": "EUR", "units": "51"
    }  # fmt: skip
    assert captures(mesh, order_id) == 1
    # One shipment, the one the order names.
    shipments = query(mesh, "shipping", "SELECT id FROM shipments WHERE order_id = ?", order_id)
    assert shipments == [(order["shipmentId"],)]
    # One notification.
    told = wait_until(lambda: notifications_for(edge, token, order_id), "a notification")
    assert [n["kind"] for n in told] == ["NOTIFICATION_KIND_ORDER_CONFIRMED"]

    # The same order, history included, through the edge over native gRPC.
    with grpc.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        over_grpc = (
            orders_grpc.OrdersServiceStub(channel)
            .GetOrder(
                orders_pb.GetOrderRequest(id=order_id),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=10,
            )
            .order
        )
    assert over_grpc.status == orders_pb.ORDER_STATUS_CONFIRMED
    assert [step.name for step in over_grpc.history] == HAPPY_PATH


def test_a_declined_payment_releases_the_stock_and_cancels_the_order(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order_id = place(edge, token, product_id, 2, payment_token="tok_declined")
    order = wait_until_terminal(edge, token, order_id)

    assert order["status"] == CANCELLED
    assert steps(order) == ["OrderPlaced", "StockReserved", "PaymentDeclined", "StockReleased",
                            "OrderCancelled"]  # fmt: skip
    assert order["cancelReason"] == "Payment declined: card_declined"
    # CANCELLED comes after the release: the stock is back already.
    assert stock(edge, product_id) == (5, 0)
    assert captures(mesh, order_id) == 0
    told = wait_until(lambda: notifications_for(edge, token, order_id), "a notification")
    assert [n["kind"] for n in told] == ["NOTIFICATION_KIND_ORDER_CANCELLED"]
    assert "Payment declined: card_declined" in told[0]["body"]


def test_a_failed_shipment_refunds_the_payment_and_releases_the_stock(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order_id = place(edge, token, product_id, 1, address=UNSHIPPABLE)
    order = wait_until_terminal(edge, token, order_id)

    assert order["status"] == CANCELLED
    assert steps(order) == ["OrderPlaced", "StockReserved", "PaymentCaptured", "ShipmentFailed",
                            "PaymentRefunded", "StockReleased", "OrderCancelled"]  # fmt: skip
    assert [s["outcome"] for s in order["history"][3:6]] == [
        "SAGA_STEP_OUTCOME_FAILED", "SAGA_STEP_OUTCOME_COMPENSATED",
        "SAGA_STEP_OUTCOME_COMPENSATED",
    ]  # fmt: skip
    assert order["cancelReason"] == (
        "Shipment failed: the carrier finds no delivery address at postal code 00000"
    )
    # Read as the customer who paid: only they may see the payment.
    paid = edge.get(f"/v1/payments/{order['paymentId']}", headers=bearer(token))
    payment = paid.json()["payment"]
    assert payment["status"] == "PAYMENT_STATUS_REFUNDED"
    assert payment["refundedAmount"] == payment["capturedAmount"] == order["total"]
    assert stock(edge, product_id) == (5, 0)
    assert query(mesh, "shipping", "SELECT id FROM shipments WHERE order_id = ?", order_id) == []


@pytest.mark.parametrize(
    ("address", "field"),
    [
        ({"regionCode": "DE"}, "shippingAddress.addressLines"),
        ({"regionCode": "de", "postalCode": "10115"}, "shippingAddress.regionCode"),
    ],
    ids=["no-postal-code-or-line", "lower-case-region"],
)
def test_an_address_shipping_cannot_send_to_is_refused_before_any_charge(
    edge: httpx.Client,
    admin: dict[str, str],
    mesh: RunningMesh,
    address: dict[str, Any],
    field: str,
) -> None:
    """Shipping would refuse the parcel after the payment was captured: orders refuses the
    order when it is placed, and no saga starts."""
    product_id = stocked_product(edge, admin, 5)
    customer_id, token = customer(edge)
    order = {"lines": [{"productId": product_id, "quantity": 1}], "shippingAddress": address,
             "paymentToken": "tok_visa"}  # fmt: skip
    refused = edge.post("/v1/orders", json=order, headers=bearer(token))
    assert refused.status_code == 400, refused.text
    assert field in refused.text
    listed = edge.get("/v1/orders", headers=bearer(token)).json()
    assert listed.get("orders", []) == []
    assert stock(edge, product_id) == (5, 0)
    assert query(mesh, "orders", "SELECT id FROM orders WHERE customer_id = ?", customer_id) == []


def test_a_product_without_a_weight_is_refused_where_it_is_created(
    edge: httpx.Client, admin: dict[str, str]
) -> None:
    """Every order is shipped by weight: the catalog refuses a product shipping could never
    send, so no order of it is placed, charged and then refunded."""
    tea = {"name": "Tea", "category": "food", "price": {"currencyCode": "EUR", "units": "3"}}
    refused = edge.post("/v1/products", json={"product": tea}, headers=admin)
    assert refused.status_code == 400, refused.text
    assert "product.weightGrams" in refused.text
    heavy = edge.post(
        "/v1/products", json={"product": {**tea, "weightGrams": 31_501}}, headers=admin
    )
    assert heavy.status_code == 400, heavy.text
    assert "product.weightGrams" in heavy.text


def test_an_order_out_of_stock_is_cancelled_without_any_charge(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order_id = place(edge, token, product_id, 6)
    order = wait_until_terminal(edge, token, order_id)

    assert order["status"] == CANCELLED
    assert steps(order) == ["OrderPlaced", "StockRejected", "OrderCancelled"]
    assert order["cancelReason"].startswith("Out of stock: not enough units available")
    assert query(mesh, "payments", "SELECT id FROM payments WHERE order_id = ?", order_id) == []
    assert stock(edge, product_id) == (5, 0)


def payments_settled(mesh: RunningMesh) -> bool:
    """Whether payments' consumer has every event it was sent settled: none waits for a
    (re)delivery."""

    async def consumer() -> ConsumerInfo:
        async with mesh.jetstream() as js:
            info: ConsumerInfo = await js.consumer_info(events.EVENTS_STREAM, "payments")
            return info

    info = asyncio.run(consumer())
    return info.num_pending == 0 and info.num_ack_pending == 0


def test_a_customer_cancelling_a_pending_order_undoes_what_was_done(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    """The card processor is stopped (SIGSTOP), so the charge fails and waits for its
    redelivery: the order is PENDING with its stock reserved when the customer cancels."""
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    processor_pid = mesh.instance("processor-0")["app_pid"]
    os.kill(processor_pid, signal.SIGSTOP)
    try:
        order_id = place(edge, token, product_id, 2)
        wait_until(lambda: "StockReserved" in steps(get_order(edge, token, order_id)), "reserved")
        cancelled = edge.post(
            f"/v1/orders/{order_id}:cancel",
            json={"reason": "changed my mind", "requestId": str(uuid.uuid4())},
            headers=bearer(token),
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["order"]["status"] == CANCELLED
        # Payments learns of the cancellation while the charge still waits for the
        # processor, so the charge's next delivery finds the order cancelled.
        wait_until(
            lambda: query(
                mesh, "payments", "SELECT cancelled FROM saga_orders WHERE order_id = ?", order_id
            ) == [(1,)],
            "payments told of the cancellation",
        )  # fmt: skip
    finally:
        os.kill(processor_pid, signal.SIGCONT)

    # Whatever the saga had done is undone; what it had not done yet never happens.
    assert wait_until(lambda: stock(edge, product_id) == (5, 0), "stock released")
    order = wait_until(
        lambda: o if "StockReleased" in steps(o := get_order(edge, token, order_id)) else None,
        "the release in the history",
    )
    assert order["status"] == CANCELLED
    assert order["cancelReason"] == "changed my mind"
    # Past the charge's last delivery: it must have seen the cancellation.
    wait_until(lambda: payments_settled(mesh), "payments done with the order's events")
    charged = query(
        mesh, "payments",
        "SELECT coalesce(sum(captured_minor_units - refunded_minor_units), 0) FROM payments "
        "WHERE order_id = ?", order_id,
    )  # fmt: skip
    assert charged == [(0,)]
    assert query(
        mesh, "shipping", "SELECT id FROM shipments WHERE order_id = ? AND status = 'SCHEDULED'",
        order_id,
    ) == []  # fmt: skip
    told = notifications_for(edge, token, order_id)
    assert [n["kind"] for n in told] == ["NOTIFICATION_KIND_ORDER_CANCELLED"]


def test_200_concurrent_orders_for_50_units_confirm_exactly_50(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    product_id = stocked_product(edge, admin, 50)
    _, token = customer(edge)
    # 16 clients placing as fast as they can is more than orders serves: what it refuses
    # (503, marked not applied; 429 once 100 of the customer's orders are still being
    # processed) they send again with the same request id, as clients do.
    with ThreadPoolExecutor(max_workers=16) as pool:
        order_ids = list(
            pool.map(lambda _: place(edge, token, product_id, attempts=60), range(200))
        )
    assert len(set(order_ids)) == 200
    final = [wait_until_terminal(edge, token, order_id, timeout=180) for order_id in order_ids]

    statuses = [order["status"] for order in final]
    assert statuses.count(CONFIRMED) == 50
    assert statuses.count(CANCELLED) == 150
    assert {tuple(steps(o)) for o in final if o["status"] == CANCELLED} == {
        ("OrderPlaced", "StockRejected", "OrderCancelled")
    }
    assert wait_until(lambda: stock(edge, product_id) == (0, 0), "every reservation committed")
    stored = query(mesh, "inventory", "SELECT on_hand, reserved FROM stock WHERE product_id = ?",
                   product_id)  # fmt: skip
    assert stored == [(0, 0)]
    confirmed = {o["id"] for o in final if o["status"] == CONFIRMED}
    assert sum(captures(mesh, order_id) for order_id in order_ids) == 50
    assert all(captures(mesh, order_id) == 1 for order_id in confirmed)

    async def placements() -> list[events_pb2.EventEnvelope]:
        async with mesh.jetstream() as js:
            return await stream_events(js, "shop.orders.order_placed")

    published = [e.order_id for e in asyncio.run(placements()) if e.order_id in set(order_ids)]
    assert sorted(published) == sorted(order_ids)  # exactly one OrderPlaced per order


async def _publish(mesh: RunningMesh, subject: str, data: bytes) -> None:
    async with mesh.jetstream() as js:
        await js.publish(subject, data, headers={events.MSG_ID: str(uuid.uuid4())})


def dead_letters(mesh: RunningMesh) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = json.loads(mesh.meshctl("dlq", "list", "--json").stdout)
    return letters


def test_a_poison_event_is_a_dead_letter_and_the_good_ones_keep_flowing(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    poison = b"\x08\xff\xff\xff\xff not an event"
    asyncio.run(_publish(mesh, "shop.orders.order_placed", poison))
    product_id = stocked_product(edge, admin, 5)
    _, token = customer(edge)
    order = wait_until_terminal(edge, token, place(edge, token, product_id))
    assert order["status"] == CONFIRMED

    def poisoned() -> list[dict[str, Any]]:
        return [d for d in dead_letters(mesh) if d["event"] == {"undecodable": poison.hex()}]

    # Each consumer of order placements set its copy aside, with the reason.
    letters = wait_until(lambda: d if len(d := poisoned()) == 3 else None, "three dead letters")
    assert sorted(d["consumer"] for d in letters) == ["inventory", "payments", "shipping"]
    assert {d["subject"] for d in letters} == {"shop.orders.order_placed"}
    assert all(d["reason"].startswith("malformed event:") for d in letters)


def test_meshctl_dlq_replay_re_drives_a_dead_letter_once_its_cause_is_fixed(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    """An order confirmed that inventory holds nothing for (say, its reservation was lost
    to a bad restore) fails in inventory until it is a dead letter; an operator restores
    the reservation, then replays the event, and inventory commits it."""
    product_id = stocked_product(edge, admin, 5)
    order_id = str(uuid.uuid4())
    confirmed = events.new_event(
        "orders", order_id, events_pb2.OrderConfirmed(order_id=order_id, customer_id="c-dlq")
    )
    asyncio.run(_publish(mesh, "shop.orders.order_confirmed", confirmed.SerializeToString()))

    def letter() -> dict[str, Any] | None:
        return next(
            (d for d in dead_letters(mesh)
             if d["consumer"] == "inventory" and d["event"].get("orderId") == order_id),
            None,
        )  # fmt: skip

    # Five deliveries, 1 + 2 + 5 + 10 seconds apart.
    dead = wait_until(letter, "the dead letter", within=60)
    assert dead["reason"].startswith("failed 5 times:")
    assert f"order {order_id!r} has no reservation" in dead["reason"]
    assert stock(edge, product_id) == (5, 0)

    app = f"127.0.0.1:{mesh.instance('inventory-0')['app_port']}"
    with grpc.insecure_channel(app) as channel:
        inventory_grpc.InventoryServiceStub(channel).ReserveStock(
            inventory_pb.ReserveStockRequest(
                order_id=order_id,
                lines=[inventory_pb.ReservationLine(product_id=product_id, quantity=2)],
            ),
            timeout=10,
        )
    assert stock(edge, product_id) == (5, 2)
    replayed = mesh.meshctl("dlq", "replay", str(dead["sequence"]))
    assert f"replayed {dead['sequence']} to shop.orders.order_confirmed" in replayed.stdout
    assert wait_until(lambda: stock(edge, product_id) == (3, 0), "the replay committed")
    assert letter() is None
