"""The mesh runtime end to end: real Envoy sidecars, real NATS, real services, real grpcurl.

Who may reach a service's inbound port (mTLS STRICT, then authorization by SPIFFE id),
what the supervisor reports and restarts, and how the caller's sidecar retries and
balances.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh.control import envoy, topology
from mesh.control.pki import leaf, self_signed_ca
from mesh.control.supervisor import BACKGROUND_NICENESS
from mesh.runtime import events
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.events.v1 import events_pb2
from shop.inventory.v1 import inventory_service_pb2 as inventory_pb
from shop.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from shop.payments.v1 import payments_service_pb2 as payments_pb
from shop.payments.v1 import payments_service_pb2_grpc as payments_grpc
from tests.support.envoy_validation import deprecations
from tests.support.mesh import RunningMesh, grpcurl
from tests.support.processes import niceness_of_every_thread
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SERVICES = {
    "catalog", "inventory", "orders", "payments", "shipping", "identity", "notifications",
    "processor", "search",
}  # fmt: skip
GET_STOCK = "shop.inventory.v1.InventoryService/GetStock"


#: How much sooner than a route's deadline a propagated one may end: `grpc-timeout`
#: carries whole milliseconds, and each of the few hops rounds down.
DEADLINE_ROUNDING = 0.005


def _tls(mesh: RunningMesh, cert: Path, key: Path) -> list[str]:
    return ["-cacert", str(mesh.ca), "-cert", str(cert), "-key", str(key),
            "-servername", "inventory.shop.svc"]  # fmt: skip


def _inventory_inbound(mesh: RunningMesh) -> str:
    return f"127.0.0.1:{mesh.instance('inventory-0')['inbound_port']}"


def _get_stock_as(mesh: RunningMesh, cert: Path, key: Path) -> Any:
    """GetStock at inventory-0's inbound port, presenting `cert`."""
    return grpcurl(
        *_tls(mesh, cert, key), "-d", '{"product_id": "p"}', _inventory_inbound(mesh), GET_STOCK
    )


def _outbound(mesh: RunningMesh, instance: str, dependency: str) -> str:
    return f"127.0.0.1:{mesh.instance(instance)['outbound'][dependency]}"


# -- status -------------------------------------------------------------------------------


def test_the_sagas_services_nats_and_the_trace_store_run_behind_the_serving_ones(
    mesh: RunningMesh,
) -> None:
    state = mesh.state()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    background = {"inventory", "payments", "processor", "shipping", "notifications"}
    for instance in state["instances"]:
        expected = ours + (BACKGROUND_NICENESS if instance["service"] in background else 0)
        for pid in (instance["app_pid"], instance["sidecar_pid"]):
            assert niceness_of_every_thread(pid) == {expected}, instance["instance"]
    for behind in (state["nats"]["pid"], state["traces"]["pid"]):
        assert niceness_of_every_thread(behind) == {ours + BACKGROUND_NICENESS}
    for serving in (state["edge"]["pid"], state["edge"]["companion_pid"]):
        assert niceness_of_every_thread(serving) == {ours}


def test_status_reports_every_instance_healthy(mesh: RunningMesh) -> None:
    state = mesh.state()
    assert state["status"] == "healthy"
    assert {i["service"] for i in state["instances"]} == SERVICES
    assert [i["instance"] for i in state["instances"] if i["service"] == "inventory"] == [
        "inventory-0",
        "inventory-1",
    ]
    for instance in state["instances"]:
        assert instance["health"] == "SERVING", instance
        assert instance["app_pid"] != instance["sidecar_pid"]
        assert instance["app_port"] != instance["inbound_port"]
        assert "admin_port" not in instance
        assert Path(instance["admin_socket"]).is_socket()
    assert state["nats"]["url"].startswith("tls://127.0.0.1:")
    table = mesh.meshctl("status").stdout
    assert "inventory-1" in table
    assert "SERVING" in table


def test_no_envoy_of_the_mesh_warns_of_a_deprecated_field(mesh: RunningMesh) -> None:
    """A deprecated field runs with a warning until an Envoy release refuses it."""
    logs = {path.name: path.read_text() for path in (mesh.run_dir / "logs").glob("*.envoy.log")}
    instances = {f"{i['instance']}.envoy.log" for i in mesh.state()["instances"]}
    assert set(logs) == {*instances, "edge.envoy.log"}
    warned = {name: deprecations(log) for name, log in logs.items() if deprecations(log)}
    assert warned == {}


