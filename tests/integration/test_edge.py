"""The edge end to end: REST and native gRPC through one port, tokens, scopes, errors, docs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.type import postal_address_pb2
from openapi_spec_validator import validate

from mesh.control import envoy, topology
from mesh.control.binaries import find_binary
from mesh.runtime import admission
from mesh.runtime.caller import SUBJECT_METADATA_KEY
from mesh.runtime.json_names import REST_METHOD_HEADER
from mesh.runtime.reflection import SERVICE_NAMES as REFLECTION
from shop.catalog.v1 import catalog_service_pb2 as catalog_pb
from shop.catalog.v1 import catalog_service_pb2_grpc as catalog_grpc
from shop.events.v1 import events_pb2
from shop.orders.v1 import orders_service_pb2 as orders_pb
from shop.orders.v1 import orders_service_pb2_grpc as orders_grpc
from tests.support.component import field_violations
from tests.support.mesh import (
    ROOT,
    SMALL_MESH_YAML,
    RunningMesh,
    assert_json_error,
    bearer,
    customer,
    grpcurl,
    mesh_up,
    reflecting_grpcurl,
    stream_events,
)
from tests.support.reflection import defining_file, listed
from tests.support.wait import eventually

pytestmark = pytest.mark.integration

TEA = {"name": "Tea", "category": "food", "weightGrams": 100,
       "price": {"currencyCode": "EUR", "units": "3"}}  # fmt: skip
ADDRESS = {"regionCode": "DE", "postalCode": "10115", "addressLines": ["Hauptstr. 1"]}


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
        yield client


def test_browsing_products_needs_no_token(edge: httpx.Client) -> None:
    response = edge.get("/v1/products", params={"pageSize": 5})
    assert response.status_code == 200
    assert isinstance(response.json().get("products", []), list)


def test_creating_a_product_needs_a_token_with_the_scope(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    anonymous = edge.post("/v1/products", json={"product": TEA})
    assert_json_error(anonymous, 401, 16)
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    without_scope = edge.post(
        "/v1/products", json={"product": TEA}, headers=bearer(mesh.token("u1", "orders:write"))
    )
    assert_json_error(without_scope, 403, 7)
    forged = edge.post(
        "/v1/products", json={"product": TEA}, headers=bearer("eyJhbGciOiJub25lIn0.e30.")
    )
    assert_json_error(forged, 401, 16)
    created = edge.post(
        "/v1/products",
        json={"product": TEA, "initialStock": 7},
        headers=bearer(mesh.token("admin", "catalog:write")),
    )
    assert created.status_code == 200, created.text
    product = created.json()["product"]
    assert product["name"] == "Tea"
    assert edge.get(f"/v1/products/{product['id']}").json()["product"] == product
    stock = edge.get(f"/v1/products/{product['id']}/stock").json()["stock"]
    assert stock["onHand"] == 7


def test_an_order_is_placed_with_a_token_and_shown_to_its_owner_only(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    admin = bearer(mesh.token("admin", "catalog:write"))
    product = edge.post("/v1/products", json={"product": TEA}, headers=admin).json()["product"]
    ada, ada_token = customer(edge)
    order = {"lines": [{"productId": product["id"], "quantity": 2}], "shippingAddress": ADDRESS,
             "paymentToken": "tok_visa"}  # fmt: skip
    assert_json_error(edge.post("/v1/orders", json=order), 401, 16)
    placed = edge.post("/v1/orders", json=order, headers=bearer(ada_token))
    assert placed.status_code == 200, placed.text
    body = placed.json()["order"]
    assert body["customerId"] == ada
    assert body["total"] == {"currencyCode": "EUR", "units": "6"}
    assert "paymentToken" not in body

    mine = edge.get(f"/v1/orders/{body['id']}", headers=bearer(ada_token))
    assert mine.status_code == 200
    assert mine.json()["order"]["id"] == body["id"]
    _, bob_token = customer(edge)
    theirs = edge.get(f"/v1/orders/{body['id']}", headers=bearer(bob_token))
    error = assert_json_error(theirs, 404, 5)
    assert error["details"][0]["reason"] == "ORDER_NOT_FOUND"


def test_a_client_cannot_forge_the_caller_identity(edge: httpx.Client) -> None:
    ada, token = customer(edge)
    me = edge.get("/v1/users/me", headers={**bearer(token), SUBJECT_METADATA_KEY: "someone-else"})
    assert me.json()["user"]["id"] == ada
    anonymous = edge.get("/v1/users/me", headers={SUBJECT_METADATA_KEY: ada})
    assert_json_error(anonymous, 401, 16)


def test_a_customer_sees_their_own_notifications_only(edge: httpx.Client) -> None:
    ada, token = customer(edge)
    bob, _ = customer(edge)
    mine = edge.get("/v1/notifications", headers=bearer(token))
    assert mine.status_code == 200, mine.text
    assert (
        edge.get("/v1/notifications", params={"customerId": ada}, headers=bearer(token)).status_code
        == 200
    )
    theirs = edge.get("/v1/notifications", params={"customerId": bob}, headers=bearer(token))
    assert assert_json_error(theirs, 403, 7)["details"][0]["reason"] == "CUSTOMER_MISMATCH"


def test_service_errors_keep_their_status_and_details(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    missing = edge.get("/v1/products/does-not-exist")
    assert assert_json_error(missing, 404, 5)["details"][0]["reason"] == "PRODUCT_NOT_FOUND"
    invalid = edge.post(
        "/v1/products",
        json={"product": {**TEA, "name": ""}},
        headers=bearer(mesh.token("admin", "catalog:write")),
    )
    details = assert_json_error(invalid, 400, 3)["details"]
    violations = next(d for d in details if d["@type"].endswith("BadRequest"))
    assert violations["fieldViolations"][0]["field"] == "product.name"


def _order_with_a_long_address_line() -> orders_pb.PlaceOrderRequest:
    """An order whose first address line is one character past its bound (200)."""
    return orders_pb.PlaceOrderRequest(
        lines=[orders_pb.OrderLine(product_id="p", quantity=1)],
        shipping_address=postal_address_pb2.PostalAddress(
            region_code="DE", postal_code="10115", address_lines=["x" * 201]
        ),
        payment_token="tok_visa",
    )


def _bad_request(response: httpx.Response) -> list[dict[str, str]]:
    details = assert_json_error(response, 400, 3)["details"]
    violations: list[dict[str, str]] = next(
        d for d in details if d["@type"].endswith("BadRequest")
    )["fieldViolations"]
    return violations


def test_a_rest_clients_field_violations_name_fields_as_json_does(edge: httpx.Client) -> None:
    _, token = customer(edge)
    order = json_format.MessageToDict(_order_with_a_long_address_line())
    response = edge.post("/v1/orders", json=order, headers=bearer(token))
    assert _bad_request(response) == [
        {
            "field": "shippingAddress.addressLines[0]",
            "description": "shippingAddress.addressLines[0] is longer than 200 characters.",
            "reason": "TOO_LONG",
        }
    ]
    assert "address_lines" not in response.json()["message"]
    # A handler's violation (the runtime's page tokens), on a query parameter.
    listed = edge.get("/v1/products", params={"pageToken": "not-a-token"})
    assert [v["field"] for v in _bad_request(listed)] == ["pageToken"]


async def _violations_over_grpc(mesh: RunningMesh, *metadata: tuple[str, str]) -> list[str]:
    """The fields a native gRPC PlaceOrder through the edge is refused for."""
    address = mesh.edge_url.removeprefix("http://")
    token = mesh.token(f"grpc-{uuid.uuid4().hex[:8]}", "orders:write")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orders_grpc.OrdersServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.PlaceOrder(
                _order_with_a_long_address_line(),
                metadata=(("authorization", f"Bearer {token}"), *metadata),
                timeout=10,
            )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
    return field_violations(failed.value)


async def test_a_grpc_clients_field_violations_name_fields_as_protobuf_does(
    mesh: RunningMesh,
) -> None:
    assert await _violations_over_grpc(mesh) == ["shipping_address.address_lines[0]"]


async def test_a_grpc_client_cannot_ask_for_json_names_itself(mesh: RunningMesh) -> None:
    claimed = ((REST_METHOD_HEADER, "POST"), ("x-envoy-original-method", "POST"))
    assert await _violations_over_grpc(mesh, *claimed) == ["shipping_address.address_lines[0]"]


def test_the_edges_own_errors_are_json(edge: httpx.Client, mesh: RunningMesh) -> None:
    assert_json_error(edge.get("/v1/no-such-thing"), 404, 5)
    assert_json_error(edge.get("/v1/products", params={"bogus": "1"}), 400, 3)
    admin = bearer(mesh.token("admin", "catalog:write"))
    broken = edge.post(
        "/v1/products", content=b"{not json", headers={**admin, "content-type": "application/json"}
    )
    assert_json_error(broken, 400, 3)
    too_big = edge.post("/v1/products", content=b"x" * 2_000_000, headers=admin)
    assert_json_error(too_big, 413, 3)


def test_cors_preflight_allows_the_configured_origins_only(edge: httpx.Client) -> None:
    request = {"access-control-request-method": "POST",
               "access-control-request-headers": "authorization, content-type"}  # fmt: skip
    allowed = edge.options("/v1/orders", headers={"origin": "http://localhost:3000", **request})
    assert allowed.headers.get("access-control-allow-origin") == "http://localhost:3000"
    assert "authorization" in allowed.headers.get("access-control-allow-headers", "")
    other = edge.options("/v1/orders", headers={"origin": "http://evil.example", **request})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    "symbol",
    [
        "shop.processor.v1.ProcessorService",  # a service the edge does not expose
        "shop.shipping.v1.ShippingService.CreateShipment",  # an INTERNAL method
        "shop.shipping.v1.CreateShipmentRequest",  # a message only INTERNAL methods take
        "shop.events.v1.EventEnvelope",  # the bus's, not the API's
    ],
)
def test_the_edges_reflection_describes_nothing_but_the_public_api(
    mesh: RunningMesh, symbol: str
) -> None:
    address = mesh.edge_url.removeprefix("http://")

    def described(name: str) -> subprocess.CompletedProcess[str]:
        """`grpcurl describe` through the edge's reflection (no local descriptor set)."""
        return subprocess.run(
            [find_binary("grpcurl"), "-plaintext", address, "describe", name],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    refused = described(symbol)
    assert refused.returncode != 0
    assert "not found" in refused.stderr.lower(), refused.stderr
    shipping = described("shop.shipping.v1.ShippingService")
    assert "QuoteShipment" in shipping.stdout, shipping.stderr
    assert "CreateShipment" not in shipping.stdout


def test_grpc_through_the_edge_lists_describes_and_authenticates(mesh: RunningMesh) -> None:
    address = mesh.edge_url.removeprefix("http://")
    listing = grpcurl("-plaintext", address, "list")
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) >= {
        f"shop.{name}.v1.{name.capitalize()}Service"
        for name in (
            "catalog",
            "inventory",
            "orders",
            "payments",
            "shipping",
            "identity",
            "notifications",
        )
    }
    described = grpcurl("-plaintext", address, "describe", "shop.orders.v1.OrdersService")
    assert "rpc PlaceOrder" in described.stdout

    anonymous = grpcurl(
        "-plaintext", "-d", "{}", address, "shop.orders.v1.OrdersService/ListOrders"
    )
    assert "Code: Unauthenticated" in anonymous.stderr
    token = mesh.token("bob", "orders:read")
    allowed = grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {token}", "-d", "{}", address,
        "shop.orders.v1.OrdersService/ListOrders",
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    public = grpcurl(
        "-plaintext", "-d", "{}", address, "shop.catalog.v1.CatalogService/ListProducts"
    )
    assert public.returncode == 0, public.stderr
    internal = grpcurl(
        "-plaintext", "-H", f"authorization: Bearer {token}",
        "-d", json.dumps({"order_id": "o", "lines": [{"product_id": "p", "quantity": 1}]}),
        address, "shop.inventory.v1.InventoryService/ReserveStock",
    )  # fmt: skip
    assert "Code: Unimplemented" in internal.stderr


