"""The on-disk index: FAISS (dense) + bm25s (sparse) + a SQLite chunk store + a manifest.

Layout of an index folder:

    RAG_INDEX                marks the folder as ours: rag deletes things only inside a marked folder
    LOCK                     flock'ed by the one build allowed to write at a time
    CURRENT                  {"generation": "g000003"}: the only file ever replaced in place (os.replace)
    g000003/.rag-generation  marks a generation folder we wrote: the only kind of folder rag deletes
    g000003/manifest.json    format version, embedder name and dimension, chunk settings, per-file hashes
    g000003/chunks.sqlite    chunks (doc, start, end, text) and their vectors, row id = FAISS id
    g000003/dense.faiss      IndexFlatIP, or HNSW above a size threshold, over unit vectors
    g000003/bm25/            bm25s index over the same chunks

A build writes a whole new generation folder, fsyncs it, then points CURRENT at it. A crash or
Ctrl-C at any moment leaves CURRENT pointing at the previous, complete generation. Committing
removes the other generations, but only folders named g + 6 digits that carry the generation marker:
a user's own `g2024_trip/` (or anything else) in the folder is never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from rag.errors import BadInput, IndexBusy, IndexCorrupt, IndexMissing
from rag.files import write_atomic
from rag.types import Chunk

FORMAT_VERSION = 1
CURRENT = "CURRENT"
MARKER = "RAG_INDEX"
GEN_MARKER = ".rag-generation"
LOCK = "LOCK"
GEN_NAME = re.compile(r"g\d{6,}")  # f"g{n:06d}"
BM25_FILES = (
    "params.index.json",
    "vocab.index.json",
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
)  # what bm25s.BM25.save writes
MARKER_TEXT = "This folder is a rag index (see CURRENT). rag only deletes generation folders it wrote here.\n"


def current_generation(index_dir: Path) -> Path | None:
    p = index_dir / CURRENT
    if not p.exists():
        return None
    try:
        gen = json.loads(p.read_text())["generation"]
        if not GEN_NAME.fullmatch(gen):  # CURRENT must not send us outside the index folder
            raise ValueError(f"bad generation name {gen!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as e:
        raise IndexCorrupt(
            f"{p} is damaged ({e}): rebuild with `rag index PATH --rebuild --index {index_dir}`"
        ) from e
    return index_dir / gen


def claim_index_dir(index_dir: Path) -> None:
    """Make sure `index_dir` is ours to write (and delete) in, before anything slow happens.

    A missing or empty folder is created and marked. A folder with a valid CURRENT (an index from
    before the marker existed) is adopted. Anything else is refused in one line: a file, a folder of
    the user's own things, an unwritable place.
    """
    if index_dir.exists() and not index_dir.is_dir():
        raise BadInput(
            f"--index {index_dir} is a file, not a folder: pass a folder (it is created if missing)"
        )
    if (index_dir / MARKER).is_file():
        return
    legacy = _legacy_generation(index_dir)
    # (the marker is checked again after listing: a concurrent first build may have just written it)
    if (
        legacy is None
        and index_dir.is_dir()
        and any(index_dir.iterdir())
        and not (index_dir / MARKER).is_file()
    ):
        what = "holds a damaged rag index" if (index_dir / CURRENT).exists() else "is not a rag index"
        raise BadInput(
            f"{index_dir} is not empty and {what}: pass a new or empty folder to --index "
            "(rag writes and deletes generation folders in it)"
        )
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        if legacy is not None:
            (legacy / GEN_MARKER).touch()
        # written in place, not via a temporary file: a concurrent first build must never see a
        # folder holding only our temporary file and take it for the user's
        (index_dir / MARKER).write_text(MARKER_TEXT)
    except OSError as e:
        raise unwritable(index_dir, e) from e


def unwritable(index_dir: Path, e: OSError) -> BadInput:
    return BadInput(
        f"cannot write to {index_dir} ({e.strerror or e}): set RAG_HOME to a writable folder, "
        "or pass --index DIR"
    )


def _legacy_generation(index_dir: Path) -> Path | None:
    """The generation an unmarked folder's CURRENT names, if it is a real one (we wrote it)."""
    try:
        gen = current_generation(index_dir)
    except IndexCorrupt:
        return None
    return gen if gen is not None and (gen / "manifest.json").is_file() else None


