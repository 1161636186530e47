"""The catalog's API versions 1 and 2 side by side, through the real edge: one service,
one database, the same products by `/v1/products/{id}` and by `products/{product}`,
over REST and over native gRPC (grpc stubs and the real grpcurl), with mesh.yaml's
policies (public reads, `catalog:write` for changes) holding for both."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from google.type import money_pb2

from shop.catalog.v1 import catalog_service_pb2 as v1
from shop.catalog.v1 import catalog_service_pb2_grpc as v1_grpc
from shop.catalog.v2 import catalog_service_pb2 as v2
from shop.catalog.v2 import catalog_service_pb2_grpc as v2_grpc
from tests.support.component import error_reason, field_violations
from tests.support.mesh import (
    RunningMesh,
    assert_json_error,
    bearer,
    grpcurl,
    reflecting_grpcurl,
)

pytestmark = pytest.mark.integration

TEA = {"category": "food", "weightGrams": 100, "price": {"currencyCode": "EUR", "units": "3"}}


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mesh: RunningMesh) -> dict[str, str]:
    return bearer(mesh.token("admin", "catalog:write"))


@pytest.fixture
async def channel(mesh: RunningMesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.edge_url.removeprefix("http://")) as channel:
        yield channel


def _id() -> str:
    return f"tea-{uuid.uuid4().hex[:12]}"


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_product_created_in_v1_is_read_in_v2_and_the_reverse(
    edge: httpx.Client, admin: dict[str, str]
) -> None:
    old = _ok(edge.post("/v1/products", json={"product": {"name": "Tea", **TEA}}, headers=admin))
    old_id = old["product"]["id"]
    seen = _ok(edge.get(f"/v2/products/{old_id}"))["product"]
    assert (seen["name"], seen["displayName"]) == (f"products/{old_id}", "Tea")
    assert seen["price"] == old["product"]["price"]

    chosen = _id()
    new = _ok(
        edge.post(
            "/v2/products",
            params={"productId": chosen, "initialStock": 4},
            json={"displayName": "Mug", **TEA},
            headers=admin,
        )
    )["product"]
    assert new["name"] == f"products/{chosen}"
    seen_in_v1 = _ok(edge.get(f"/v1/products/{chosen}"))["product"]
    assert (seen_in_v1["id"], seen_in_v1["name"]) == (chosen, "Mug")
    assert _ok(edge.get(f"/v1/products/{chosen}/stock"))["stock"]["onHand"] == 4
    batch = _ok(edge.get("/v2/products:batchGet", params={"names": [new["name"], seen["name"]]}))
    assert [p["name"] for p in batch["products"]] == [new["name"], seen["name"]]


def test_a_v2_update_changes_the_masked_fields_only(
    edge: httpx.Client, admin: dict[str, str]
) -> None:
    chosen = _id()
    tea = {"displayName": "Tea", "description": "Green", **TEA}
    _ok(edge.post("/v2/products", params={"productId": chosen}, json=tea, headers=admin))
    change = {"displayName": "Black tea", "description": "Strong", "category": "drinks"}
    updated = _ok(
        edge.patch(
            f"/v2/products/{chosen}",
            params={"updateMask": "displayName,updateTime"},
            json=change,
            headers=admin,
        )
    )["product"]
    assert (updated["displayName"], updated["description"], updated["category"]) == (
        "Black tea",
        "Green",
        "food",
    )
    assert _ok(edge.get(f"/v1/products/{chosen}"))["product"]["name"] == "Black tea"


def test_a_v2_update_refuses_a_missing_mask_and_unknown_paths(
    edge: httpx.Client, admin: dict[str, str]
) -> None:
    chosen = _id()
    tea = {"displayName": "Tea", **TEA}
    _ok(edge.post("/v2/products", params={"productId": chosen}, json=tea, headers=admin))
    path = f"/v2/products/{chosen}"
    unmasked = assert_json_error(edge.patch(path, json={"description": "x"}, headers=admin), 400, 3)
    assert "updateMask" in _fields(unmasked)
    unknown = edge.patch(path, params={"updateMask": "colour"}, json={}, headers=admin)
    body = assert_json_error(unknown, 400, 3)
    assert _fields(body) == ["updateMask"]
    assert "'colour'" in body["message"]


def _fields(body: dict[str, Any]) -> list[str]:
    return [
        violation["field"]
        for detail in body["details"]
        if detail["@type"].endswith("google.rpc.BadRequest")
        for violation in detail["fieldViolations"]
    ]


def test_mesh_yaml_s_policies_hold_for_v2_as_for_v1(
    edge: httpx.Client, mesh: RunningMesh, admin: dict[str, str]
) -> None:
    """`catalog.GetProduct` is public and `catalog.CreateProduct` needs `catalog:write` in
    every version: one name, both versions."""
    tea = {"displayName": "Tea", **TEA}
    assert_json_error(edge.post("/v2/products", json=tea), 401, 16)
    no_scope = bearer(mesh.token("u1", "orders:write"))
    assert_json_error(edge.post("/v2/products", json=tea, headers=no_scope), 403, 7)
    created = _ok(edge.post("/v2/products", json=tea, headers=admin))["product"]
    assert _ok(edge.get(f"/v2/{created['name']}"))["product"] == created
    assert_json_error(edge.get(f"/v2/products/{_id()}"), 404, 5)
    # A filter as clients write it in a query string, its spaces as `+`.
    listed = _ok(edge.get("/v2/products", params={"filter": 'category = "food"'}))
    assert listed["products"]
    assert {product["category"] for product in listed["products"]} == {"food"}


def test_bad_names_and_filters_are_invalid_argument(edge: httpx.Client) -> None:
    filtered = assert_json_error(edge.get("/v2/products", params={"filter": "name = x"}), 400, 3)
    assert _fields(filtered) == ["filter"]
    batch = edge.get("/v2/products:batchGet", params={"names": ["products/a", "shelves/b"]})
    assert _fields(assert_json_error(batch, 400, 3)) == ["names[1]"]


def test_openapi_lists_both_versions(edge: httpx.Client) -> None:
    document = _ok(edge.get("/openapi.json"))
    paths = document["paths"]
    assert {"post", "get"} <= paths["/v1/products"].keys()
    assert {"post", "get"} <= paths["/v2/products"].keys()
    assert {"get", "patch", "delete"} <= paths["/v2/products/{productsId}"].keys()
    assert paths["/v2/products/{productsId}"]["get"]["security"] == []
    update = paths["/v2/products/{productsId}"]["patch"]
    assert update["x-required-scopes"] == ["catalog:write"]
    mask = next(p for p in update["parameters"] if p["name"] == "updateMask")
    assert (mask["in"], mask["required"]) == ("query", True)
    tags = {tag["name"] for tag in document["tags"]}
    assert {"CatalogService", "CatalogServiceV2"} <= tags


async def test_both_versions_over_native_grpc_through_the_edge(
    channel: grpc.aio.Channel, mesh: RunningMesh
) -> None:
    token = (("authorization", f"Bearer {mesh.token('admin', 'catalog:write')}"),)
    catalog_v1 = v1_grpc.CatalogServiceStub(channel)
    catalog_v2 = v2_grpc.CatalogServiceStub(channel)
    price = money_pb2.Money(currency_code="EUR", units=5)
    product = v2.Product(display_name="Cup", category="kitchen", price=price, weight_grams=90)
    chosen = _id()
    created = await catalog_v2.CreateProduct(
        v2.CreateProductRequest(product=product, product_id=chosen), metadata=token, timeout=10
    )
    assert created.product.name == f"products/{chosen}"
    seen = await catalog_v1.GetProduct(v1.GetProductRequest(id=chosen), timeout=10)
    assert (seen.product.name, seen.product.weight_grams) == ("Cup", 90)

    change = v2.Product(name=f"products/{chosen}", weight_grams=120, category="ignored")
    mask = field_mask_pb2.FieldMask(paths=["weight_grams"])
    updated = await catalog_v2.UpdateProduct(
        v2.UpdateProductRequest(product=change, update_mask=mask), metadata=token, timeout=10
    )
    assert (updated.product.weight_grams, updated.product.category) == (120, "kitchen")

    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await catalog_v2.CreateProduct(
            v2.CreateProductRequest(product=product, product_id=chosen), metadata=token, timeout=10
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(taken.value) == "PRODUCT_ALREADY_EXISTS"

    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await catalog_v2.GetProduct(v2.GetProductRequest(name=chosen), timeout=10)
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(malformed.value) == ["name"]

    await catalog_v2.DeleteProduct(
        v2.DeleteProductRequest(name=f"products/{chosen}"), metadata=token, timeout=10
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await catalog_v1.GetProduct(v1.GetProductRequest(id=chosen), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_anonymous_grpc_create_is_refused_in_both_versions(
    channel: grpc.aio.Channel,
) -> None:
    price = money_pb2.Money(currency_code="EUR", units=5)
    calls = [
        v1_grpc.CatalogServiceStub(channel).CreateProduct(
            v1.CreateProductRequest(product=v1.Product(name="Cup", category="a", price=price))
        ),
        v2_grpc.CatalogServiceStub(channel).CreateProduct(
            v2.CreateProductRequest(
                product=v2.Product(display_name="Cup", category="a", price=price)
            )
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpcurl_lists_checks_and_calls_both_versions(
    edge: httpx.Client, admin: dict[str, str], mesh: RunningMesh
) -> None:
    address = mesh.edge_url.removeprefix("http://")
    listing = grpcurl("-plaintext", address, "list")
    assert {"shop.catalog.v1.CatalogService", "shop.catalog.v2.CatalogService"} <= set(
        listing.stdout.split()
    ), listing.stderr
    for version in ("v1", "v2"):
        asked = json.dumps({"service": f"shop.catalog.{version}.CatalogService"})
        health = reflecting_grpcurl("-d", asked, address, "grpc.health.v1.Health/Check")
        assert health.returncode == 0, health.stderr
        assert json.loads(health.stdout) == {"status": "SERVING"}

    old_id = _ok(
        edge.post("/v1/products", json={"product": {"name": "Tea", **TEA}}, headers=admin)
    )["product"]["id"]
    got = grpcurl(
        "-plaintext", "-d", json.dumps({"name": f"products/{old_id}"}),
        address, "shop.catalog.v2.CatalogService/GetProduct",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["product"]["displayName"] == "Tea"
    anonymous = grpcurl(
        "-plaintext", "-d", json.dumps({"product": {"display_name": "Tea", **TEA}}),
        address, "shop.catalog.v2.CatalogService/CreateProduct",
    )  # fmt: skip
    assert "Code: Unauthenticated" in anonymous.stderr
