"""The edge's response cache end to end, with the real Envoy and catalog: a repeated public
read answered by the edge while catalog's own request counter stays put; `If-None-Match`
with the answer's ETag answered 304 without a body or a call; answers to a token, an API
key or a pinned version neither served from the cache nor kept in it; a change visible
within the max-age; errors and reads it does not name passing it by."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mesh.control.envoy import stats
from tests.support.mesh import RunningMesh, bearer, mesh_up
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

#: How long the edge keeps a product's answer here: short, so a change shows soon.
MAX_AGE = 2
MESH_YAML = f"""\
services:
  identity: {{}}
  inventory: {{}}
  catalog:
    calls: {{inventory: {{methods: [SetStock]}}}}
edge:
  expose: [identity, inventory, catalog]
  auth:
    public: [identity.GetJwks, inventory.GetStock, catalog.GetProduct, catalog.ListProducts]
    scopes: {{catalog.CreateProduct: catalog:write, catalog.UpdateProduct: catalog:write}}
  cache: {{catalog.GetProduct: {MAX_AGE}s, catalog.ListProducts: {MAX_AGE}s}}
"""
GET_PRODUCT = "/shop.catalog.v1.CatalogService/GetProduct"


@pytest.fixture(scope="module")
def cached_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("edge-cache")
    config = directory / "mesh.yaml"
    config.write_text(MESH_YAML)
    with mesh_up(RunningMesh(directory / "run", config)) as running:
        yield running


@pytest.fixture(scope="module")
def edge(cached_mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cached_mesh.edge_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def admin(cached_mesh: RunningMesh) -> dict[str, str]:
    return bearer(cached_mesh.token("admin", "catalog:write"))


def new_product(edge: httpx.Client, admin: dict[str, str]) -> str:
    """A product no one has read yet: its first read is the cache's miss."""
    product = {"name": f"Tea {uuid.uuid4().hex[:6]}", "category": "food", "weightGrams": 100,
               "price": {"currencyCode": "EUR", "units": "3"}}  # fmt: skip
    created = edge.post("/v1/products", json={"product": product}, headers=admin)
    assert created.status_code == 200, created.text
    product_id: str = created.json()["product"]["id"]
    return product_id


def reads_served(mesh: RunningMesh) -> float:
    """How many GetProduct calls catalog's app answered: its own request counter."""
    port = mesh.instance("catalog-0")["metrics_port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "shop_rpc_requests_total" and sample.labels["method"] == GET_PRODUCT
    )


def read(edge: httpx.Client, product_id: str, **headers: str) -> httpx.Response:
    response = edge.get(f"/v1/products/{product_id}", headers=headers)
    assert response.status_code in (200, 304), response.text
    return response


def test_a_repeated_read_is_answered_by_the_edge_and_never_reaches_catalog(
    cached_mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str]
) -> None:
    product_id = new_product(edge, admin)
    before = reads_served(cached_mesh)
    first = read(edge, product_id)
    assert reads_served(cached_mesh) == before + 1
    assert first.headers["cache-control"] == f"public, max-age={MAX_AGE}"
    assert first.headers["etag"].startswith('W/"')
    assert "age" not in first.headers  # fetched for this request
    hits = stats.cache_events(cached_mesh.state()["edge"]["admin_socket"]).get("hit", 0)

    again = [read(edge, product_id) for _ in range(5)]
    assert reads_served(cached_mesh) == before + 1
    for answer in again:
        assert answer.json() == first.json()
        assert answer.headers["etag"] == first.headers["etag"]
        assert int(answer.headers["age"]) <= MAX_AGE
    events = stats.cache_events(cached_mesh.state()["edge"]["admin_socket"])
    assert events["hit"] >= hits + 5