def test_health_through_the_edge_knows_the_edge_and_public_services_only(
    mesh: RunningMesh,
) -> None:
    address = mesh.edge_url.removeprefix("http://")
    described = reflecting_grpcurl(address, "describe", "grpc.health.v1.Health")
    assert described.returncode == 0, described.stderr
    assert "rpc Check ( .grpc.health.v1.HealthCheckRequest )" in described.stdout

    def check(service: str) -> subprocess.CompletedProcess[str]:
        request = json.dumps({"service": service})
        return reflecting_grpcurl("-d", request, address, "grpc.health.v1.Health/Check")

    for serving in ("shop.catalog.v1.CatalogService", ""):
        answer = check(serving)
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout) == {"status": "SERVING"}
    internal = check("shop.processor.v1.ProcessorService")
    unknown = check("shop.nope.v1.NopeService")
    assert "Code: NotFound" in internal.stderr
    assert internal.stderr == unknown.stderr
    listing = reflecting_grpcurl("-d", "{}", address, "grpc.health.v1.Health/List")
    assert "Code: Unimplemented" in listing.stderr, listing.stderr


async def test_reflection_v1_through_the_edge_lists_the_public_api(mesh: RunningMesh) -> None:
    address = mesh.edge_url.removeprefix("http://")
    services = await listed(address)
    assert {"shop.catalog.v1.CatalogService", "grpc.health.v1.Health", *REFLECTION} <= services
    assert "shop.processor.v1.ProcessorService" not in services
    assert await defining_file(address, "grpc.health.v1.Health") == "grpc_health/v1/health.proto"
    assert await defining_file(address, "shop.processor.v1.ProcessorService") == "not found"


