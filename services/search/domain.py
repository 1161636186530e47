"""Search's domain: the catalog's products as search keeps them, and how results rank.

Search keeps a read model of the catalog: one `IndexedProduct` per product the catalog
ever reported, built from its events alone. Each event carries the product's revision,
and a product keeps the state of the highest revision seen, so events applied twice or
out of order (two replicas, a redelivery, a rebuild beside the live stream) leave it as
the catalog holds it. A removed product stays as a tombstone at its removal's revision,
so an older event arriving late cannot bring it back.

Ranking is hybrid: the products whose words match the query (BM25, best first) and the
products whose embeddings are nearest the query's (cosine similarity, best first, above
`MIN_SIMILARITY`) are merged by reciprocal rank fusion, the method Elasticsearch and
OpenSearch use to merge lexical and vector results: each list gives a product
1 / (RRF_K + rank), and the sums order the results. It needs no calibration between
BM25's scale and cosine's, which differ by corpus.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mesh.runtime.errors import FieldViolation, InvalidArgument
from mesh.runtime.money import Money

#: The rank constant of reciprocal rank fusion (the value of its paper and of OpenSearch).
RRF_K = 60
#: The least cosine similarity of a product found by meaning alone. For all-MiniLM-L6-v2,
#: a paraphrase of a product's description scores 0.4-0.7 and unrelated products -0.1 to
#: 0.2 (tests/services/search), so 0.3 keeps the first and leaves out the second.
MIN_SIMILARITY = 0.3
#: The most candidates each ranking contributes, and so the most results of one query.
MAX_CANDIDATES = 200
#: The most words of a query that count.
MAX_TERMS = 16

_WORD = re.compile(r"\w+")
#: Words too common to tell products apart, left out of the keyword ranking (PostgreSQL's
#: `english` configuration leaves these out by itself; SQLite's FTS5 does not).
STOP_WORDS = frozenset(
    [
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have",
        "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the",
        "their", "them", "they", "this", "to", "was", "we", "were", "what", "when", "where",
        "which", "who", "will", "with", "you", "your",
    ]
)  # fmt: skip


@dataclass(frozen=True)
class IndexedProduct:
    """A product as search keeps it: what a result shows, its revision, and whether the
    catalog removed it (a tombstone keeps only the id and the revision)."""

    product_id: str
    revision: int
    deleted: bool = False
    name: str = ""
    description: str = ""
    category: str = ""
    price: Money | None = None

    @property
    def text(self) -> str:
        """What its embedding is computed from: name, category and description."""
        return f"{self.name}. {self.category}. {self.description}"


def supersedes(incoming: IndexedProduct, kept: IndexedProduct | None) -> bool:
    """Whether `incoming` replaces what is kept: a newer revision, or nothing kept yet."""
    return kept is None or incoming.revision > kept.revision


def query_terms(query: str) -> list[str]:
    """The words of a query, lower case, each once, but the `STOP_WORDS`, at most
    `MAX_TERMS`: what the keyword ranking looks for (any of them; more of them and rarer
    ones rank higher)."""
    words = dict.fromkeys(word.lower() for word in _WORD.findall(query))
    return [word for word in words if word not in STOP_WORDS][:MAX_TERMS]


def checked_query(query: str) -> str:
    """The query stripped; INVALID_ARGUMENT when it has no word to look for."""
    if not _WORD.search(query):
        raise InvalidArgument.of(
            [FieldViolation("q", "The query must contain at least one letter or digit.")]
        )
    return query.strip()


@dataclass(frozen=True)
class Ranked:
    """A product's place in the results: its fused score (0 to 1), whether its words
    matched, and its embedding's similarity to the query's."""

    product_id: str
    score: float
    keyword_match: bool
    similarity: float


def fuse(keyword: Sequence[str], semantic: Sequence[tuple[str, float]]) -> list[Ranked]:
    """Reciprocal rank fusion of the keyword ranking (ids, best first) and the semantic
    one ((id, similarity), best first); scores are scaled so that first in both is 1."""
    scores: dict[str, float] = {}
    for rank, product_id in enumerate(keyword, start=1):
        scores[product_id] = scores.get(product_id, 0.0) + 1 / (RRF_K + rank)
    for rank, (product_id, _) in enumerate(semantic, start=1):
        scores[product_id] = scores.get(product_id, 0.0) + 1 / (RRF_K + rank)
    best = 2 / (RRF_K + 1) if semantic else 1 / (RRF_K + 1)
    matched, similarity = set(keyword), dict(semantic)
    ranked = [
        Ranked(pid, score / best, pid in matched, similarity.get(pid, 0.0))
        for pid, score in scores.items()
    ]
    return sorted(ranked, key=lambda r: (-r.score, -r.similarity, r.product_id))