# -- who may call -------------------------------------------------------------------------


def test_a_plaintext_client_is_refused(mesh: RunningMesh) -> None:
    result = grpcurl("-plaintext", "-d", '{"product_id": "p"}', _inventory_inbound(mesh), GET_STOCK)
    assert result.returncode != 0
    assert "Code: NotFound" not in result.stderr


def test_a_client_without_a_certificate_is_refused(mesh: RunningMesh) -> None:
    result = grpcurl(
        "-cacert", str(mesh.ca), "-servername", "inventory.shop.svc",
        "-d", '{"product_id": "p"}', _inventory_inbound(mesh), GET_STOCK,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Failed to dial" in result.stderr + result.stdout


def test_a_certificate_from_another_ca_is_refused(mesh: RunningMesh, tmp_path: Path) -> None:
    ca, ca_key = self_signed_ca(tmp_path, "impostor")
    cert, key = leaf(
        ca, ca_key, tmp_path, uri_sans=["spiffe://shop.local/ns/shop/sa/catalog"], name="catalog"
    )
    result = _get_stock_as(mesh, cert, key)
    assert result.returncode != 0
    assert "Failed to dial" in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("uri_sans", "dns_sans"),
    [(["spiffe://evil.example/ns/shop/sa/catalog"], []), ([], ["catalog.shop.svc"])],
    ids=["foreign-trust-domain", "no-spiffe-id"],
)
def test_a_mesh_signed_certificate_without_a_mesh_identity_is_refused(
    mesh: RunningMesh, tmp_path: Path, uri_sans: list[str], dns_sans: list[str]
) -> None:
    ca_key = mesh.run_dir / "pki" / "ca" / "ca-key.pem"
    cert, key = leaf(mesh.ca, ca_key, tmp_path, uri_sans=uri_sans, dns_sans=dns_sans, name="x")
    result = _get_stock_as(mesh, cert, key)
    assert result.returncode != 0
    assert "Failed to dial" in result.stderr + result.stdout


def test_an_undeclared_caller_gets_permission_denied(mesh: RunningMesh) -> None:
    # orders is a mesh identity, but mesh.yaml does not let it call inventory.
    cert, key = mesh.pki("orders-0")
    result = _get_stock_as(mesh, cert, key)
    assert result.returncode != 0
    assert "Code: PermissionDenied" in result.stderr


