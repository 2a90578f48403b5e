"""A cross-encoder reranker: the fused top-N hits rescored by a model that reads query and passage together.

    r = RerankingRetriever(open_retriever(...), load_reranker("minilm-reranker"), candidates=20)
    r.search("Which NFL team represented the AFC at Super Bowl 50?", k=5)
    # -> the 5 best of the fused top 20, each Hit(chunk, score=fused score, rerank_score=logit)

The model is an int8 ONNX BERT (ms-marco-MiniLM-L-12-v2) run with onnxruntime and `tokenizers`; no
transformers. Its tokenizer.json pads every input to 512 tokens, so padding and truncation are switched
off and done here: each pair is cut to `max_tokens` (the passage loses its tail first) and runs alone,
so nothing is padded, with the real attention mask. With an all-ones mask the
scores were wrong and 25x slower (../shared/NOTES.md).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from indexing.onnx import SessionPool, feed, missing, open_model
from rag.types import Hit

log = logging.getLogger(__name__)


class Scorer(Protocol):
    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


class Reranker:
    """A cross-encoder over an ONNX folder (model.onnx + tokenizer.json); higher scores are better."""

    def __init__(self, folder: Path, name: str = "reranker", max_tokens: int = 256):
        self.path = folder = Path(folder)
        self.name, self.max_tokens = name, max_tokens
        self.tok, session, self.inputs = open_model(folder, "reranker", name, "minilm-reranker", threads=1)
        self.pool = SessionPool(folder / "model.onnx", session)
        self.pad_id = self.tok.token_to_id("[PAD]") or 0
        self.specials = self.tok.num_special_tokens_to_add(is_pair=True)

    def encode_pairs(self, query: str, texts: Sequence[str]) -> list[Any]:
        """One tokenizers.Encoding per (query, text), at most max_tokens long with the special tokens.

        The query keeps up to half the budget; the passage gets the rest and loses its tail."""
        budget = max(2, self.max_tokens - self.specials)
        q = self.tok.encode(query, add_special_tokens=False)
        q.truncate(min(len(q), budget // 2))
        out = []
        for p in self.tok.encode_batch(list(texts), add_special_tokens=False):
            qq = self.tok.encode(query, add_special_tokens=False)  # truncate() mutates: one per pair
            qq.truncate(len(q))
            p.truncate(budget - len(q))
            out.append(self.tok.post_process(qq, p))
        return out

    def _run(self, session: Any, enc: Any) -> float:
        (logits,) = session.run(["logits"], feed([enc], self.pad_id, self.inputs))
        return float(np.asarray(logits).ravel()[0])

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance logit per text, in the given order.

        Each pair runs alone, longest first, on one of the pool's one-thread sessions (one per core): no
        padding, and a pair's score does not depend on the other candidates (batched, the int8 graph's
        per-tensor activation ranges moved scores by up to ~0.35). benchmarks/bench_onnx_runs.py, 20
        candidates on 2 cores (AVX512-VNNI): 240 ms p50 against 448 ms for one batch on one two-thread
        session."""
        encs = self.encode_pairs(query, texts)
        order = sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))
        scores = [0.0] * len(encs)
        for i, sc in zip(order, self.pool.map(lambda session, i: self._run(session, encs[i]), order)):
            scores[i] = sc
        return scores


def doc_name(doc: str) -> str:
    """A document's name as words, for the reranker to read before its passage.

    >>> doc_name("docs/git-fetch.txt"), doc_name("Super_Bowl_50.txt")
    ('git fetch', 'Super Bowl 50')
    """
    return re.sub(r"[_\-]+", " ", Path(doc).stem).strip()


def pair_text(text: str, doc: str | None) -> str:
    """What the reranker reads for a passage: "<doc name>. <text>", or the text alone when doc is None."""
    name = doc_name(doc) if doc else ""
    return f"{name}. {text}" if name else text


def rerank(scorer: Scorer, query: str, hits: Sequence[Hit], top_k: int, names: bool = False) -> list[Hit]:
    """The top_k of `hits` by the scorer; each keeps its fused `score` and gains `rerank_score`.

    With `names` the scorer reads each passage after its document's name (pair_text): a manual's page
    name is often the one word that says which command a passage is about. Ties keep the fused order
    (the sort is stable)."""
    if not hits:
        return []
    scores = scorer.score(query, [pair_text(h.chunk.text, h.chunk.doc if names else None) for h in hits])
    order = sorted(range(len(hits)), key=lambda i: -scores[i])[:top_k]
    return [dataclasses.replace(hits[i], rerank_score=float(scores[i])) for i in order]


class RerankingRetriever:
    """Any retriever, with its top `candidates` hits rescored by a cross-encoder (needs no vectors)."""

    def __init__(self, inner: Any, scorer: Scorer, candidates: int = 20, names: bool = False):
        self.inner, self.scorer, self.candidates, self.names = inner, scorer, candidates, names

    def search(self, query: str, k: int) -> list[Hit]:
        return rerank(self.scorer, query, self.inner.search(query, max(k, self.candidates)), k, self.names)

    def search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        n = max(k, self.candidates)
        if hasattr(self.inner, "search_batch"):
            fused = self.inner.search_batch(queries, n)
        else:
            fused = [self.inner.search(q, n) for q in queries]
        return [rerank(self.scorer, q, hits, k, self.names) for q, hits in zip(queries, fused)]

    def __getattr__(self, name: str) -> Any:  # index, source_path, get, mode-specific helpers
        return getattr(self.inner, name)


_CACHE: dict[tuple[str, int], Reranker] = {}


def load_reranker(name: str = "minilm-reranker", max_tokens: int = 256, say=None) -> Reranker:
    """A Reranker for a preset or an ONNX folder; pulled on first use, loaded once per process."""
    from assets.models import resolve
    from assets.presets import PRESETS

    key = (name, max_tokens)
    if key not in _CACHE:
        # an ONNX folder has no config.json, so a local one is taken as is rather than through resolve()
        folder = resolve(name, say) if name in PRESETS else Path(name).expanduser()
        if not folder.is_dir():
            raise missing("reranker", name, folder, "no such preset or folder", "minilm-reranker")
        _CACHE[key] = Reranker(folder, name=name, max_tokens=max_tokens)
    return _CACHE[key]