@contextmanager
def write_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's exclusive write lock, or fail at once if another build holds it.

    flock is released by the kernel when the holder exits, even on SIGKILL: no stale lock files.
    """
    import fcntl

    try:
        f = open(index_dir / LOCK, "a")
    except OSError as e:
        raise unwritable(index_dir, e) from e
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusy(f"another rag index is writing to {index_dir}; wait for it to finish") from None
        yield


def _generations(index_dir: Path) -> list[Path]:
    return [p for p in index_dir.iterdir() if GEN_NAME.fullmatch(p.name)]


def new_generation_dir(index_dir: Path) -> Path:
    """Create and mark the next generation folder (the index folder must be claimed)."""
    if not (index_dir / MARKER).is_file():
        raise RuntimeError(f"{index_dir} is not claimed: call claim_index_dir first")
    nums = [int(p.name[1:]) for p in _generations(index_dir)]
    gen = index_dir / f"g{(max(nums) + 1) if nums else 1:06d}"
    gen.mkdir()
    (gen / GEN_MARKER).touch()
    return gen


def commit_generation(index_dir: Path, gen: Path) -> None:
    """Point CURRENT at `gen`, then remove the other generations we wrote (and crashed leftovers).

    Nothing after the switch may raise: the caller deletes `gen` on an error, and by then it is CURRENT.
    """
    _fsync_dir(gen)
    write_atomic(index_dir / CURRENT, json.dumps({"generation": gen.name}))
    try:
        _fsync_dir(index_dir)
    except OSError:
        pass  # the switch happened; this only makes it durable sooner
    for p in _generations(index_dir):
        if p != gen and p.is_dir() and not p.is_symlink() and (p / GEN_MARKER).is_file():
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


def make_chunk(doc: str, start: int, end: int, text: str) -> Chunk:
    """A stored chunk; its id is `<doc>:<start>-<end>`.

    >>> make_chunk("a.txt", 0, 5, "hello").id
    'a.txt:0-5'
    """
    return Chunk(id=f"{doc}:{start}-{end}", doc=doc, text=text, start=start, end=end)


def parse_chunk_id(chunk_id: str) -> tuple[str, int, int] | None:
    """(doc, start, end) of a chunk id as make_chunk() writes it; None for anything else.

    >>> parse_chunk_id("faq.jsonl#2:0-17"), parse_chunk_id("../etc/passwd")
    (('faq.jsonl#2', 0, 17), None)
    """
    m = re.fullmatch(r"(.+):([0-9]{1,18})-([0-9]{1,18})", chunk_id, re.DOTALL)  # SQL ints: 63 bits
    return None if m is None else (m[1], int(m[2]), int(m[3]))


class ChunkDB:
    """SQLite chunk store; row ids are 0..n-1 and equal the FAISS ids."""

    def __init__(self, path: Path, create: bool = False):
        self.path = path
        if create:
            self.conn = sqlite3.connect(str(path))
        else:
            # read-only: a missing file is an error, not a new empty database
            self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
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
        by_id = {r[0]: make_chunk(*r[1:]) for r in self.conn.execute(q, ids)}
        return [by_id[i] for i in ids if i in by_id]

    def by_id(self, chunk_id: str) -> Chunk | None:
        """The chunk whose id (`<doc>:<start>-<end>`, as get() builds it) is `chunk_id`, else None.

        A lookup in the store, never a path: an id that names a file outside the index finds nothing.
        """
        key = parse_chunk_id(chunk_id)
        if key is None:
            return None
        row = self.conn.execute(
            "SELECT doc, start, end, text FROM chunks WHERE doc=? AND start=? AND end=? LIMIT 1", key
        ).fetchone()
        return None if row is None else make_chunk(*row)

    def by_file(self, file: str) -> list[tuple[Chunk, np.ndarray]]:
        rows = self.conn.execute(
            "SELECT doc, start, end, text, vec FROM chunks WHERE file=? ORDER BY id", (file,)
        ).fetchall()
        return [(make_chunk(d, s, e, t), np.frombuffer(v, dtype=np.float32)) for d, s, e, t, v in rows]

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


def write_dense(index, path: Path) -> None:
    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as e:  # faiss reports a failed write (a full disk) as a RuntimeError
        raise OSError(str(e).splitlines()[0].rsplit(": ", 1)[-1]) from e


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

    def source_path(self, doc: str) -> str:
        """Best-effort absolute path of a chunk's document under the indexed roots, for display."""
        rel = doc.split("#", 1)[0]
        roots = self.manifest.get("roots", [])
        for r in roots:
            rp = Path(r)
            cand = rp / rel if rp.is_dir() else rp
            if rp.is_file() and rp.name == rel:
                return str(rp)
            if cand.exists():
                return str(cand)
            if len(roots) > 1 and rel.startswith(rp.name + "/"):
                return str(rp / rel[len(rp.name) + 1 :])
        return rel

    _bm25: object = None

    @property
    def bm25(self):
        if self._bm25 is None:
            import bm25s

            try:
                self._bm25 = bm25s.BM25.load(str(self.gen / "bm25"))
            except (OSError, ValueError, KeyError) as e:  # json and numpy errors are ValueErrors
                raise IndexCorrupt(f"index at {self.dir} is damaged (bm25: {e}): {_fix(self.dir)}") from e
        return self._bm25


