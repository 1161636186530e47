"""What search's handlers need from the outside world, as interfaces.

The SQL adapter (`adapters.py`) and the unit tests' in-memory fakes both implement them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from mesh.runtime.pagination import PageTokens
from services.search.domain import IndexedProduct
from services.search.embeddings import Vectors


class SearchTransaction(Protocol):
    """The read model, as seen inside one transaction."""

    async def live_generations(self) -> list[int]:
        """The generations events are applied to: the one serving and one being built."""
        ...

    async def serving_generation(self) -> int | None: ...
    async def serving_rebuild(self) -> str | None:
        """The name of the rebuild that made the serving generation."""
        ...

    async def get(self, generation: int, product_id: str) -> IndexedProduct | None: ...
    async def put(
        self, generation: int, product: IndexedProduct, embedding: Sequence[float] | None
    ) -> None:
        """Keep `product` (and its embedding, if any) in place of what `generation` has."""
        ...

    async def get_many(
        self, generation: int, product_ids: Sequence[str]
    ) -> list[IndexedProduct]: ...

    async def keyword_ranking(
        self, generation: int, terms: Sequence[str], category: str, limit: int
    ) -> list[str]:
        """The ids of the products with any of `terms`, best BM25 match first."""
        ...

    async def change_count(self, generation: int) -> int:
        """How many changes `generation` has taken: what tells a cached copy it is stale."""
        ...

    async def embeddings(self, generation: int) -> tuple[list[str], list[str], Vectors]:
        """Every product of `generation` with an embedding: ids, categories, vectors."""
        ...

    async def begin_generation(self, rebuild: str) -> int:
        """The generation the rebuild `rebuild` builds: made by the first replica to ask,
        any other generation being built given up."""
        ...

    async def promote(self, generation: int) -> bool:
        """Serve `generation` from now on and drop the one it replaces; False if it is not
        being built (promoted already, or given up)."""
        ...


class SearchStore(Protocol):
    """Search's database."""

    def transaction(self) -> AbstractAsyncContextManager[SearchTransaction]: ...
    def snapshot(self) -> AbstractAsyncContextManager[SearchTransaction]: ...

    @property
    def page_tokens(self) -> PageTokens: ...
