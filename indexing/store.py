"""The on-disk index: FAISS (dense) + bm25s (sparse) + a SQLite chunk store + a manifest.

Layout of an index folder:

    CURRENT                  {"generation": "g000003"}: the only file ever replaced in place (os.replace)
    g000003/manifest.json    format version, embedder name and dimension, chunk settings, per-file hashes
    g000003/chunks.sqlite    chunks (doc, start, end, text) and their vectors, row id = FAISS id
    g000003/dense.faiss      IndexFlatIP, or HNSW above a size threshold, over unit vectors
    g000003/bm25/            bm25s index over the same chunks

A build writes a whole new generation folder, fsyncs it, then points CURRENT at it. A crash or
Ctrl-C at any moment leaves CURRENT pointing at the previous, complete generation.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.errors import IndexCorrupt, IndexMissing
from rag.types import Chunk

FORMAT_VERSION = 1
CURRENT = "CURRENT"


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def current_generation(index_dir: Path) -> Path | None:
    p = index_dir / CURRENT
    if not p.exists():
        return None
    try:
        gen = json.loads(p.read_text())["generation"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise IndexCorrupt(f"{p} is damaged ({e}): rebuild with `rag index PATH --rebuild --index {index_dir}`") from e
    return index_dir / gen


def new_generation_dir(index_dir: Path) -> Path:
    index_dir.mkdir(parents=True, exist_ok=True)
    nums = [int(p.name[1:]) for p in index_dir.glob("g[0-9]*") if p.name[1:].isdigit()]
    gen = index_dir / f"g{(max(nums) + 1) if nums else 1:06d}"
    gen.mkdir()
    return gen


def commit_generation(index_dir: Path, gen: Path) -> None:
    """Point CURRENT at `gen`, then remove every other generation (and crashed leftovers)."""
    _fsync_dir(gen)
    write_atomic(index_dir / CURRENT, json.dumps({"generation": gen.name}))
    _fsync_dir(index_dir)
    for p in index_dir.glob("g[0-9]*"):
        if p != gen and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkDB:
    """SQLite chunk store; row ids are 0..n-1 and equal the FAISS ids."""

    def __init__(self, path: Path, create: bool = False):
        self.path = path
        self.conn = sqlite3.connect(str(path))
        if create:
            self.conn.executescript(
                """
                PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
                CREATE TABLE chunks(id INTEGER PRIMARY KEY, doc TEXT, file TEXT, start INTEGER, end INTEGER,
                                    text TEXT, vec BLOB);
                CREATE INDEX chunks_file ON chunks(file);
                """
            )

    def add(self, rows: list[tuple[int, Chunk, str, np.ndarray]]) -> None:
        self.conn.executemany(
            "INSERT INTO chunks(id, doc, file, start, end, text, vec) VALUES (?,?,?,?,?,?,?)",
            [(i, c.doc, f, c.start, c.end, c.text, v.astype(np.float32).tobytes()) for i, c, f, v in rows],
        )

    def commit(self) -> None:
        self.conn.commit()

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def get(self, ids: list[int]) -> list[Chunk]:
        if not ids:
            return []
        q = f"SELECT id, doc, start, end, text FROM chunks WHERE id IN ({','.join('?' * len(ids))})"
        by_id = {r[0]: Chunk(id=f"{r[1]}:{r[2]}-{r[3]}", doc=r[1], text=r[4], start=r[2], end=r[3])
                 for r in self.conn.execute(q, ids)}
        return [by_id[i] for i in ids if i in by_id]

    def by_file(self, file: str) -> list[tuple[Chunk, np.ndarray]]:
        rows = self.conn.execute(
            "SELECT doc, start, end, text, vec FROM chunks WHERE file=? ORDER BY id", (file,)
        ).fetchall()
        return [
            (Chunk(id=f"{d}:{s}-{e}", doc=d, text=t, start=s, end=e), np.frombuffer(v, dtype=np.float32))
            for d, s, e, t, v in rows
        ]

    def all_texts(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT text FROM chunks ORDER BY id")]

    def close(self) -> None:
        self.conn.close()


def build_dense(vectors: np.ndarray, hnsw_threshold: int):
    import faiss

    dim = vectors.shape[1]
    if len(vectors) > hnsw_threshold:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def bm25_tokenize(texts: list[str]):
    import bm25s

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:  # stemming is an optional nicety
        stemmer = None
    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)


def build_bm25(texts: list[str], out: Path) -> None:
    import bm25s

    retriever = bm25s.BM25()
    if texts:
        retriever.index(bm25_tokenize(texts), show_progress=False)
    retriever.save(str(out))


@dataclass
class OpenIndex:
    """A loaded index generation: manifest, chunk store, dense and sparse indexes (the latter lazily)."""

    dir: Path
    gen: Path
    manifest: dict
    db: ChunkDB
    dense: object

    @property
    def embedder(self) -> str:
        return self.manifest["embedder"]["name"]

    def __len__(self) -> int:
        return int(self.manifest["chunks"])

    _bm25: object = None

    @property
    def bm25(self):
        if self._bm25 is None:
            import bm25s

            self._bm25 = bm25s.BM25.load(str(self.gen / "bm25"))
        return self._bm25


def open_index(index_dir: Path) -> OpenIndex:
    """Load the current generation of an index, or raise an error that says how to fix it."""
    import faiss

    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        hint = "" if not index_dir.exists() else " (the folder has no complete index)"
        raise IndexMissing(f"no index at {index_dir}{hint}: run `rag index PATH` first (or pass --index DIR)")
    fix = f"rebuild it with `rag index PATH --rebuild --index {index_dir}`"
    try:
        manifest = json.loads((gen / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IndexCorrupt(f"index at {index_dir} is damaged (manifest: {e}): {fix}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupt(
            f"index at {index_dir} has format {manifest.get('format_version')}, this rag reads {FORMAT_VERSION}: {fix}"
        )
    try:
        dense = faiss.read_index(str(gen / "dense.faiss"))
        db = ChunkDB(gen / "chunks.sqlite")
        n = len(db)
    except (RuntimeError, sqlite3.DatabaseError, OSError) as e:
        raise IndexCorrupt(f"index at {index_dir} is damaged ({str(e).splitlines()[0]}): {fix}") from e
    if n != manifest["chunks"] or dense.ntotal != n:
        raise IndexCorrupt(
            f"index at {index_dir} is inconsistent ({n} chunks stored, {dense.ntotal} vectors, "
            f"manifest says {manifest['chunks']}): {fix}"
        )
    return OpenIndex(dir=index_dir, gen=gen, manifest=manifest, db=db, dense=dense)
