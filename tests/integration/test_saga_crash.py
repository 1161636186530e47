"""Crash safety of the saga: services killed between commit and ack, NATS killed mid-burst.

A mesh of its own (the session's mesh stays undisturbed) runs with
`SHOP_CHAOS_KILL_AFTER_COMMIT`, so each saga participant SIGKILLs itself right after
committing every Nth event and before acknowledging it: the one window in which a crash
makes JetStream deliver an event that was applied already. The supervisor restarts it.
Then nats-server itself is killed with SIGKILL while orders keep coming.

Afterwards every order the edge accepted must be terminal, with no double capture, a
consistent stock, one OrderPlaced per order and no saga event twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from mesh.control.process import pid_alive
from mesh.runtime.consumer import CHAOS_KILL_AFTER_COMMIT, CHAOS_KILL_IN_BATCH
from tests.support.mesh import (
    ROOT,
    RunningMesh,
    bearer,
    customer,
    mesh_up,
    stream_events,
)
from tests.support.saga import (
    CANCELLED,
    CONFIRMED,
    captures,
    place,
    query,
    stock,
    stocked_product,
    wait_until_terminal,
)
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: Each participant dies after every Nth event it commits (before acking it).
#: With 80 orders (40 confirmed) that is two or three kills of each: a crash loop would
#: only measure the supervisor's restart backoff.
KILL_EVERY = {"inventory": 45, "payments": 45, "shipping": 45, "orders": 60, "notifications": 30}
SAGA_SUBJECTS = [
    "shop.inventory.stock_reserved", "shop.inventory.stock_rejected",
    "shop.inventory.stock_released", "shop.payments.payment_captured",
    "shop.payments.payment_declined", "shop.payments.payment_refunded",
    "shop.shipping.shipment_scheduled", "shop.shipping.shipment_failed",
    "shop.orders.order_placed", "shop.orders.order_confirmed", "shop.orders.order_cancelled",
]  # fmt: skip


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[RunningMesh]:
    """A mesh whose saga participants kill themselves between commit and ack."""
    with mesh_up(chaotic(tmp_path, CHAOS_KILL_AFTER_COMMIT)) as running:
        yield running


@pytest.fixture
def chaos_in_batch(tmp_path: Path) -> Iterator[RunningMesh]:
    """A mesh whose saga participants kill themselves inside a batch's transaction,
    with some of its events applied and one more to go."""
    with mesh_up(chaotic(tmp_path, CHAOS_KILL_IN_BATCH)) as running:
        yield running


def chaotic(tmp_path: Path, variable: str) -> RunningMesh:
    setting = ",".join(f"{name}:{every}" for name, every in KILL_EVERY.items())
    return RunningMesh(tmp_path / "run", ROOT / "mesh.yaml", {variable: setting})


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[RunningMesh]:
    """A mesh of the test's own: crashes add up in the supervisor's restart backoff."""
    with mesh_up(RunningMesh(tmp_path / "run", ROOT / "mesh.yaml")) as running:
        yield running


def restarts(mesh: RunningMesh) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for instance in mesh.state()["instances"]:
        counts[instance["service"]] += instance["restarts"]
    return dict(counts)


def burst(
    edge: httpx.Client, token: str, product_id: str, orders: int, during: threading.Event | None
) -> list[str]:
    """Place `orders` orders from 8 threads; set `during` once a third of them are in."""
    placed: list[str] = []

    def one(_: int) -> str:
        order_id = place(edge, token, product_id, attempts=40)
        placed.append(order_id)
        if during is not None and len(placed) == orders // 3:
            during.set()
        return order_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(orders)))


def shop(mesh: RunningMesh, edge: httpx.Client, on_hand: int) -> tuple[str, str]:
    """A product with `on_hand` units and a customer's token."""
    admin = bearer(mesh.token("chaos-admin", "catalog:write", "inventory:write"))
    product_id = stocked_product(edge, admin, on_hand)
    _, token = customer(edge)
    return product_id, token