def _fix(index_dir: Path) -> str:
    return f"rebuild it with `rag index PATH --rebuild --index {index_dir}`"


def open_index(index_dir: Path) -> OpenIndex:
    """Load the current generation of an index, or raise an error that says how to fix it."""
    import faiss

    index_dir = Path(index_dir)
    gen = current_generation(index_dir)
    if gen is None:
        hint = "" if not index_dir.exists() else " (the folder has no complete index)"
        raise IndexMissing(f"no index at {index_dir}{hint}: run `rag index PATH` first (or pass --index DIR)")
    fix = _fix(index_dir)
    try:
        manifest = json.loads((gen / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IndexCorrupt(f"index at {index_dir} is damaged (manifest: {e}): {fix}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupt(
            f"index at {index_dir} has format {manifest.get('format_version')}, this rag reads {FORMAT_VERSION}: {fix}"
        )
    missing = [
        f
        for f in ("dense.faiss", "chunks.sqlite", *(f"bm25/{b}" for b in BM25_FILES))
        if not (gen / f).is_file()
    ]
    if missing:  # deleted by hand or by a cleaner: say which, rather than what the loader makes of it
        raise IndexCorrupt(f"index at {index_dir} is damaged ({missing[0]} is missing): {fix}")
    try:
        dense = faiss.read_index(str(gen / "dense.faiss"))
    except (RuntimeError, OSError) as e:
        raise IndexCorrupt(
            f"index at {index_dir} is damaged (dense.faiss: {str(e).splitlines()[0]}): {fix}"
        ) from e
    try:
        db = ChunkDB(gen / "chunks.sqlite")
        n = len(db)
    except (sqlite3.DatabaseError, OSError) as e:
        raise IndexCorrupt(f"index at {index_dir} is damaged (chunks.sqlite: {e}): {fix}") from e
    if n != manifest["chunks"] or dense.ntotal != n:
        raise IndexCorrupt(
            f"index at {index_dir} is inconsistent ({n} chunks stored, {dense.ntotal} vectors, "
            f"manifest says {manifest['chunks']}): {fix}"
        )
    return OpenIndex(dir=index_dir, gen=gen, manifest=manifest, db=db, dense=dense)