def test_a_token_for_the_call_only_leaves_reflection_alone(mesh: RunningMesh) -> None:
    """grpcurl sends `-H` headers with its reflection requests too: a bad token there
    fails the method's lookup; with `-rpc-header` the call itself is refused, in words."""
    address = mesh.edge_url.removeprefix("http://")
    bad = "authorization: Bearer not-a-token"
    call = ["-d", "{}", address, "shop.catalog.v1.CatalogService/ListProducts"]
    lookup_failed = "failed to query for service descriptor"
    everywhere = reflecting_grpcurl("-H", bad, *call)
    assert everywhere.returncode != 0
    assert lookup_failed in everywhere.stderr, everywhere.stderr
    for_the_call = reflecting_grpcurl("-rpc-header", bad, *call)
    assert "Code: Unauthenticated" in for_the_call.stderr, for_the_call.stderr
    assert lookup_failed not in for_the_call.stderr


def test_openapi_and_docs_are_served(edge: httpx.Client) -> None:
    document = edge.get("/openapi.json")
    assert document.status_code == 200
    spec = document.json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert "post" in spec["paths"]["/v1/orders"]
    assert not any("ReserveStock" in json.dumps(op) for op in spec["paths"].values())
    page = edge.get("/docs")
    assert page.status_code == 200
    assert "/docs/swagger-ui-bundle.js" in page.text
    bundle = edge.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.content) > 100_000