def settled_once(
    mesh: RunningMesh, edge: httpx.Client, token: str, product_id: str, order_ids: list[str],
    on_hand: int,
) -> dict[str, int]:  # fmt: skip
    """Check that every order ended exactly once and consistently; return the figures."""
    final = [wait_until_terminal(edge, token, order_id, timeout=240) for order_id in order_ids]
    statuses = Counter(order["status"] for order in final)
    assert statuses[CONFIRMED] + statuses[CANCELLED] == len(order_ids)
    assert statuses[CONFIRMED] == min(on_hand, len(order_ids))
    confirmed = {order["id"] for order in final if order["status"] == CONFIRMED}

    left = on_hand - len(confirmed)
    assert wait_until(lambda: stock(edge, product_id) == (left, 0), "stock settled", 120)
    double = [order_id for order_id in order_ids if captures(mesh, order_id) > 1]
    assert double == []
    assert all(captures(mesh, order_id) == 1 for order_id in confirmed)
    marks = ",".join("?" * len(order_ids))
    [(kept,)] = query(
        mesh, "payments",
        "SELECT coalesce(sum(captured_minor_units - refunded_minor_units), 0) FROM payments "
        f"WHERE order_id IN ({marks})", *order_ids,
    )  # fmt: skip
    assert kept == sum(2550 for _ in confirmed)  # 25.50 EUR each, nothing kept of the rest

    async def saga_events() -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        async with mesh.jetstream() as js:
            for subject in SAGA_SUBJECTS:
                for event in await stream_events(js, subject):
                    counts[(subject, event.order_id)] += 1
        return counts

    wanted = set(order_ids)
    counts = asyncio.run(saga_events())
    duplicates = {key: n for key, n in counts.items() if key[1] in wanted and n > 1}
    assert duplicates == {}
    placed = {order_id for (subject, order_id) in counts if subject == "shop.orders.order_placed"}
    assert wanted <= placed

    def notified() -> bool:
        rows = query(
            mesh, "notifications",
            f"SELECT order_id, count(*) FROM notifications WHERE order_id IN ({marks}) "
            "GROUP BY order_id", *order_ids,
        )  # fmt: skip
        assert all(count == 1 for _, count in rows), rows
        return {order_id for order_id, _ in rows} == wanted

    wait_until(notified, "one notification per order", 60)
    return {
        "orders": len(order_ids),
        "confirmed": len(confirmed),
        "terminal": len(final),
        "duplicates": len(duplicates),
        "double_captures": len(double),
    }


def test_services_killed_between_commit_and_ack_lose_and_double_nothing(
    chaos: RunningMesh,
) -> None:
    with httpx.Client(base_url=chaos.edge_url, timeout=30) as edge:
        kill_participants_during_a_burst(chaos, edge)


def test_services_killed_in_the_middle_of_a_batch_lose_and_double_nothing(
    chaos_in_batch: RunningMesh,
) -> None:
    with httpx.Client(base_url=chaos_in_batch.edge_url, timeout=30) as edge:
        kills = burst_and_settle(chaos_in_batch, edge)
    mid_batch = {
        service for service in kills if logged(chaos_in_batch, service, "chaos: killed in a batch")
    }
    print(f"killed in the middle of a batch: {sorted(mid_batch)}")
    # The busiest consumers see batches of several events in a burst.
    assert mid_batch >= {"orders", "inventory", "payments", "shipping"}


def logged(mesh: RunningMesh, service: str, text: str) -> bool:
    """Whether an app log of `service` (any instance, any run of it) has `text`."""
    apps = (
        log for log in (mesh.run_dir / "logs").glob(f"{service}-*.log") if ".envoy." not in log.name
    )
    return any(text in log.read_text() for log in apps)


def kill_participants_during_a_burst(chaos: RunningMesh, edge: httpx.Client) -> None:
    kills = burst_and_settle(chaos, edge)
    # Every participant was killed at least once in that window, and came back: a kill
    # may follow the very commit that settled the last order, so its restart is awaited.
    assert set(kills) >= {"inventory", "payments", "shipping", "orders", "notifications"}

    def all_serving() -> bool:
        return all(i["health"] == "SERVING" for i in chaos.state()["instances"])

    wait_until(all_serving, "every killed instance serving again", 30)


def burst_and_settle(chaos: RunningMesh, edge: httpx.Client) -> dict[str, int]:
    """80 orders for 40 units, each followed to its one end; the kills per service."""
    product_id, token = shop(chaos, edge, 40)
    before = restarts(chaos)
    order_ids = burst(edge, token, product_id, 80, None)
    figures = settled_once(chaos, edge, token, product_id, order_ids, 40)
    kills = {
        name: n - before.get(name, 0)
        for name, n in restarts(chaos).items()
        if n > before.get(name, 0)
    }
    print(f"\nsettled after kills: {figures}, kills {kills}")
    return kills


def test_nats_killed_during_a_burst_loses_no_event(plain: RunningMesh) -> None:
    with httpx.Client(base_url=plain.edge_url, timeout=30) as edge:
        kill_nats_during_a_burst(plain, edge)


def kill_nats_during_a_burst(mesh: RunningMesh, edge: httpx.Client) -> None:
    product_id, token = shop(mesh, edge, 40)
    nats_before = mesh.state()["nats"]
    third_in = threading.Event()
    killed: list[int] = []

    def kill_nats() -> None:
        if third_in.wait(timeout=60):
            os.kill(nats_before["pid"], signal.SIGKILL)
            killed.append(nats_before["pid"])

    killer = threading.Thread(target=kill_nats)
    killer.start()
    try:
        order_ids = burst(edge, token, product_id, 80, third_in)
    finally:
        killer.join(timeout=70)
    assert killed == [nats_before["pid"]]
    assert not pid_alive(killed[0])
    figures = settled_once(mesh, edge, token, product_id, order_ids, 40)
    nats_after = mesh.state()["nats"]
    print(f"\nnats killed mid-burst: {figures}, nats restarts "
          f"{nats_after['restarts'] - nats_before['restarts']}")  # fmt: skip
    assert nats_after["restarts"] > nats_before["restarts"]
    assert nats_after["pid"] != nats_before["pid"]
    # NATS came back from its own files, where the configuration puts them.
    assert any((mesh.run_dir / "nats" / "jetstream").rglob("*.blk"))
