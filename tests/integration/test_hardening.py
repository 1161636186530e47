"""Hostile input against the running mesh: what no request may do to it.

Each test is one class of attack, tried at the edge (REST and native gRPC) and at a
sidecar, the way a client or a compromised neighbour would: the answer is a clear 4xx /
INVALID_ARGUMENT that says nothing of the implementation, and the mesh goes on serving.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from tests.support.mesh import RunningMesh, assert_json_error, customer, leaks_nothing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
        yield client


def _bad_request(response: httpx.Response) -> list[dict[str, str]]:
    """The field violations of a 400 INVALID_ARGUMENT that leaks nothing."""
    body = assert_json_error(response, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    leaks_nothing(response.text)
    violations = next(d for d in body["details"] if d["@type"].endswith("BadRequest"))
    fields: list[dict[str, str]] = violations["fieldViolations"]
    return fields


# -- undecodable requests ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/products/%FF%FE", "/v1/orders/%C3%28"])
def test_a_path_parameter_that_is_not_utf8_is_a_bad_request(
    edge: httpx.Client, mesh: RunningMesh, path: str
) -> None:
    token = mesh.token("someone")
    response = edge.get(path, headers={"authorization": f"Bearer {token}"})
    body = assert_json_error(response, 400, grpc.StatusCode.INVALID_ARGUMENT.value[0])
    leaks_nothing(response.text)
    assert body["details"][0]["reason"] == "MALFORMED_REQUEST"


@pytest.mark.parametrize("raw", [b"\x0a\x02\xff\xfe", b"\x0a\x7f\x01", b"\xff\xff\xff\xff"])
def test_corrupt_protobuf_through_the_edge_is_invalid_argument(
    mesh: RunningMesh, raw: bytes
) -> None:
    address = mesh.edge_url.removeprefix("http://")
    with grpc.insecure_channel(address) as channel:
        call: Any = channel.unary_unary("/shop.catalog.v1.CatalogService/GetProduct")
        with pytest.raises(grpc.RpcError) as failed:
            call(raw, timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failed.value.details()
    leaks_nothing(failed.value.details() or "")


# -- page tokens ----------------------------------------------------------------------------


def _crafted(content: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(content).encode()).decode().rstrip("=")


ALL = {"category": ""}
CRAFTED_TOKENS = {
    "wrong-type": _crafted({"after": [], "filters": ALL}),
    "odd-offset": _crafted({"after": {"create_time": "2026-01-01T00:00+25:00"}, "filters": ALL}),
    "number-id": _crafted({"after": {"create_time": "2026-01-01", "id": 7}, "filters": ALL}),
    "after-a-string": _crafted({"after": "abc", "filters": ALL}),
    "offset-before-year-one": _crafted(
        {"after": {"create_time": "0001-01-01T00:00:00+01:00", "id": "x"}, "filters": ALL}
    ),
    "not-an-object": _crafted("after"),
    "garbage": "%%%%",
}


@pytest.mark.parametrize("token", CRAFTED_TOKENS.values(), ids=CRAFTED_TOKENS.keys())
def test_a_page_token_the_service_did_not_issue_is_a_bad_request(
    edge: httpx.Client, token: str
) -> None:
    response = edge.get("/v1/products", params={"pageToken": token})
    assert [v["field"] for v in _bad_request(response)] == ["pageToken"]


def test_a_page_token_the_service_issued_still_leads_on(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    admin = {"authorization": f"Bearer {mesh.token('admin', 'catalog:write')}"}
    product = {"name": "Tea", "category": "paged", "weightGrams": 100,
               "price": {"currencyCode": "EUR", "units": "3"}}  # fmt: skip
    for _ in range(3):
        assert edge.post("/v1/products", json={"product": product}, headers=admin).is_success
    first = edge.get("/v1/products", params={"category": "paged", "pageSize": 2}).json()
    second = edge.get(
        "/v1/products",
        params={"category": "paged", "pageSize": 2, "pageToken": first["nextPageToken"]},
    ).json()
    assert len(first["products"]) == 2
    assert len(second["products"]) >= 1
    assert {p["id"] for p in first["products"]}.isdisjoint(p["id"] for p in second["products"])


# -- bounds and checked arithmetic ----------------------------------------------------------

ADDRESS = {"regionCode": "DE", "postalCode": "10115", "addressLines": ["Hauptstr. 1"]}


def _reason(body: dict[str, Any]) -> str:
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    reason: str = info["reason"]
    return reason


def _products(edge: httpx.Client, mesh: RunningMesh, *products: dict[str, Any]) -> list[str]:
    admin = {"authorization": f"Bearer {mesh.token('admin', 'catalog:write')}"}
    ids = []
    for product in products:
        created = edge.post("/v1/products", json={"product": product}, headers=admin)
        assert created.status_code == 200, created.text
        ids.append(created.json()["product"]["id"])
    return ids


def _order(edge: httpx.Client, token: str, lines: list[tuple[str, int]], **address: Any) -> Any:
    order = {
        "lines": [{"productId": product, "quantity": quantity} for product, quantity in lines],
        "shippingAddress": {**ADDRESS, **address},
        "paymentToken": "tok_visa",
    }
    return edge.post("/v1/orders", json=order, headers={"authorization": f"Bearer {token}"})


def _orders_of(edge: httpx.Client, token: str) -> list[Any]:
    listed = edge.get("/v1/orders", headers={"authorization": f"Bearer {token}"})
    assert listed.status_code == 200, listed.text
    orders: list[Any] = listed.json().get("orders", [])
    return orders


def test_a_text_past_its_bound_is_refused_without_an_echo_or_an_order(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    [tea] = _products(edge, mesh, {"name": "Tea", "category": "bounded", "weightGrams": 100,
                                   "price": {"currencyCode": "EUR", "units": "3"}})  # fmt: skip
    _, token = customer(edge)
    line = "Hauptstr. " + "x" * 1_000_000
    response = _order(edge, token, [(tea, 1)], addressLines=[line])
    assert _bad_request(response) == [
        {
            "field": "shippingAddress.addressLines[0]",
            "description": "shippingAddress.addressLines[0] is longer than 200 characters.",
            "reason": "TOO_LONG",
        }
    ]
    assert len(response.content) < 2000
    assert _orders_of(edge, token) == []


def test_a_list_past_its_bound_is_refused(edge: httpx.Client, mesh: RunningMesh) -> None:
    ids = {"ids": [f"p{i}" for i in range(101)]}
    response = edge.get("/v1/products:batchGet", params=ids)
    assert [(v["field"], v["reason"]) for v in _bad_request(response)] == [
        ("ids", "TOO_MANY_ITEMS")
    ]


def test_an_order_total_past_the_largest_amount_is_out_of_range(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    price = {"currencyCode": "EUR", "units": "90000000000000000"}  # 9e18 cents: just fits
    yacht = {"name": "Yacht", "category": "dear", "weightGrams": 1000, "price": price}
    [dear] = _products(edge, mesh, yacht)
    _, token = customer(edge)
    response = _order(edge, token, [(dear, 2)])
    body = assert_json_error(response, 400, grpc.StatusCode.OUT_OF_RANGE.value[0])
    assert _reason(body) == "AMOUNT_OUT_OF_RANGE"
    leaks_nothing(response.text)
    assert _orders_of(edge, token) == []


def test_a_price_past_the_largest_amount_is_a_bad_request(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    admin = {"authorization": f"Bearer {mesh.token('admin', 'catalog:write')}"}
    price = {"currencyCode": "EUR", "units": "9223372036854775807"}
    product = {"name": "Too dear", "category": "dear", "weightGrams": 1000, "price": price}
    response = edge.post("/v1/products", json={"product": product}, headers=admin)
    assert [v["field"] for v in _bad_request(response)] == ["product.price"]


def test_an_order_heavier_than_one_parcel_is_out_of_range(
    edge: httpx.Client, mesh: RunningMesh
) -> None:
    """Shipping sends an order as one parcel of at most 31,500 g: refused at PlaceOrder,
    not after the payment."""
    anvil = {"name": "Anvil", "category": "heavy", "weightGrams": 31_500,
             "price": {"currencyCode": "EUR", "units": "1"}}  # fmt: skip
    ids = _products(edge, mesh, anvil, anvil, anvil)
    _, token = customer(edge)
    response = _order(edge, token, [(product, 1000) for product in ids])  # 94,500 kg
    body = assert_json_error(response, 400, grpc.StatusCode.OUT_OF_RANGE.value[0])
    assert _reason(body) == "ORDER_TOO_HEAVY"
    assert _orders_of(edge, token) == []


# -- fail closed --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/orders", "/v1/products", "/v1/users/me"])
def test_a_token_without_a_subject_is_refused_at_the_edge(
    edge: httpx.Client, mesh: RunningMesh, path: str
) -> None:
    nobody = mesh.token("", "orders:read", "catalog:read")
    response = edge.get(path, headers={"authorization": f"Bearer {nobody}"})
    assert_json_error(response, 403, grpc.StatusCode.PERMISSION_DENIED.value[0])