SMALL_MESH = SMALL_MESH_YAML + "  rate_limit:\n%s\n"


@contextlib.contextmanager
def small_mesh(tmp_path: Path, rate_limit: str) -> Iterator[RunningMesh]:
    """A mesh of its own: identity and inventory behind an edge with `rate_limit`."""
    config = tmp_path / "mesh.yaml"
    config.write_text(SMALL_MESH % rate_limit)
    with mesh_up(RunningMesh(tmp_path / "run", config)) as small:
        yield small


def test_over_the_rate_limit_the_edge_answers_429_in_json(tmp_path: Path) -> None:
    """A total of 10 requests refilled at 5 a second, for everyone."""
    total = "    total: {requests_per_second: 5, burst: 10}"
    with (
        small_mesh(tmp_path, total) as small,
        httpx.Client(base_url=small.edge_url, timeout=10) as client,
    ):
        statuses = [client.get("/v1/products/p/stock") for _ in range(30)]
    limited = [r for r in statuses if r.status_code == 429]
    assert 10 <= len(limited) <= 25, [r.status_code for r in statuses]
    assert_json_error(limited[0], 429, 8)
    assert {r.status_code for r in statuses} <= {404, 429}


def _passed(client: httpx.Client, count: int, headers: dict[str, str] | None = None) -> int:
    """How many of `count` GetStock calls the edge let through (404: no such product)."""
    statuses = [client.get("/v1/products/p/stock", headers=headers).status_code
                for _ in range(count)]  # fmt: skip
    assert set(statuses) <= {404, 429}, statuses
    return statuses.count(404)


