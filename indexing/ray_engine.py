"""Loading, chunking and embedding on Ray Data, for corpora too big for one process (`rag index --engine ray`).

    build_index(paths, index, cfg, engine=RayEngine(address=None))  # None: a local Ray on this machine

The new or changed files become a dataset; `map_batches` loads them in Ray tasks, then an actor pool
chunks and embeds them: each actor loads the embedder once and keeps it. The driver hashes the files
(to know what changed), collects the chunks and vectors, and writes them through the chosen store, so
chunk ids are the ones the local engine makes, and so are the vectors of texts embedded in the same batches.
Batches differ (an actor embeds DOCS_PER_BATCH documents' chunks together, the local engine all new chunks
in length order), and an int8 ONNX embedder's vectors depend on their batch-mates: bge-small gives a text
cosine 0.996-0.998 to itself in another batch, in either engine (tests/test_ray_engine.py).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from indexing import chunk as chunking
from indexing import load, store
from rag.errors import BackendUnavailable, RagError
from rag.types import Chunk

log = logging.getLogger(__name__)

SCALE = "pip install 'rag-reader[scale]'"
FILES_PER_TASK = 16  # files one loading task reads
DOCS_PER_BATCH = 64  # documents an actor chunks and embeds at once


def _ray():
    try:
        import ray
    except ImportError as e:
        raise BackendUnavailable(f"--engine ray needs Ray ({e.name} is missing): {SCALE}") from e
    return ray


def connect(address: str | None):
    """Ray, initialised: joined to the cluster at `address` ("auto": the one this machine is in), else a
    local one started here. An already initialised Ray (a test session's) is used as it is."""
    ray = _ray()
    try:
        _probe(address)
        if ray.is_initialized():
            return ray
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except (OSError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        fix = (
            "start one with `ray start --head` on its head node, or fix --address (auto joins this machine's)"
            if address
            else "drop --engine ray, or check `ray start --head` works here"
        )
        raise BackendUnavailable(f"cannot reach {where} ({first}): {fix}") from e
    return ray


def _probe(address: str | None) -> None:
    """Fail in seconds on a HOST:PORT nobody answers (ray.init would retry for minutes)."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise ValueError(f"{address!r} is not auto or HOST:PORT")
    socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()


def _load_batch(batch: dict) -> dict:
    """Ray task: files -> one row per document (or per file that cannot be loaded, with the reason)."""
    out: dict[str, list] = {"order": [], "doc_i": [], "doc": [], "text": [], "skip": []}
    for order, path, rel in zip(batch["order"], batch["path"], batch["rel"]):
        try:
            docs = load.load_file(Path(path), str(rel))
        except load.Skip as e:
            docs, reason = [], str(e)
            out["order"].append(order), out["doc_i"].append(-1), out["doc"].append(str(rel))
            out["text"].append(""), out["skip"].append(reason)
        for i, d in enumerate(docs):
            out["order"].append(order), out["doc_i"].append(i), out["doc"].append(d.doc)
            out["text"].append(d.text), out["skip"].append("")
    return {k: np.array(v, dtype=np.int64 if k in ("order", "doc_i") else object) for k, v in out.items()}


class ChunkEmbed:
    """Ray actor: holds one embedder; documents -> one row per chunk, with its vector unless reused."""

    def __init__(self, make_embedder: Callable, settings: dict, batch_size: int, skip_texts: set[str]):
        self.emb = make_embedder()
        self.splitter = chunking.make_splitter(
            self.emb.count_tokens, settings["chunk_tokens"], settings["chunk_overlap"]
        )
        self.batch_size, self.skip_texts = batch_size, skip_texts

    def __call__(self, batch: dict) -> dict:
        from indexing.build import check_chunk_sizes  # (build imports this module lazily)

        names = ("order", "doc_i", "seq", "doc", "text", "start", "end", "tokens", "skip")
        cols: dict[str, list] = {k: [] for k in names}
        for order, doc_i, doc, text, skip in zip(
            batch["order"], batch["doc_i"], batch["doc"], batch["text"], batch["skip"]
        ):
            chunks = [] if skip else chunking.chunk_text(str(doc), str(text), self.splitter)
            # the local engine's check, per document: never embed a chunk the model would cut
            tokens = check_chunk_sizes([(str(doc), "", chunks)], self.emb)[str(doc)]
            rows = [(-1, Chunk("", str(doc), "", 0, 0))] if skip or not chunks else list(enumerate(chunks))
            for seq, c in rows:
                for k, v in zip(names, (order, doc_i, seq, c.doc, c.text, c.start, c.end, tokens, skip)):
                    cols[k].append(v)
        todo = sorted({t for t, s in zip(cols["text"], cols["seq"]) if s >= 0 and t not in self.skip_texts})
        vecs = dict(zip(todo, self.emb.encode(todo, batch_size=self.batch_size))) if todo else {}
        zero = np.zeros(self.emb.dim, np.float32)
        out = {
            k: np.array(v, dtype=object if k in ("doc", "text", "skip") else np.int64)
            for k, v in cols.items()
        }
        out["embedded"] = np.array([t in vecs for t in cols["text"]], dtype=bool)
        out["vec"] = np.stack([vecs.get(t, zero) for t in cols["text"]]) if cols["text"] else np.zeros((0, 1))
        return out


@dataclass
class RayEngine:
    """indexing.build's Engine on Ray Data; `address` None starts Ray here, "auto" or HOST:PORT joins a cluster."""

    address: str | None = None
    actors: int | None = None  # embedder actors (default: one per CPU Ray offers, less one for the loaders)
    make_embedder: Callable | None = None  # builds the actors' embedder (default: get_embedder(its name))

    def run(self, todo, emb, settings, batch_size, skip_texts, progress):
        ray = connect(self.address)
        from ray.data import ActorPoolStrategy, DataContext

        DataContext.get_current().enable_progress_bars = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = self.actors or max(1, cpus - 1)
        make = self.make_embedder or _named_embedder(emb.name)
        threads = max(1, cpus // actors)  # each actor's torch/onnxruntime threads
        items = [{"order": i, "path": str(p), "rel": rel} for i, (p, rel, _) in enumerate(todo)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // FILES_PER_TASK))
        # loaders ask for a quarter CPU: they must always fit beside the actors, which hold one each
        ds = ds.map_batches(_load_batch, batch_size=FILES_PER_TASK, num_cpus=0.25)
        ds = ds.map_batches(
            ChunkEmbed,
            fn_constructor_kwargs={
                "make_embedder": make,
                "settings": settings,
                "batch_size": batch_size,
                "skip_texts": skip_texts,
            },
            batch_size=DOCS_PER_BATCH,
            compute=ActorPoolStrategy(size=actors),
            num_cpus=1,
            runtime_env={"env_vars": {"RAG_THREADS": str(threads)}},
        )
        try:
            batches = list(ds.iter_batches(batch_format="numpy", batch_size=None))
        except Exception as e:  # a RagError raised in an actor comes back wrapped
            raise _cause(e) from e
        return _collect(todo, batches, progress)


def _named_embedder(name: str) -> Callable:
    def make():
        from indexing.embed import get_embedder

        return get_embedder(name)

    return make


def _cause(e: BaseException) -> BaseException:
    """The RagError an actor raised, out of Ray's wrappers (which subclass it and add a traceback); else `e`."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, RagError) and type(seen).__module__ == "rag.errors":
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return e


def _collect(todo, batches, progress):
    """The engine's answer from the actors' rows: chunks per file in `todo` order, vectors, skips."""
    rows: dict[int, list] = {i: [] for i in range(len(todo))}
    skipped: dict[int, str] = {}
    tokens: dict[int, int] = {}
    new: dict[str, np.ndarray] = {}
    for b in batches:
        for j in range(len(b["order"])):
            order = int(b["order"][j])
            if b["skip"][j]:
                skipped[order] = str(b["skip"][j])
                continue
            tokens[order] = max(tokens.get(order, 0), int(b["tokens"][j]))
            if b["seq"][j] >= 0:
                c = store.make_chunk(
                    str(b["doc"][j]), int(b["start"][j]), int(b["end"][j]), str(b["text"][j])
                )
                rows[order].append((int(b["doc_i"][j]), int(b["seq"][j]), c))
                if b["embedded"][j]:
                    new[c.text] = np.asarray(b["vec"][j], np.float32)
    fresh: list[tuple[str, str, list[Chunk]]] = []
    longest: dict[str, int] = {}
    for i, (_, rel, sha) in enumerate(todo):
        if i in skipped:
            continue
        fresh.append((rel, sha, [c for _, _, c in sorted(rows[i], key=lambda r: r[:2])]))
        longest[rel] = tokens.get(i, 0)
    if progress:
        progress("embed", len(new), len(new))
    return fresh, new, longest, [(todo[i][1], why) for i, why in sorted(skipped.items())]


__all__ = ["RayEngine", "connect"]
