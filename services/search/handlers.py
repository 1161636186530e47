"""Search's use cases: keep the read model up to date with a change, and answer a query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mesh.runtime.pagination import page_size
from services.search.domain import (
    MAX_CANDIDATES,
    MIN_SIMILARITY,
    IndexedProduct,
    Ranked,
    checked_query,
    fuse,
    query_terms,
    supersedes,
)
from services.search.embeddings import Embedder, Vectors
from services.search.ports import SearchStore, SearchTransaction


class SemanticIndex:
    """The embedder, and the serving generation's embeddings held in memory.

    The copy is loaded again when the generation, or its count of changes, differs from
    the one it was loaded at: one small read per query tells, and a query never ranks
    on vectors older than the read model it reads. Embedding runs off the event loop.
    """

    def __init__(self, embedder: Embedder | None) -> None:
        self.embedder = embedder
        self._loaded: tuple[int, int] | None = None
        self._ids: list[str] = []
        self._categories: npt.NDArray[np.str_] = np.array([], dtype=np.str_)
        self._vectors: Vectors = np.zeros((0, 0), dtype=np.float32)

    async def embed(self, text: str) -> Vectors | None:
        vectors = await self.embed_all([text])
        return None if vectors is None else vectors[0]

    async def embed_all(self, texts: Sequence[str]) -> Vectors | None:
        """One embedding per text, or None without a model."""
        if self.embedder is None:
            return None
        return await asyncio.to_thread(self.embedder.embed, texts)

    async def nearest(
        self, tx: SearchTransaction, generation: int, query: Vectors, category: str
    ) -> list[tuple[str, float]]:
        """The products most similar to `query`, best first, above `MIN_SIMILARITY`."""
        version = (generation, await tx.change_count(generation))
        if version != self._loaded:
            self._ids, categories, self._vectors = await tx.embeddings(generation)
            self._categories = np.array(categories, dtype=np.str_)
            self._loaded = version
        if not self._ids:
            return []
        similarity = self._vectors @ query
        near = similarity >= MIN_SIMILARITY
        if category:
            near &= self._categories == category
        candidates = np.flatnonzero(near)
        best = candidates[np.argsort(-similarity[candidates], kind="stable")[:MAX_CANDIDATES]]
        return [(self._ids[i], float(similarity[i])) for i in best]


#: The name of the empty generation search serves from its first start until its first
#: rebuild has caught up (`services.search.rebuild`).
EMPTY = "empty"


async def open_read_model(store: SearchStore) -> None:
    """Make sure a generation serves: an empty one at the first start."""
    async with store.transaction() as tx:
        if await tx.serving_generation() is None:
            await tx.promote(await tx.begin_generation(EMPTY))


async def apply_change(
    store: SearchStore, product: IndexedProduct, embedding: Sequence[float] | None
) -> None:
    """Keep `product` in every live generation where it is newer than what is kept."""
    async with store.transaction() as tx:
        for generation in await tx.live_generations():
            await _keep(tx, generation, product, embedding)


async def apply_to(
    store: SearchStore,
    generation: int,
    changes: Sequence[tuple[IndexedProduct, Sequence[float] | None]],
) -> None:
    """Keep each product in `generation` (a rebuild's) where it is newer than what is
    kept, in one transaction."""
    async with store.transaction() as tx:
        for product, embedding in changes:
            await _keep(tx, generation, product, embedding)


async def _keep(
    tx: SearchTransaction,
    generation: int,
    product: IndexedProduct,
    embedding: Sequence[float] | None,
) -> None:
    if supersedes(product, await tx.get(generation, product.product_id)):
        await tx.put(generation, product, embedding)


@dataclass(frozen=True)
class SearchProducts:
    q: str
    category: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class Hit:
    product: IndexedProduct
    ranked: Ranked


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    next_page_token: str
    semantic: bool


async def search_products(
    store: SearchStore, index: SemanticIndex, query: SearchProducts
) -> SearchPage:
    """One page of the products that match the query, best first (see `domain.fuse`)."""
    text = checked_query(query.q)
    limit = page_size(query.page_size)
    filters = {"q": text, "category": query.category}
    after = store.page_tokens.decode(query.page_token, filters)
    offset = int(after["offset"]) if after else 0
    vector = await index.embed(text)
    async with store.snapshot() as tx:
        generation = await tx.serving_generation()
        if generation is None:
            return SearchPage([], "", vector is not None)
        terms = query_terms(text)
        keyword = (
            await tx.keyword_ranking(generation, terms, query.category, MAX_CANDIDATES)
            if terms
            else []
        )
        semantic = (
            await index.nearest(tx, generation, vector, query.category)
            if vector is not None
            else []
        )
        ranked = fuse(keyword, semantic)
        page = ranked[offset : offset + limit]
        found = await tx.get_many(generation, [r.product_id for r in page])
    products = {p.product_id: p for p in found if not p.deleted}
    hits = [Hit(products[r.product_id], r) for r in page if r.product_id in products]
    more = offset + limit < len(ranked)
    token = store.page_tokens.encode({"offset": offset + limit}, filters) if more else ""
    return SearchPage(hits, token, vector is not None)