def test_if_none_match_with_the_etag_is_answered_304_without_a_body_or_a_call(
    cached_mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str]
) -> None:
    product_id = new_product(edge, admin)
    tag = read(edge, product_id).headers["etag"]
    before = reads_served(cached_mesh)
    unchanged = read(edge, product_id, **{"if-none-match": tag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == tag
    # A strong comparison's form of the tag, and a list of tags, match too.
    assert read(edge, product_id, **{"if-none-match": tag[2:]}).status_code == 304
    assert read(edge, product_id, **{"if-none-match": f'W/"old", {tag}'}).status_code == 304
    other = read(edge, product_id, **{"if-none-match": 'W/"another"'})
    assert other.status_code == 200
    assert other.json()["product"]["id"] == product_id
    assert reads_served(cached_mesh) == before


@pytest.mark.parametrize(
    "credential",
    [pytest.param("token", id="a token"), pytest.param("api key", id="an API key")],
)
def test_an_answer_to_a_credential_is_neither_served_from_nor_kept_in_the_cache(
    cached_mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str], credential: str
) -> None:
    # This mesh takes no API keys: the edge lets a key's call through as an anonymous one,
    # but the cache stands aside for it all the same.
    headers = admin if credential == "token" else {"x-api-key": "a-consumers-key"}
    product_id = new_product(edge, admin)
    before = reads_served(cached_mesh)
    private = [edge.get(f"/v1/products/{product_id}", headers=headers) for _ in range(2)]
    # ...nor kept: the next anonymous read still goes to catalog.
    anonymous = read(edge, product_id)
    assert reads_served(cached_mesh) == before + 3
    for answer in private:
        assert answer.status_code == 200, answer.text
        assert "age" not in answer.headers
        assert "etag" not in answer.headers
        assert "public" not in answer.headers.get("cache-control", "")
    # ...and, once the anonymous answer is kept, not served it either.
    assert "age" in read(edge, product_id).headers
    assert "age" not in edge.get(f"/v1/products/{product_id}", headers=headers).headers
    assert reads_served(cached_mesh) == before + 4
    assert anonymous.json() == private[0].json()


@pytest.mark.parametrize(
    "pin",
    [{"x-shop-version": "v1"}, {"cookie": "theme=dark; shop-version=v1"}],
    ids=["header", "cookie"],
)
def test_a_read_pinned_to_a_version_is_not_cached(
    cached_mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str], pin: dict[str, str]
) -> None:
    product_id = new_product(edge, admin)
    read(edge, product_id)  # kept for everyone else
    before = reads_served(cached_mesh)
    pinned = [edge.get(f"/v1/products/{product_id}", headers=pin) for _ in range(2)]
    assert reads_served(cached_mesh) == before + 2
    assert all("age" not in answer.headers for answer in pinned)


def test_a_change_is_visible_within_the_max_age(
    cached_mesh: RunningMesh, edge: httpx.Client, admin: dict[str, str]
) -> None:
    product_id = new_product(edge, admin)
    old_name = read(edge, product_id).json()["product"]["name"]
    changed = edge.patch(
        f"/v1/products/{product_id}",
        params={"updateMask": "name"},
        json={"name": "Black tea"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    changed_at = time.monotonic()
    # The edge still answers what it kept...
    assert read(edge, product_id).json()["product"]["name"] == old_name

    def new_name_seen() -> dict[str, Any] | None:
        answer = read(edge, product_id).json()["product"]
        return answer if answer["name"] == "Black tea" else None

    # ...until its max-age is over, at most (polled every 100 ms, a second's grace).
    wait_until(new_name_seen, "the changed name at the edge", MAX_AGE + 1, 0.1)
    assert time.monotonic() - changed_at <= MAX_AGE + 1
    listed = edge.get("/v1/products", params={"pageSize": 100})
    assert listed.status_code == 200
    assert listed.headers["cache-control"] == f"public, max-age={MAX_AGE}"


def test_other_reads_and_errors_pass_the_cache_by(
    cached_mesh: RunningMesh, edge: httpx.Client
) -> None:
    # A public read edge.cache does not name: no cache headers, every time.
    stock = [edge.get("/v1/products/no-such-product/stock") for _ in range(2)]
    assert [answer.status_code for answer in stock] == [404, 404]
    assert all("age" not in a.headers and "etag" not in a.headers for a in stock)
    # A miss answered with an error is not kept: catalog answers each one.
    before = reads_served(cached_mesh)
    missing = [edge.get("/v1/products/no-such-product") for _ in range(2)]
    assert [answer.status_code for answer in missing] == [404, 404]
    assert reads_served(cached_mesh) == before + 2
