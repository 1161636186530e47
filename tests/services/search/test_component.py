"""Search over real gRPC, on a real database (SQLite, Postgres), with the real model,
fed the events the real catalog code makes, through the real consumer's batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from mesh.runtime.consumer import EventConsumer, Outcome
from mesh.runtime.money import Money
from mesh.runtime.storage import Database
from services.catalog import messages
from services.catalog.domain import Product
from services.search import projection
from services.search.adapters import MIGRATIONS, SqlSearchStore
from services.search.bootstrap import registration
from services.search.embeddings import Embedder, load_embedder
from services.search.handlers import SemanticIndex, apply_to, open_read_model
from shop.events.v1 import events_pb2
from shop.search.v1 import search_service_pb2 as pb
from shop.search.v1 import search_service_pb2_grpc as pb_grpc
from tests.support.component import Databases, field_violations, serving

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _product(product_id: str, name: str, description: str, cents: int, category: str) -> Product:
    return Product(product_id, name, description, Money("EUR", cents), category, 300, NOW, NOW)


#: A small catalog whose texts share no word with the paraphrases searched for below.
PRODUCTS = [
    _product("mug", "Stoneware mug", "Hand-thrown, glazed, 350 ml.", 1800, "kitchen"),
    _product("phones", "Wireless noise-cancelling headphones",
             "Bluetooth 5.3, 30 hours of battery.", 19900, "audio"),
    _product("jumper", "Merino wool jumper", "Knitted, warm, for winter evenings.", 8900,
             "clothing"),
    _product("knife", "Chef's knife", "Stainless steel blade, 20 cm.", 6500, "kitchen"),
]  # fmt: skip


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    choice = load_embedder("")
    assert choice.embedder is not None, choice.note
    return choice.embedder


class Search:
    """Search's servicer on a real database, and its consumer's `apply`."""

    def __init__(self, database: Database, stub: Any, consumer: EventConsumer, store: Any) -> None:
        self.database = database
        self.stub = stub
        self.consumer = consumer
        self.store = store

    async def apply(self, *envelopes: events_pb2.EventEnvelope) -> list[Outcome]:
        return [outcome for outcome, _ in await self.consumer.apply(envelopes)]

    async def keyword_matches(self, q: str) -> list[str]:
        """The products whose words match `q` (what meaning finds aside)."""
        response = await self.stub.SearchProducts(pb.SearchProductsRequest(q=q))
        return [result.product_id for result in response.results if result.keyword_match]

    async def ids(self, q: str, **fields: Any) -> list[str]:
        response = await self.stub.SearchProducts(pb.SearchProductsRequest(q=q, **fields))
        return [result.product_id for result in response.results]


async def _search(
    databases: Databases, directory: Path, embedder: Embedder | None
) -> AsyncIterator[Search]:
    async with databases.open(directory, "search", MIGRATIONS) as database:
        store = SqlSearchStore(database)
        await open_read_model(store)
        index = SemanticIndex(embedder)
        handlers = projection.handlers(store.within, index)
        consumer = EventConsumer(database, None, name="search", handlers=handlers)  # type: ignore[arg-type]
        async with serving(registration(store, index)) as channel:
            yield Search(database, pb_grpc.SearchServiceStub(channel), consumer, store)


@pytest.fixture
async def search(databases: Databases, tmp_path: Path, embedder: Embedder) -> AsyncIterator[Search]:
    async for found in _search(databases, tmp_path, embedder):
        yield found


@pytest.fixture
async def keyword_search(databases: Databases, tmp_path: Path) -> AsyncIterator[Search]:
    async for found in _search(databases, tmp_path, None):
        yield found


def created(products: Sequence[Product] = PRODUCTS) -> list[events_pb2.EventEnvelope]:
    return [messages.product_created(product) for product in products]


async def test_a_paraphrase_finds_a_product_it_shares_no_word_with(search: Search) -> None:
    await search.apply(*created())
    response = await search.stub.SearchProducts(pb.SearchProductsRequest(q="a cup for coffee"))
    assert response.ranking == pb.RANKING_HYBRID
    assert response.results[0].product_id == "mug"
    assert not response.results[0].keyword_match
    assert response.results[0].semantic_similarity >= 0.3
    assert (await search.ids("something warm to wear when it is cold"))[0] == "jumper"
    assert (await search.ids("earphones"))[0] == "phones"


async def test_keywords_and_meaning_rank_together(search: Search) -> None:
    await search.apply(*created())
    response = await search.stub.SearchProducts(pb.SearchProductsRequest(q="kitchen"))
    top = response.results[:2]
    assert {r.product_id for r in top} == {"mug", "knife"}, response
    assert all(r.keyword_match for r in top)
    assert top[0].score == pytest.approx(1.0, abs=0.02)
    assert set(await search.ids("kitchen", category="kitchen")) == {"mug", "knife"}
    assert "phones" not in await search.ids("blade", category="kitchen")


async def test_a_change_is_searched_as_changed_and_a_removal_disappears(search: Search) -> None:
    await search.apply(*created())
    mug = replace(PRODUCTS[0], name="Teapot", description="Cast iron, 1 litre.", revision=2)
    await search.apply(messages.product_updated(mug, ["name", "description"]))
    assert not await search.keyword_matches("stoneware")
    assert (await search.ids("teapot"))[0] == "mug"
    await search.apply(messages.product_deleted(mug))
    assert "mug" not in await search.ids("teapot")
    assert "mug" not in await search.ids("a pot to brew tea in")


async def test_redelivered_and_late_events_change_nothing(search: Search) -> None:
    """The consumer's record drops a redelivery; revisions drop an older event that
    arrives after a newer one (two replicas, a rebuild beside the live stream)."""
    first = created()
    assert await search.apply(*first) == [Outcome.APPLIED] * len(PRODUCTS)
    assert await search.apply(*first) == [Outcome.DUPLICATE] * len(PRODUCTS)
    knife = replace(PRODUCTS[3], name="Bread knife", revision=2)
    removed = messages.product_deleted(replace(knife, revision=2))
    await search.apply(messages.product_updated(knife, ["name"]), removed)
    late = [messages.product_created(PRODUCTS[3]), messages.product_updated(knife, ["name"])]
    assert await search.apply(*late) == [Outcome.APPLIED, Outcome.APPLIED]
    assert "knife" not in await search.ids("chef's knife")
    assert "knife" not in await search.ids("bread knife")
    async with search.store.snapshot() as tx:
        kept = await tx.get(await tx.serving_generation(), "knife")
    assert kept is not None
    assert (kept.deleted, kept.revision) == (True, 3)


async def test_without_the_model_search_ranks_by_keywords_and_says_so(
    keyword_search: Search,
) -> None:
    await keyword_search.apply(*created())
    response = await keyword_search.stub.SearchProducts(pb.SearchProductsRequest(q="wireless"))
    assert response.ranking == pb.RANKING_KEYWORD
    assert [r.product_id for r in response.results] == ["phones"]
    assert response.results[0].keyword_match
    assert await keyword_search.ids("a cup for coffee") == []
    assert await keyword_search.ids("mugs") == ["mug"]  # stemmed


async def test_pages_follow_each_other_and_a_token_keeps_its_query(search: Search) -> None:
    await search.apply(*created())
    first = await search.stub.SearchProducts(pb.SearchProductsRequest(q="kitchen", page_size=1))
    assert len(first.results) == 1
    assert first.next_page_token
    second = await search.stub.SearchProducts(
        pb.SearchProductsRequest(q="kitchen", page_size=1, page_token=first.next_page_token)
    )
    assert second.results[0].product_id != first.results[0].product_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await search.stub.SearchProducts(
            pb.SearchProductsRequest(q="audio", page_token=first.next_page_token)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["page_token"]


async def test_a_query_without_a_word_is_refused(search: Search) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await search.stub.SearchProducts(pb.SearchProductsRequest(q=" ?! "))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["q"]


async def test_a_rebuild_serves_only_once_promoted_and_drops_the_old_model(
    search: Search, embedder: Embedder
) -> None:
    await search.apply(*created(PRODUCTS[:2]))
    async with search.store.transaction() as tx:
        generation = await tx.begin_generation("rebuild-1")
    changes = [projection.indexed(e) for e in created(PRODUCTS[2:])]
    vectors = embedder.embed([c.text for c in changes]).tolist()
    await apply_to(search.store, generation, list(zip(changes, vectors, strict=True)))
    assert "jumper" not in await search.ids("merino")  # the old model still serves
    await search.apply(messages.product_created(replace(PRODUCTS[0], id="cup", name="Cup")))
    async with search.store.transaction() as tx:
        assert await tx.promote(generation)
        assert not await tx.promote(generation)
        assert await tx.live_generations() == [generation]
    assert (await search.ids("merino"))[0] == "jumper"
    assert "mug" not in await search.keyword_matches("stoneware")  # only in the old model
    assert (await search.ids("cup"))[0] == "cup"  # applied to both while building
