"""Search as a user meets it: through the edge, in a real mesh, fed by the catalog's
events over NATS, and rebuilt from them by `meshctl events replay`.

* A product created through the edge is found by a paraphrase that shares no word with
  it (semantic ranking with the packaged model), over REST and native gRPC, without a
  token; its name's words find it too, ranked first.
* A change is found as changed; a deleted product disappears.
* `meshctl events replay search --from-start` rebuilds the read model from the events
  `SHOP_ENTITIES` keeps: every search while it runs answers as before, and once its
  consumer is gone the new model gives the same results; `meshctl status` shows
  search's lag.
* A query without a word is a 400 with the field named, never an exception's text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from nats.js.errors import NotFoundError

from mesh.runtime.events import ENTITIES_STREAM, rebuild_consumer
from tests.support.mesh import (
    ROOT,
    RunningMesh,
    assert_json_error,
    bearer,
    grpcurl,
    leaks_nothing,
    mesh_up,
)
from tests.support.search import CATALOG, create, search, top
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    directory = tmp_path_factory.mktemp("search")
    with mesh_up(RunningMesh(directory / "run", ROOT / "mesh.yaml")) as running:
        yield running


@pytest.fixture(scope="module")
def edge(mesh: RunningMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh.edge_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def admin(mesh: RunningMesh) -> dict[str, str]:
    return bearer(mesh.token("search-admin", "catalog:write"))


@pytest.fixture(scope="module")
def products(edge: httpx.Client, admin: dict[str, str]) -> dict[str, str]:
    """The catalog above, created through the edge: key -> product id."""
    return {key: create(edge, admin, fields) for key, (fields, _) in CATALOG.items()}


def test_a_new_product_is_found_by_a_paraphrase(
    edge: httpx.Client, products: dict[str, str]
) -> None:
    for key, (_, paraphrase) in CATALOG.items():
        wanted = products[key]
        wait_until(
            lambda q=paraphrase, w=wanted: top(edge, q) == w or None,  # type: ignore[misc]
            f"{paraphrase!r} to find {key}",
            within=10,
        )
    body = search(edge, CATALOG["kettle"][1])
    assert body["ranking"] == "RANKING_HYBRID"
    first = body["results"][0]
    assert not first.get("keywordMatch", False)
    assert first["semanticSimilarity"] >= 0.3
    assert first["price"] == {"currencyCode": "EUR", "units": "30"}


def test_the_words_of_a_name_find_it_first(edge: httpx.Client, products: dict[str, str]) -> None:
    body = search(edge, "hiking boots")
    assert body["results"][0]["productId"] == products["boots"]
    assert body["results"][0]["keywordMatch"] is True
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=0.02)
    assert [
        r["productId"] for r in search(edge, "boots", category="office").get("results", [])
    ] == []


def test_native_grpc_through_the_edge_finds_the_same(
    mesh: RunningMesh, products: dict[str, str]
) -> None:
    address = mesh.edge_url.removeprefix("http://")
    called = grpcurl(
        "-plaintext", "-d", json.dumps({"q": CATALOG["lamp"][1]}), address,
        "shop.search.v1.SearchService/SearchProducts",
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["results"][0]["productId"] == products["lamp"]


def test_a_query_without_a_word_is_a_client_error(edge: httpx.Client) -> None:
    response = edge.get("/v1/products:search", params={"q": "?!"})
    body = assert_json_error(response, 400, 3)
    assert "q" in json.dumps(body)
    leaks_nothing(response.text)


def test_a_change_is_found_as_changed_and_a_deletion_disappears(
    edge: httpx.Client, admin: dict[str, str]
) -> None:
    chess = {"name": "Wooden chess set", "category": "games",
             "description": "Hand-carved pieces, folding board."}  # fmt: skip
    product_id = create(edge, admin, chess)
    wait_until(lambda: top(edge, "chess") == product_id or None, "the chess set", within=10)
    renamed = edge.patch(
        f"/v1/products/{product_id}?updateMask=name",
        json={"id": product_id, "name": "Backgammon set"},
        headers=admin,
    )
    assert renamed.status_code == 200, renamed.text
    wait_until(lambda: top(edge, "backgammon") == product_id or None, "the rename", within=10)
    deleted = edge.delete(f"/v1/products/{product_id}", headers=admin)
    assert deleted.status_code == 200, deleted.text
    wait_until(
        lambda: product_id not in json.dumps(search(edge, "backgammon")) or None,
        "the deleted product to disappear",
        within=10,
    )


async def _rebuild_consumer_gone(mesh: RunningMesh) -> bool:
    async with mesh.jetstream() as js:
        try:
            await js.consumer_info(ENTITIES_STREAM, rebuild_consumer("search"))
        except NotFoundError:
            return True
    return False


async def test_a_rebuild_by_replay_answers_throughout_and_gives_the_same_results(
    mesh: RunningMesh, edge: httpx.Client, products: dict[str, str]
) -> None:
    queries = [paraphrase for _, paraphrase in CATALOG.values()] + ["kettle", "desk lamp"]
    before = {q: [r["productId"] for r in search(edge, q)["results"]] for q in queries}
    asked = mesh.meshctl("events", "replay", "search", "--from-start", "--no-wait")
    assert "rebuilding search's read model from" in asked.stdout, asked.stdout + asked.stderr
    during = 0
    while not await _rebuild_consumer_gone(mesh):
        query = queries[during % len(queries)]
        assert [r["productId"] for r in search(edge, query)["results"]] == before[query]
        during += 1
        assert during < 2000, "the rebuild never ended"
    assert during > 0, "no search was made while the rebuild ran"
    after = {q: [r["productId"] for r in search(edge, q)["results"]] for q in queries}
    assert after == before
    replayed = mesh.meshctl("events", "replay", "search", "--from-start")
    assert "rebuilt in" in replayed.stdout, replayed.stdout + replayed.stderr
    assert {q: [r["productId"] for r in search(edge, q)["results"]] for q in queries} == before
    status = mesh.meshctl("status").stdout
    assert "events waiting: search-0: search 0" in status, status


def test_only_a_read_model_can_be_replayed(mesh: RunningMesh) -> None:
    refused = mesh.meshctl("events", "replay", "orders", "--from-start", check=False)
    assert refused.returncode != 0
    assert "orders keeps no read model" in refused.stderr, refused.stderr