def _anonymous_calls_so_far(edge_mesh: RunningMesh) -> int:
    """How many calls the edge's client buckets have let through (none carried a token)."""
    counted = envoy.admin_stats(edge_mesh.state()["edge"]["admin_socket"], "client_rate_limits")
    return sum(n for name, n in counted.items() if name.endswith("http_local_rate_limit.ok"))


def test_each_client_has_its_own_bucket_and_anonymous_ones_share_one(tmp_path: Path) -> None:
    """Buckets refilled at 1 a second: 5 per client, 8 for every call without a token.

    An anonymous flood from two addresses takes its 5 from each address's bucket and then
    finds the shared anonymous one empty; customers with tokens keep their own 5 each,
    and health checks answer whatever the buckets hold.
    """
    buckets = (
        "    per_client: {requests_per_second: 1, burst: 5}\n"
        "    anonymous: {requests_per_second: 1, burst: 8}"
    )
    with small_mesh(tmp_path, buckets) as small:
        alice, bob = (bearer(small.token(subject)) for subject in ("alice", "bob"))
        # The edge fetched identity's JWKS from itself until identity answered, each try an
        # anonymous call from loopback, the last just before the mesh was healthy: one
        # refill (1 s) for each of them gives the shared bucket its whole burst again.
        time.sleep(min(_anonymous_calls_so_far(small), 8))

        def client_at(address: str) -> httpx.Client:
            transport = httpx.HTTPTransport(local_address=address)
            return httpx.Client(base_url=small.edge_url, timeout=10, transport=transport)

        with client_at("127.0.0.2") as first, client_at("127.0.0.3") as second:
            from_first = _passed(first, 10)
            from_second = _passed(second, 10)
            # A refill may add a token to any bucket while this runs: at most one each.
            assert 5 <= from_first <= 6, from_first
            assert 3 <= from_second <= 4, from_second  # the shared bucket held 8
            assert from_first + from_second <= 8 + 2
            as_alice = _passed(first, 8, alice)
            as_bob = _passed(second, 8, bob)
            assert 5 <= as_alice <= 6, as_alice
            assert 5 <= as_bob <= 6, as_bob
            assert _passed(first, 3) <= 1  # still empty for the anonymous
            health = [first.get("/healthz").status_code for _ in range(20)]
            assert health == [200] * 20
            limited = first.get("/v1/products/p/stock")
    assert_json_error(limited, 429, 8)
    assert limited.headers["x-ratelimit-limit"].startswith("5")


