"""Build or update an index: only new or changed files are embedded again; deleted files leave it.

    stats = build_index([Path("corpus")], Path("~/.cache/rag/index"), IndexConfig())
    # BuildStats(files_indexed=48, files_unchanged=0, files_removed=0, files_skipped=0, chunks=2219, ...)

Files are compared by sha256 of their bytes against the manifest of the current generation. The
new generation copies unchanged files' chunks and vectors from the old one, so an update costs the
embedding of what changed plus rewriting the (small) stores.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from indexing import chunk as chunking
from indexing import load, store
from indexing.embed import Embedder, get_embedder
from rag.config import IndexConfig
from rag.errors import BadInput, IndexCorrupt, IndexMismatch, RagError, WriteFailed
from rag.files import sha256_file, write_atomic
from rag.types import Chunk

log = logging.getLogger(__name__)

# progress(phase, done, total): phase is "scan" (files) or "embed" (chunks)
Progress = Callable[[str, int, int], None]


@dataclass
class BuildStats:
    files_indexed: int = 0  # new or changed files embedded in this run
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: int = 0
    chunks: int = 0  # chunks in the index after the run
    seconds: float = 0.0
    chunks_embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def public(self) -> dict:
        d = asdict(self)
        d.pop("skipped")
        d["seconds"] = round(self.seconds, 3)
        return d


def chunk_settings(cfg: IndexConfig, emb: Embedder) -> dict:
    tokens = min(cfg.chunk_tokens, emb.max_tokens)
    return {
        "chunk_tokens": tokens,
        "chunk_overlap": min(cfg.chunk_overlap, tokens // 2),
        "splitter": "recursive-v1",
    }


def _check_compatible(old: dict, emb: Embedder, settings: dict, index_dir: Path) -> None:
    fix = f"rerun with --rebuild to re-embed everything, or use another --index than {index_dir}"
    was = old["embedder"]
    if was["name"] != emb.name or was["dim"] != emb.dim:
        raise IndexMismatch(
            f"index at {index_dir} was built with embedder {was['name']} ({was['dim']}-d), not {emb.name}: {fix}"
        )
    if old["chunking"] != settings:
        raise IndexMismatch(
            f"index at {index_dir} was built with chunking {old['chunking']}, not {settings}: {fix}"
        )


def _check_chunk_sizes(fresh: list[tuple[str, str, list[Chunk]]], emb: Embedder) -> dict[str, int]:
    """Longest chunk per file, in embedder tokens; a chunk over the embedder's limit is a bug of ours.

    The splitter keeps chunks under the limit, so this never fires unless token counting breaks (as
    it did when the tokenizer file capped counts at 128): then stop before embedding, never truncate.
    """
    longest: dict[str, int] = {}
    for rel, _, chunks in fresh:
        sizes = [emb.count_tokens(c.text) for c in chunks]
        longest[rel] = max(sizes, default=0)
        if longest[rel] > emb.max_tokens:
            bad = chunks[sizes.index(longest[rel])]
            raise RagError(
                f"bug: chunk {bad.id} has {longest[rel]} tokens, over the {emb.max_tokens} that embedder "
                f"{emb.name} reads; nothing was written. Please report it; meanwhile a smaller --chunk-tokens "
                "may avoid it"
            )
    return longest


def build_index(
    paths: list[Path],
    index_dir: Path,
    cfg: IndexConfig = IndexConfig(),
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
) -> BuildStats:
    """Index `paths` into `index_dir`. Everything a user can get wrong (paths, the index folder) is
    checked before the embedder loads; the whole build holds the index's write lock. `say` gets one
    line per skipped file."""
    t0 = time.perf_counter()
    paths = [Path(p).expanduser() for p in paths]
    if not paths:
        raise BadInput("no path given: `rag index PATH...` takes the folders or files to index")
    for p in paths:
        if not p.exists():
            raise BadInput(f"{p} does not exist: pass an existing folder or file to index")
    stats = BuildStats()
    try:
        files = list(
            load.iter_files(paths, cfg.follow_symlinks, lambda rel, why: stats.skipped.append((rel, why)))
        )
    except load.Skip as e:  # a root that cannot be read at all
        raise BadInput(str(e)) from e
    stats.files_skipped = len(stats.skipped)
    if not files:
        _warn_skipped(stats, say)
        raise BadInput(
            f"no files under {', '.join(map(str, paths))}: point `rag index` at a folder with documents"
        )
    index_dir = Path(index_dir).expanduser()
    store.claim_index_dir(index_dir)
    with store.write_lock(index_dir):
        return _build(
            paths,
            files,
            index_dir,
            cfg,
            rebuild,
            embedder or get_embedder(cfg.embedder),
            stats,
            progress,
            say,
            t0,
        )


def _warn_skipped(stats: BuildStats, say: Callable[[str], None] | None) -> None:
    for rel, reason in stats.skipped:
        if say:
            say(f"skipped {rel}: {reason}")
        log.info("skipped %s: %s", rel, reason)


def _write_failed(index_dir: Path, e: BaseException) -> WriteFailed:
    """One line for a failed write. Call it before the half generation is deleted: numpy and faiss
    report a full disk as "N requested and M written", so the free space is the better witness."""
    if getattr(e, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
        return WriteFailed(str(store.unwritable(index_dir, e)))
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
    try:
        full = getattr(e, "errno", None) == errno.ENOSPC or shutil.disk_usage(index_dir).free < 1 << 20
    except OSError:
        full = False
    if full:
        reason = "the disk is full"
    return WriteFailed(
        f"could not write the index to {index_dir} ({reason}): free some disk space, or pass --index "
        "on another disk, and rerun; the previous index is unchanged"
    )


def _build(
    paths: list[Path],
    files: list[tuple[Path, str]],
    index_dir: Path,
    cfg: IndexConfig,
    rebuild: bool,
    emb: Embedder,
    stats: BuildStats,
    progress: Progress | None,
    say: Callable[[str], None] | None,
    t0: float,
) -> BuildStats:
    """Diff the files against the current generation, embed what changed, write and commit a new one."""
    settings = chunk_settings(cfg, emb)
    old = None if rebuild else _open_current(index_dir, emb, settings)
    old_files: dict = old.manifest["files"] if old else {}
    splitter = chunking.make_splitter(emb.count_tokens, settings["chunk_tokens"], settings["chunk_overlap"])
    keep, fresh = _scan(files, old_files, splitter, stats, progress)
    _warn_skipped(stats, say)

    current = {rel for rel, _ in keep} | {rel for rel, _, _ in fresh}
    stats.files_removed = sum(1 for rel in old_files if rel not in current)
    stats.files_unchanged = len(keep)
    stats.files_indexed = len(fresh)
    if old is not None and not fresh and not stats.files_removed:
        stats.chunks = len(old)
        stats.seconds = time.perf_counter() - t0
        old.db.close()
        return stats
    if not keep and not fresh:
        raise BadInput(
            f"nothing indexable under {', '.join(map(str, paths))}: every file was skipped (see warnings)"
        )

    longest = _check_chunk_sizes(fresh, emb)
    vecs = _embed_fresh(fresh, old, emb, cfg, stats, progress)
    stats.chunks = _write_generation(paths, index_dir, cfg, emb, settings, old, keep, fresh, vecs, longest)
    stats.seconds = time.perf_counter() - t0
    return stats


def _open_current(index_dir: Path, emb: Embedder, settings: dict) -> store.OpenIndex | None:
    """The current generation to update, or None when there is none; it must match embedder and chunking."""
    try:
        old = store.open_index(index_dir)
    except store.IndexMissing:
        return None
    except IndexCorrupt as e:
        raise IndexCorrupt(f"{e} (or pass --rebuild to `rag index`)") from e
    _check_compatible(old.manifest, emb, settings, index_dir)
    return old


def _scan(
    files: list[tuple[Path, str]],
    old_files: dict,
    splitter,
    stats: BuildStats,
    progress: Progress | None,
) -> tuple[list[tuple[str, str]], list[tuple[str, str, list[Chunk]]]]:
    """Hash every file; ([(file, sha)] unchanged since `old_files`, [(file, sha, chunks)] new or changed).

    A file that cannot be read or loaded is counted in `stats` as skipped, with its reason.
    """
    keep: list[tuple[str, str]] = []
    fresh: list[tuple[str, str, list[Chunk]]] = []
    for i, (path, rel) in enumerate(files):
        if progress:
            progress("scan", i, len(files))
        try:
            sha = sha256_file(path)
        except OSError as e:
            stats.files_skipped += 1
            stats.skipped.append((rel, f"unreadable ({e.strerror})"))
            continue
        if rel in old_files and old_files[rel]["sha256"] == sha:
            keep.append((rel, sha))
            continue
        try:
            docs = load.load_file(path, rel)
        except load.Skip as e:
            stats.files_skipped += 1
            stats.skipped.append((rel, str(e)))
            continue
        chunks = [c for d in docs for c in chunking.chunk_text(d.doc, d.text, splitter)]
        fresh.append((rel, sha, chunks))
    if progress:
        progress("scan", len(files), len(files))
    return keep, fresh


def _embed_fresh(
    fresh: list[tuple[str, str, list[Chunk]]],
    old: store.OpenIndex | None,
    emb: Embedder,
    cfg: IndexConfig,
    stats: BuildStats,
    progress: Progress | None,
) -> np.ndarray:
    """One vector per chunk of `fresh`, in order; each distinct new text is embedded once.

    A changed file usually keeps most of its chunks word for word: their vectors come from the old index.
    """
    reuse: dict[str, np.ndarray] = {}
    if old is not None:
        old_files = old.manifest["files"]
        for rel, _, _ in fresh:
            if rel in old_files:
                reuse.update({c.text: v for c, v in old.db.by_file(rel)})
    texts = [c.text for _, _, cs in fresh for c in cs]
    todo = sorted({t for t in texts if t not in reuse})
    stats.chunks_embedded = len(todo)
    if todo:
        new_vecs = emb.encode(
            todo,
            batch_size=cfg.batch_size,
            progress=(lambda d, n: progress("embed", d, n)) if progress else None,
        )
        reuse.update(zip(todo, new_vecs))
    return np.stack([reuse[t] for t in texts]) if texts else np.zeros((0, emb.dim), dtype=np.float32)


def _write_generation(
    paths: list[Path],
    index_dir: Path,
    cfg: IndexConfig,
    emb: Embedder,
    settings: dict,
    old: store.OpenIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    vecs: np.ndarray,
    longest: dict[str, int],
) -> int:
    """Write a new generation (chunk store, FAISS, BM25, manifest) and make it current; returns its chunks.

    Ctrl-C or a failure mid-write drops the half generation, so CURRENT still names the old one.
    """
    try:
        gen = store.new_generation_dir(index_dir)
    except OSError as e:
        raise _write_failed(index_dir, e) from e
    try:
        db = store.ChunkDB(gen / "chunks.sqlite", create=True)
        all_vecs, files_meta = _fill_chunk_db(db, old, keep, fresh, vecs, longest, emb)
        db.commit()
        texts_all = db.all_texts()
        db.close()
        matrix = np.vstack(all_vecs).astype(np.float32) if all_vecs else np.zeros((0, emb.dim), np.float32)
        dense = store.build_dense(matrix, cfg.hnsw_threshold)
        store.write_dense(dense, gen / "dense.faiss")
        store.build_bm25(texts_all, gen / "bm25")
        manifest = {
            "format_version": store.FORMAT_VERSION,
            "embedder": {"name": emb.name, "dim": emb.dim, "max_tokens": emb.max_tokens},
            "chunking": settings,
            # the longest chunk in embedder tokens, counted untruncated: the proof that nothing was cut
            "max_chunk_tokens": max((f["max_tokens"] for f in files_meta.values()), default=0),
            "dense": "hnsw" if len(matrix) > cfg.hnsw_threshold else "flat",
            "roots": [str(p.resolve()) for p in paths],
            "files": dict(sorted(files_meta.items())),
            "chunks": len(all_vecs),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_atomic(gen / "manifest.json", json.dumps(manifest, indent=1))
        if old is not None:
            old.db.close()
        store.commit_generation(index_dir, gen)
    except BaseException as e:
        # a full or read-only disk is the user's to fix: say so in one line
        failed = _write_failed(index_dir, e) if isinstance(e, (OSError, sqlite3.Error)) else None
        # Ctrl-C or a failure mid-write: drop the half generation; CURRENT still names the old one.
        shutil.rmtree(gen, ignore_errors=True)
        if failed is not None:
            raise failed from e
        raise
    return len(all_vecs)


def _fill_chunk_db(
    db: store.ChunkDB,
    old: store.OpenIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    vecs: np.ndarray,
    longest: dict[str, int],
    emb: Embedder,
) -> tuple[list[np.ndarray], dict]:
    """Unchanged files' chunks copied from the old store, then the fresh ones; (vectors in id order, files meta)."""
    old_files: dict = old.manifest["files"] if old else {}
    all_vecs: list[np.ndarray] = []
    files_meta: dict = {}
    for rel, sha in keep:
        rows = old.db.by_file(rel)
        db.add([(len(all_vecs) + j, c, rel, v) for j, (c, v) in enumerate(rows)])
        all_vecs.extend(v for _, v in rows)
        files_meta[rel] = {
            "sha256": sha,
            "chunks": len(rows),
            "max_tokens": old_files[rel].get("max_tokens")
            or max((emb.count_tokens(c.text) for c, _ in rows), default=0),
        }
    k = 0
    for rel, sha, cs in fresh:
        db.add([(len(all_vecs) + j, c, rel, vecs[k + j]) for j, c in enumerate(cs)])
        all_vecs.extend(vecs[k : k + len(cs)])
        k += len(cs)
        files_meta[rel] = {"sha256": sha, "chunks": len(cs), "max_tokens": longest[rel]}
    return all_vecs, files_meta


__all__ = ["BuildStats", "build_index", "RagError"]