def test_a_declared_caller_gets_through(mesh: RunningMesh) -> None:
    cert, key = mesh.pki("catalog-0")
    product = str(uuid.uuid4())
    result = grpcurl(
        *_tls(mesh, cert, key), "-d", json.dumps({"product_id": product, "on_hand": 3}),
        _inventory_inbound(mesh), "shop.inventory.v1.InventoryService/SetStock",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["stock"]["onHand"] == 3


def test_the_edge_identity_reaches_public_methods_only(mesh: RunningMesh) -> None:
    cert, key = mesh.pki("edge")
    public = _get_stock_as(mesh, cert, key)
    assert "Code: NotFound" in public.stderr  # the app answered
    reservation = {"order_id": "o", "lines": [{"product_id": "p", "quantity": 1}]}
    internal = grpcurl(
        *_tls(mesh, cert, key), "-d", json.dumps(reservation), _inventory_inbound(mesh),
        "shop.inventory.v1.InventoryService/ReserveStock",
    )  # fmt: skip
    assert "Code: PermissionDenied" in internal.stderr


@pytest.mark.parametrize(
    ("service", "method", "body"),
    [
        ("orders", "shop.orders.v1.OrdersService/ListOrders", {"customer_id": "someone"}),
        ("orders", "shop.orders.v1.OrdersService/GetOrder", {"id": str(uuid.uuid4())}),
        ("shipping", "shop.shipping.v1.ShippingService/GetShipment", {"id": str(uuid.uuid4())}),
        ("payments", "shop.payments.v1.PaymentsService/GetPayment", {"id": str(uuid.uuid4())}),
        (
            "notifications",
            "shop.notifications.v1.NotificationsService/ListNotifications",
            {"customer_id": "someone"},
        ),
    ],
    ids=["list-orders", "get-order", "get-shipment", "get-payment", "list-notifications"],
)
def test_the_edge_identity_without_a_subject_reads_no_customers_data(
    mesh: RunningMesh, service: str, method: str, body: dict[str, str]
) -> None:
    cert, key = mesh.pki("edge")
    inbound = f"127.0.0.1:{mesh.instance(f'{service}-0')['inbound_port']}"
    tls = ["-cacert", str(mesh.ca), "-cert", str(cert), "-key", str(key),
           "-servername", f"{service}.shop.svc"]  # fmt: skip
    answer = grpcurl(*tls, "-d", json.dumps(body), inbound, method)
    assert "Code: Unauthenticated" in answer.stderr, answer.stdout + answer.stderr


def test_the_app_learns_its_callers_identity(mesh: RunningMesh) -> None:
    # catalog's sidecar calls inventory for catalog; inventory's sidecar verified who it is.
    outbound = _outbound(mesh, "catalog-0", "inventory")
    with grpc.insecure_channel(outbound) as channel:
        stub: Any = inventory_grpc.InventoryServiceStub(channel)
        stock = stub.SetStock(
            inventory_pb.SetStockRequest(product_id=str(uuid.uuid4()), on_hand=1), timeout=5
        )
    assert stock.stock.on_hand == 1
    stats = mesh.stats("inventory-0")
    tls_ok = stats.get(
        "listener.127.0.0.1_{}.ssl.handshake".format(mesh.instance("inventory-0")["inbound_port"]),
        0,
    )
    assert tls_ok > 0


# -- resilience ---------------------------------------------------------------------------


def test_a_declared_caller_may_call_only_the_methods_it_names(mesh: RunningMesh) -> None:
    """orders may call catalog's BatchGetProducts (and, in this mesh, CreateProduct), not
    DeleteProduct: catalog's sidecar refuses it before the app sees it."""
    with grpc.insecure_channel(_outbound(mesh, "orders-0", "catalog")) as channel:
        stub: Any = catalog_grpc.CatalogServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.DeleteProduct(catalog_pb.DeleteProductRequest(id=str(uuid.uuid4())), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as answered:  # by catalog itself: none such
            stub.BatchGetProducts(
                catalog_pb.BatchGetProductsRequest(ids=[str(uuid.uuid4())]), timeout=5
            )
        assert answered.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_transient_unavailable_is_retried_for_an_idempotent_call(mesh: RunningMesh) -> None:
    """tok_transient fails UNAVAILABLE on the first try of an idempotency key: payments'
    sidecar retries Authorize (IDEMPOTENT in the contract), so orders sees one success."""
    retried = "cluster.processor.upstream_rq_retry"
    before = mesh.stats("payments-0").get(retried, 0)
    orders_before = mesh.stats("orders-0").get("cluster.payments.upstream_rq_retry", 0)
    with grpc.insecure_channel(_outbound(mesh, "orders-0", "payments")) as channel:
        stub: Any = payments_grpc.PaymentsServiceStub(channel)
        payment = stub.AuthorizePayment(
            payments_pb.AuthorizePaymentRequest(
                order_id=str(uuid.uuid4()),
                customer_id="customer-1",
                amount={"currency_code": "EUR", "units": 5},
                payment_token="tok_transient",
                request_id=str(uuid.uuid4()),
            ),
            timeout=10,
        ).payment
    assert payment.status == payments_pb.PAYMENT_STATUS_AUTHORIZED
    assert mesh.stats("payments-0")[retried] >= before + 1
    # The retry happened at the processor's hop: payments answered orders' one try.
    assert mesh.stats("orders-0").get("cluster.payments.upstream_rq_retry", 0) == orders_before


def test_a_non_idempotent_call_that_may_have_been_applied_is_not_retried(
    mesh: RunningMesh,
) -> None:
    """CreateProduct stalls after catalog stored the product: retrying would store it twice."""
    inventory_pids = [
        i["app_pid"] for i in mesh.state()["instances"] if i["service"] == "inventory"
    ]
    category = f"stall-{uuid.uuid4().hex[:8]}"
    request = catalog_pb.CreateProductRequest(
        product=catalog_pb.Product(
            name="Tea",
            category=category,
            price={"currency_code": "EUR", "units": 2},
            weight_grams=100,
        )
    )
    mesh_topology = topology.load(mesh.config)
    deadline_of_route = envoy.route_timeout(
        mesh_topology.services["catalog"].method("CreateProduct"),
        mesh_topology.services["orders"].calls["catalog"].timeout,
    )
    before = mesh.stats("orders-0")
    with grpc.insecure_channel(_outbound(mesh, "orders-0", "catalog")) as channel:
        stub: Any = catalog_grpc.CatalogServiceStub(channel)
        for pid in inventory_pids:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(grpc.RpcError) as failed:
                stub.CreateProduct(request, timeout=10)
        finally:
            lasted = time.monotonic() - started
            for pid in inventory_pids:
                os.kill(pid, signal.SIGCONT)
        after = mesh.stats("orders-0")
        # One try, given the whole deadline of the route (a per-try timeout would only cut
        # it short). Several timers are set to that moment (orders' sidecar's, catalog's
        # sidecar's and catalog's own call to inventory, which inherits the deadline),
        # and whichever fires first ends the call: so what is asserted is the status and
        # that the call lasted the route's deadline, not a per-try timeout's (1 s). The
        # deadline travels in whole milliseconds (`grpc-timeout`), which a hop rounds
        # down, so the last timer may fire a millisecond or two before it.
        assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, failed.value.details()
        assert lasted >= deadline_of_route - DEADLINE_ROUNDING
        assert after.get("cluster.catalog.upstream_rq_per_try_timeout", 0) == before.get(
            "cluster.catalog.upstream_rq_per_try_timeout", 0
        )
        assert after.get("cluster.catalog.upstream_rq_retry", 0) == before.get(
            "cluster.catalog.upstream_rq_retry", 0
        )
        listed: list[Any] = wait_until(
            lambda: list(
                stub.ListProducts(
                    catalog_pb.ListProductsRequest(category=category), timeout=5
                ).products
            ),
            "the product stored by the one try listed",
            15,
            0.2,
        )
    assert len(listed) == 1  # the one try reached catalog and was applied exactly once


def test_killing_a_replica_during_load_keeps_calls_succeeding(mesh: RunningMesh) -> None:
    victim = mesh.instance("inventory-1")
    product = str(uuid.uuid4())
    outcomes: list[bool] = []
    killed = threading.Event()

    with grpc.insecure_channel(_outbound(mesh, "catalog-0", "inventory")) as channel:
        stub: Any = inventory_grpc.InventoryServiceStub(channel)
        stub.SetStock(inventory_pb.SetStockRequest(product_id=product, on_hand=1), timeout=5)
        deadline = time.monotonic() + 6.0
        calls = 0
        while time.monotonic() < deadline and calls < 3000:
            calls += 1
            if calls == 100:
                os.kill(victim["app_pid"], signal.SIGKILL)
                killed.set()
            try:
                stub.GetStock(inventory_pb.GetStockRequest(product_id=product), timeout=3)
                outcomes.append(True)
            except grpc.RpcError:
                outcomes.append(False)

    assert killed.is_set()
    success = sum(outcomes) / len(outcomes)
    print(f"calls {len(outcomes)}, success {success:.4f}")
    assert len(outcomes) >= 200
    assert success >= 0.99
    stats = mesh.stats("catalog-0")
    assert (
        stats.get("cluster.inventory.upstream_rq_retry", 0)
        + stats.get("cluster.inventory.outlier_detection.ejections_enforced_total", 0)
        > 0
    )

    # The supervisor restarts the killed app with backoff and says so.
    def restarted_and_serving() -> dict[str, Any] | None:
        restarted = mesh.instance("inventory-1")
        back = restarted["restarts"] >= 1 and restarted["health"] == "SERVING"
        return restarted if back else None

    restarted = wait_until(restarted_and_serving, "inventory-1 restarted and SERVING", 30, 0.5)
    assert restarted["app_pid"] != victim["app_pid"]
    assert restarted["restarts"] >= 1
    assert restarted["health"] == "SERVING"


# -- operations ---------------------------------------------------------------------------


def _serving_serial(mesh: RunningMesh, instance: str) -> str:
    """The serial of the certificate `instance`'s sidecar presents now (Envoy admin)."""
    admin = mesh.instance(instance)["admin_socket"]
    certificates = json.loads(envoy.admin_get(admin, "/certs"))["certificates"]
    return str(certificates[0]["cert_chain"][0]["serial_number"])


def test_rotated_certificates_reach_the_sidecars_without_restarts(mesh: RunningMesh) -> None:
    before = mesh.instance("inventory-0")
    old_serial = _serving_serial(mesh, "inventory-0")
    table = mesh.meshctl("certs", "--rotate", "--config", str(mesh.config)).stdout
    assert "spiffe://shop.local/ns/shop/sa/inventory" in table
    wait_until(
        lambda: _serving_serial(mesh, "inventory-0") != old_serial,
        "inventory-0's sidecar serving the rotated certificate",
        20,
        0.2,
    )
    assert _serving_serial(mesh, "inventory-0") != old_serial
    after = mesh.instance("inventory-0")
    assert (after["app_pid"], after["sidecar_pid"]) == (before["app_pid"], before["sidecar_pid"])
    # mTLS still works with the new certificates on both ends.
    cert, key = mesh.pki("catalog-0")
    assert "Code: NotFound" in _get_stock_as(mesh, cert, key).stderr


def test_logs_show_a_services_instances(mesh: RunningMesh) -> None:
    output = mesh.meshctl("logs", "inventory", "--lines", "200").stdout
    assert "inventory-0" in output
    assert "inventory-1" in output
    assert "serving shop.inventory.v1.InventoryService" in output


def test_a_second_mesh_runs_beside_the_first_and_one_run_dir_runs_one_mesh(
    mesh: RunningMesh, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(
        "services:\n  inventory: {}\n  catalog:\n    calls: {inventory: {methods: all}}\n"
    )
    second = RunningMesh(tmp_path / "run", config)
    started = second.meshctl("up", "--detach", "--config", str(config), check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert {i["instance"] for i in second.state()["instances"]} == {"inventory-0", "catalog-0"}
        assert mesh.state()["status"] == "healthy"
        again = second.meshctl("up", "--detach", "--config", str(config), check=False)
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        assert second.down() == []


async def test_meshctl_dlq_lists_shows_and_replays_dead_letters(mesh: RunningMesh) -> None:
    subject = "shop.orders.order_cancelled"
    cancelled = events_pb2.OrderCancelled(order_id="o-dlq", customer_id="c-dlq", reason="test")
    event = events.new_event("orders", "o-dlq", cancelled).SerializeToString()
    async with mesh.jetstream() as js:
        kept = await js.publish(subject, event, headers={events.MSG_ID: str(uuid.uuid4())})

        async def dead_letter(body: bytes, reason: str) -> None:
            await js.publish(
                events.consumer_dead_subject("notifications"),
                body,
                headers={events.DEAD_CONSUMER: "payments", events.DEAD_SUBJECT: subject,
                         events.DEAD_SEQUENCE: str(kept.seq), events.DEAD_REASON: reason},
            )  # fmt: skip

        await dead_letter(event, "failed 5 times: boom")
        listed = json.loads(mesh.meshctl("dlq", "list", "--json").stdout)
        [letter] = [d for d in listed if d.get("event", {}).get("orderId") == "o-dlq"]
        assert letter["consumer"] == "notifications"  # its subject's, not its header's
        assert letter["reason"] == "failed 5 times: boom"
        shown = json.loads(mesh.meshctl("dlq", "show", str(letter["sequence"])).stdout)
        assert (shown["subject"], shown["event_sequence"]) == (subject, kept.seq)
        before = (await js.stream_info(events.EVENTS_STREAM)).state.messages
        replayed = mesh.meshctl("dlq", "replay", str(letter["sequence"]))
        assert f"replayed {letter['sequence']} to {subject}" in replayed.stdout
        after = (await js.stream_info(events.EVENTS_STREAM)).state.messages
        assert after == before + 1
        again = json.loads(mesh.meshctl("dlq", "list", "--json").stdout)
        assert all(d["sequence"] != letter["sequence"] for d in again)

        await dead_letter(b"a body of its own", "forged")
        [forged] = [
            d
            for d in json.loads(mesh.meshctl("dlq", "list", "--json").stdout)
            if d["reason"] == "forged"
        ]
        refused = mesh.meshctl("dlq", "replay", str(forged["sequence"]), check=False)
        assert refused.returncode != 0
        assert f"is not event {kept.seq} of SHOP_EVENTS" in refused.stderr
        assert (await js.stream_info(events.EVENTS_STREAM)).state.messages == after