def test_the_python_client_example_places_an_order(edge: httpx.Client, mesh: RunningMesh) -> None:
    admin = bearer(mesh.token("admin", "catalog:write"))
    assert edge.post("/v1/products", json={"product": TEA}, headers=admin).status_code == 200
    example = ROOT / "examples" / "place_order.py"
    result = subprocess.run(
        [sys.executable, str(example), "--edge", mesh.edge_url.removeprefix("http://")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, *history = result.stdout.splitlines()
    assert re.fullmatch(
        r"order \S+: 2 x .+, \d+\.\d\d [A-Z]{3}, ORDER_STATUS_(CONFIRMED|CANCELLED)", first
    )
    assert history[0].split()[1:3] == ["OrderPlaced", "SUCCEEDED"]
    assert history[-1].split()[1] in ("OrderConfirmed", "OrderCancelled")


def _place_an_order_twice(mesh: RunningMesh) -> str:
    """Place one order, then retry it with the same request id; the order's id."""
    with httpx.Client(base_url=mesh.edge_url, timeout=20) as edge:
        admin = bearer(mesh.token("admin", "catalog:write"))
        product = edge.post(
            "/v1/products", json={"product": {**TEA, "weightGrams": 300}}, headers=admin
        ).json()["product"]
        _, token = customer(edge)
        order = {"lines": [{"productId": product["id"], "quantity": 3}], "shippingAddress": ADDRESS,
                 "paymentToken": "tok_visa", "requestId": str(uuid.uuid4())}  # fmt: skip
        placed = [edge.post("/v1/orders", json=order, headers=bearer(token)) for _ in range(2)]
    assert placed[0].json() == placed[1].json()
    order_id: str = placed[0].json()["order"]["id"]
    return order_id


async def test_each_placed_order_publishes_exactly_one_order_placed_event(
    mesh: RunningMesh,
) -> None:
    """Through the orders' outbox and relay to JetStream, a retried PlaceOrder included."""
    order_id = await asyncio.to_thread(_place_an_order_twice, mesh)
    async with mesh.jetstream() as js:

        async def placements() -> list[events_pb2.EventEnvelope]:
            placed = await stream_events(js, "shop.orders.order_placed")
            return [event for event in placed if event.order_id == order_id]

        found = await eventually(placements, f"OrderPlaced of {order_id} published", 20, 0.2)
    assert len(found) == 1
    event = found[0].order_placed
    assert (event.weight_grams, event.payment_token, event.lines[0].quantity) == (
        900,
        "tok_visa",
        3,
    )


async def test_a_call_beyond_what_catalog_admits_is_refused_in_the_apps_words(
    mesh: RunningMesh,
) -> None:
    """The edge's own refusal (its circuit breaker for catalog, UO) says what the apps say
    of it, not Envoy's "upstream connect error ... overflow", and when to try again."""
    admitted = envoy.admitted(topology.load(ROOT / "mesh.yaml"), "catalog")
    host = mesh.edge_url.removeprefix("http://")
    async with grpc.aio.insecure_channel(host) as channel:  # one connection: all at once
        stub = catalog_grpc.CatalogServiceStub(channel)
        calls = [stub.ListProducts(catalog_pb.ListProductsRequest()) for _ in range(8 * admitted)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, "every call was admitted: the burst did not reach catalog's limit"
    for error in refused:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == admission.REFUSAL_MESSAGE
        metadata = dict(error.initial_metadata() or ()) | dict(error.trailing_metadata() or ())
        assert metadata.get("retry-after") == str(admission.RETRY_AFTER_SECONDS)


async def test_a_rest_call_beyond_what_catalog_admits_is_refused_as_json(
    mesh: RunningMesh,
) -> None:
    """The same refusal to a REST client: a JSON body with the gRPC code and the message."""
    admitted = envoy.admitted(topology.load(ROOT / "mesh.yaml"), "catalog")
    burst = 16 * admitted
    limits = httpx.Limits(max_connections=burst)
    async with httpx.AsyncClient(base_url=mesh.edge_url, limits=limits, timeout=10) as client:
        replies = await asyncio.gather(*(client.get("/v1/products") for _ in range(burst)))
    refused = [reply for reply in replies if reply.status_code != 200]
    assert refused, "every call was admitted: the burst did not reach catalog's limit"
    for reply in refused:
        assert reply.status_code == 503
        assert reply.headers["content-type"] == "application/json"
        assert reply.json() == {
            "code": grpc.StatusCode.UNAVAILABLE.value[0],
            "status": "UNAVAILABLE",
            "message": admission.REFUSAL_MESSAGE,
        }
        assert reply.headers["retry-after"] == str(admission.RETRY_AFTER_SECONDS)
