"""Retrieval over an index: dense (FAISS inner product on unit vectors), BM25 (bm25s), and hybrid by
reciprocal rank fusion (the default).

    r = open_retriever(Path("~/.cache/rag/index"), mode="hybrid")
    r.search("Which NFL team represented the AFC at Super Bowl 50?", k=5)  # -> [Hit(chunk, score), ...]

Reciprocal rank fusion scores a chunk by sum(1 / (rrf_k + rank)) over the rankings it appears in;
it needs no score calibration between BM25 and cosine similarity, which is why it is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from indexing.onnx import encode_queries
from rag.config import IndexConfig, RetrievalConfig, default_index_dir
from rag.errors import BadInput, IndexMismatch
from rag.types import Chunk, Hit

MODES = ("dense", "bm25", "hybrid")

ChunkGetter = Callable[[list[int]], list[Chunk]]


class _Located:
    """What every retriever here has: the on-disk index it reads, if any, and where a document is."""

    index = None  # the indexing.store.OpenIndex it searches (set by open_retriever); None in memory

    def source_path(self, doc: str) -> str:
        """Best-effort absolute path of a chunk's document, for display; the stored name without an index."""
        return self.index.source_path(doc) if self.index is not None else doc


class DenseRetriever(_Located):
    def __init__(self, faiss_index, get: ChunkGetter, embedder):
        self.faiss_index, self.get, self.embedder = faiss_index, get, embedder

    def ranked(self, query: str, n: int) -> list[tuple[int, float]]:
        if self.faiss_index.ntotal == 0:
            return []
        q = encode_queries(self.embedder, [query]).astype(np.float32)
        scores, ids = self.faiss_index.search(q, min(n, self.faiss_index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.ranked(query, k), self.get)

    def ranked_batch(self, queries: list[str], n: int) -> list[list[tuple[int, float]]]:
        if self.faiss_index.ntotal == 0:
            return [[] for _ in queries]
        q = encode_queries(self.embedder, queries).astype(np.float32)
        scores, ids = self.faiss_index.search(q, min(n, self.faiss_index.ntotal))
        return [[(int(i), float(s)) for i, s in zip(ii, ss) if i >= 0] for ii, ss in zip(ids, scores)]

    def search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [_hits(r, self.get) for r in self.ranked_batch(queries, k)]


class BM25Retriever(_Located):
    def __init__(self, bm25, get: ChunkGetter, n_docs: int):
        self.bm25, self.get, self.n_docs = bm25, get, n_docs

    def ranked(self, query: str, n: int) -> list[tuple[int, float]]:
        from indexing.store import bm25_tokenize

        n = min(n, self.n_docs)
        if n == 0:
            return []
        tokens = bm25_tokenize([query])
        if not tokens.ids or not tokens.ids[0]:  # only stopwords / unknown words
            return []
        ids, scores = self.bm25.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.ranked(query, k), self.get)

    def ranked_batch(self, queries: list[str], n: int) -> list[list[tuple[int, float]]]:
        return [self.ranked(q, n) for q in queries]

    def search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [_hits(r, self.get) for r in self.ranked_batch(queries, k)]


class HybridRetriever(_Located):
    """Reciprocal rank fusion of dense and BM25 rankings."""

    def __init__(self, dense: DenseRetriever, bm25: BM25Retriever, rrf_k: int = 60, candidates: int = 50):
        self.dense, self.bm25, self.rrf_k, self.candidates = dense, bm25, rrf_k, candidates

    def ranked(self, query: str, n: int) -> list[tuple[int, float]]:
        depth = max(n, self.candidates)
        return rrf([self.dense.ranked(query, depth), self.bm25.ranked(query, depth)], self.rrf_k)[:n]

    def search(self, query: str, k: int) -> list[Hit]:
        return _hits(self.ranked(query, k), self.get)

    def ranked_batch(self, queries: list[str], n: int) -> list[list[tuple[int, float]]]:
        depth = max(n, self.candidates)
        dense = self.dense.ranked_batch(queries, depth)
        sparse = self.bm25.ranked_batch(queries, depth)
        return [rrf([d, s], self.rrf_k)[:n] for d, s in zip(dense, sparse)]

    def search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Many queries at once (queries are embedded in batches): for evaluation and benchmarks."""
        return [_hits(r, self.get) for r in self.ranked_batch(queries, k)]

    @property
    def get(self) -> ChunkGetter:
        return self.dense.get


def rrf(rankings: Sequence[Sequence[tuple[int, float]]], k: int = 60) -> list[tuple[int, float]]:
    """Reciprocal rank fusion.

    >>> rrf([[(1, .9), (2, .5)], [(2, 7.0), (3, 1.0)]], k=60)[0][0]
    2
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (i, _) in enumerate(ranking, 1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda t: (-t[1], t[0]))


def _hits(ranked: list[tuple[int, float]], get: ChunkGetter) -> list[Hit]:
    chunks = get([i for i, _ in ranked])
    return [Hit(chunk=c, score=s) for c, (_, s) in zip(chunks, ranked)]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BadInput(f"unknown retrieval mode '{mode}': choose one of {', '.join(MODES)}")


