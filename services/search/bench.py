"""`python -m services.search.bench`: search's indexing throughput and query latency on
this machine, in process, on a SQLite file: the figures of docs/benchmarks.md, "Search".

Indexing: N made-up products go through the live consumer's path, batches of 64 catalog
events applied by `EventConsumer.apply` (embedding included), with the model and
without. Queries: SearchProducts' handler, one at a time, half of them paraphrases and
half keywords, as p50 and p99 of the time each took, with the model and without.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mesh.runtime.consumer import EventConsumer
from mesh.runtime.money import Money
from mesh.runtime.storage import Database
from services.catalog import messages
from services.catalog.domain import Product
from services.search import projection
from services.search.adapters import MIGRATIONS, SqlSearchStore
from services.search.embeddings import Embedder, load_embedder
from services.search.handlers import SearchProducts, SemanticIndex, open_read_model, search_products

_NOUNS = ["mug", "kettle", "lamp", "chair", "boots", "jacket", "knife", "pan", "desk", "tent"]
_ADJECTIVES = ["wooden", "steel", "wireless", "waterproof", "ceramic", "folding", "warm"]
_QUERIES = [
    "a cup for coffee", "light to read by", "shoes for the mountains", "something to sit on",
    "mug", "steel knife", "waterproof jacket", "folding chair",
]  # fmt: skip
BATCH = 64


def _products(count: int) -> list[Product]:
    pick = random.Random(7)
    now = datetime.now(UTC)
    return [
        Product(
            f"p{i}", f"{pick.choice(_ADJECTIVES).title()} {pick.choice(_NOUNS)} {i}",
            f"A {pick.choice(_ADJECTIVES)} {pick.choice(_NOUNS)} for home and travel.",
            Money("EUR", 100 + i), pick.choice(["home", "outdoor", "kitchen"]), 500, now, now,
        )
        for i in range(count)
    ]  # fmt: skip


async def _measure(directory: Path, count: int, embedder: Embedder | None) -> str:
    database = Database.sqlite(directory / "search.db", "search", MIGRATIONS)
    await database.open()
    try:
        store = SqlSearchStore(database)
        await open_read_model(store)
        index = SemanticIndex(embedder)
        handlers = projection.handlers(store.within, index)
        consumer = EventConsumer(database, None, name="search", handlers=handlers)  # type: ignore[arg-type]
        events = [messages.product_created(p) for p in _products(count)]
        started = time.perf_counter()
        for first in range(0, len(events), BATCH):
            await consumer.apply(events[first : first + BATCH])
        indexing = count / (time.perf_counter() - started)
        took = []
        for query in _QUERIES * 25:
            begun = time.perf_counter()
            await search_products(store, index, SearchProducts(query, "", 20, ""))
            took.append((time.perf_counter() - begun) * 1000)
        p50 = statistics.median(took)
        p99 = statistics.quantiles(took, n=100)[98]
        mode = "keywords and meaning" if embedder else "keywords only"
        return (
            f"{count} products, {mode}: indexing {indexing:.0f} events/s; "
            f"{len(took)} queries p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.search.bench")
    parser.add_argument("--products", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    choice = load_embedder()
    for count in args.products:
        for embedder in (choice.embedder, None):
            with tempfile.TemporaryDirectory() as directory:
                print(asyncio.run(_measure(Path(directory), count, embedder)), flush=True)


if __name__ == "__main__":
    main()