def make_retriever(
    mode: str, dense: DenseRetriever, bm25: BM25Retriever, cfg: RetrievalConfig, index=None
) -> DenseRetriever | BM25Retriever | HybridRetriever:
    """The retriever for `mode`; hybrid fuses with cfg.rrf_k over cfg.candidates per ranking."""
    _check_mode(mode)
    r: DenseRetriever | BM25Retriever | HybridRetriever
    if mode == "dense":
        r = dense
    elif mode == "bm25":
        r = bm25
    else:
        r = HybridRetriever(dense, bm25, rrf_k=cfg.rrf_k, candidates=cfg.candidates)
    r.index = index
    return r


def open_retriever(
    index_dir: Path | str | None = None,
    mode: str | None = None,
    cfg: RetrievalConfig | None = None,
    embedder=None,
    embedder_name: str | None = None,
) -> DenseRetriever | BM25Retriever | HybridRetriever:
    """A retriever over an index: a folder, or a postgresql:// URL (indexing.pg). The query embedder is the
    one the index was built with; asking for another raises IndexMismatch.

    `cfg` is rag.toml's [retrieval] (rrf_k, candidates, and the mode when `mode` is None); its defaults
    when None. With cfg.rerank the retriever is wrapped in indexing.rerank.RerankingRetriever (any mode).
    """
    from indexing.backends import is_url, open_index
    from indexing.embed import get_embedder

    cfg = cfg or RetrievalConfig()
    mode = mode or cfg.mode
    _check_mode(mode)
    idx = open_index(index_dir if is_url(index_dir) else Path(index_dir or default_index_dir()))
    if embedder_name and embedder_name != idx.embedder:
        raise IndexMismatch(
            f"index at {idx.dir} was built with embedder {idx.embedder}, not {embedder_name}: "
            f"drop --embedder or rebuild with `rag index PATH --rebuild --embedder {embedder_name}`"
        )
    emb = None
    if mode != "bm25":
        emb = embedder or get_embedder(idx.embedder, queries=True)
        if emb.dim != idx.manifest["embedder"]["dim"]:
            raise IndexMismatch(
                f"index at {idx.dir} has {idx.manifest['embedder']['dim']}-d vectors, "
                f"embedder {emb.name} gives {emb.dim}-d: rebuild with `rag index PATH --rebuild`"
            )
    dense = DenseRetriever(idx.dense, idx.db.get, emb)
    bm25 = BM25Retriever(idx.bm25 if mode != "dense" else None, idx.db.get, len(idx))
    return with_reranker(make_retriever(mode, dense, bm25, cfg, index=idx), cfg)


def with_reranker(retriever, cfg: RetrievalConfig, scorer=None):
    """`retriever` as is, or wrapped to rerank its top cfg.rerank_candidates when cfg.rerank.

    `scorer` (anything with score(query, texts)) replaces the cfg.reranker model, for tests."""
    if not cfg.rerank:
        return retriever
    from indexing.rerank import RerankingRetriever

    return RerankingRetriever(
        retriever, scorer or load_scorer(cfg), candidates=cfg.rerank_candidates, names=cfg.rerank_names
    )


def load_scorer(cfg: RetrievalConfig):
    """The cross-encoder cfg.reranker names, loaded once per process (the seam unit tests replace)."""
    from indexing.rerank import load_reranker

    return load_reranker(cfg.reranker, max_tokens=cfg.rerank_tokens)


def memory_retriever(
    chunks: list[Chunk], mode: str = "bm25", embedder=None, cfg: RetrievalConfig | None = None
) -> DenseRetriever | BM25Retriever | HybridRetriever:
    """A retriever over chunks held in memory (training-data distractors, tests). It reranks only when a
    `cfg` asks for it: the default pipeline's reranking must not change how training data is mined."""
    import bm25s

    from indexing.store import bm25_tokenize, build_dense

    cfg = cfg or RetrievalConfig(rerank=False)
    _check_mode(mode)
    chunks = list(chunks)

    def get(ids: list[int]) -> list[Chunk]:
        return [chunks[i] for i in ids]

    bm = None
    if mode != "dense":
        bm = bm25s.BM25()
        if chunks:
            bm.index(bm25_tokenize([c.text for c in chunks]), show_progress=False)
    dense_index = None
    if mode != "bm25":
        if embedder is None:
            from indexing.embed import get_embedder

            embedder = get_embedder(IndexConfig().embedder)
        vecs = (
            embedder.encode([c.text for c in chunks]) if chunks else np.zeros((0, embedder.dim), np.float32)
        )
        dense_index = build_dense(vecs, hnsw_threshold=10**12)
    return with_reranker(
        make_retriever(
            mode, DenseRetriever(dense_index, get, embedder), BM25Retriever(bm, get, len(chunks)), cfg
        ),
        cfg,
    )


def as_langchain(retriever, k: int = 5):
    """Wrap any of our retrievers as a LangChain BaseRetriever (Documents carry source and offsets)."""
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class RagRetriever(BaseRetriever):
        inner: object
        k: int = 5

        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [
                Document(
                    page_content=h.chunk.text,
                    metadata={
                        "source": h.chunk.doc,
                        "start": h.chunk.start,
                        "end": h.chunk.end,
                        "score": h.score,
                    },
                )
                for h in self.inner.search(query, self.k)
            ]

    return RagRetriever(inner=retriever, k=k)
