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
from typing import Callable, Protocol

import numpy as np

from indexing import backends, load, store
from indexing import chunk as chunking
from indexing.embed import Embedder, get_embedder
from rag.config import IndexConfig
from rag.errors import BadInput, IndexCorrupt, IndexMismatch, RagError, WriteFailed
from rag.files import sha256_file, write_atomic
from rag.types import Chunk

log = logging.getLogger(__name__)

# progress(phase, done, total): phase is "scan" (files), "load" (new or changed files) or "embed" (chunks)
Progress = Callable[[str, int, int], None]


class Engine(Protocol):
    """Loads, chunks and embeds the new or changed files somewhere else (indexing.ray_engine.RayEngine)."""

    def run(
        self,
        todo: list[tuple[Path, str, str]],
        emb: Embedder,
        settings: dict,
        batch_size: int,
        skip_texts: set[str],
        progress: Progress | None,
    ) -> tuple[
        list[tuple[str, str, list[Chunk]]], dict[str, np.ndarray], dict[str, int], list[tuple[str, str]]
    ]:
        """([(file, sha, chunks)] in `todo` order, {text: vector} for texts not in skip_texts,
        {file: longest chunk in tokens}, [(file, reason)] skipped)."""
        ...


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


def _check_compatible(old: dict, emb: Embedder, settings: dict, index_dir: backends.Location) -> None:
    flag = "--store" if backends.is_url(index_dir) else "--index"
    index_dir = backends.display(index_dir)
    fix = f"rerun with --rebuild to re-embed everything, or use another {flag} than {index_dir}"
    was = old["embedder"]
    if was["name"] != emb.name or was["dim"] != emb.dim:
        raise IndexMismatch(
            f"index at {index_dir} was built with embedder {was['name']} ({was['dim']}-d), not {emb.name}: {fix}"
        )
    if old["chunking"] != settings:
        raise IndexMismatch(
            f"index at {index_dir} was built with chunking {old['chunking']}, not {settings}: {fix}"
        )


def check_chunk_sizes(fresh: list[tuple[str, str, list[Chunk]]], emb: Embedder) -> dict[str, int]:
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
    index_dir: backends.Location,
    cfg: IndexConfig = IndexConfig(),
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> BuildStats:
    """Index `paths` into `index_dir`: a folder, or a postgresql:// URL (indexing.pg). Everything a user
    can get wrong (paths, the index folder, the database) is checked before the embedder loads; the whole
    build holds the index's write lock. `say` gets one line per skipped file. `engine` loads, chunks and
    embeds the new files (indexing.ray_engine.RayEngine); None does it in this process."""
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
    if backends.is_url(index_dir):
        from indexing import pg

        with pg.write_session(index_dir) as conn:

            def write_pg(old, keep, fresh, vecs, manifest) -> None:
                pg.write_index(conn, index_dir, old, keep, fresh, vecs, {**manifest, "dense": "hnsw"})

            emb = embedder or get_embedder(cfg.embedder)
            return _build(
                paths, files, index_dir, cfg, rebuild, emb, stats, progress, say, t0, write_pg, engine
            )
    index_dir = Path(index_dir).expanduser()
    store.claim_index_dir(index_dir)
    with store.write_lock(index_dir):

        def write_folder(old, keep, fresh, vecs, manifest) -> None:
            _write_generation(index_dir, cfg, emb, old, keep, fresh, vecs, manifest)

        emb = embedder or get_embedder(cfg.embedder)
        return _build(
            paths, files, index_dir, cfg, rebuild, emb, stats, progress, say, t0, write_folder, engine
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
    write: Callable[..., None],
    engine: Engine | None = None,
) -> BuildStats:
    """Diff the files against the current index, embed what changed, and `write` the new state:
    write(old, keep, fresh, vectors of fresh, manifest) must replace the old state all at once or not at all."""
    settings = chunk_settings(cfg, emb)
    old = None if rebuild else _open_current(index_dir, emb, settings)
    old_files: dict = old.manifest["files"] if old else {}
    keep, todo = _diff(files, old_files, stats, progress)
    reuse = _reusable([rel for _, rel, _ in todo], old)
    if engine is None or not todo:
        splitter = chunking.make_splitter(
            emb.count_tokens, settings["chunk_tokens"], settings["chunk_overlap"]
        )
        fresh = _load(todo, splitter, stats, progress)
        new = None
    else:
        fresh, new, longest, skipped = engine.run(todo, emb, settings, cfg.batch_size, set(reuse), progress)
        stats.skipped.extend(skipped)
        stats.files_skipped += len(skipped)
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

    if new is None:
        longest = check_chunk_sizes(fresh, emb)
        new = _embed_new(fresh, reuse, emb, cfg, progress)
    stats.chunks_embedded = len(new)
    reuse.update(new)
    texts = [c.text for _, _, cs in fresh for c in cs]
    vecs = np.stack([reuse[t] for t in texts]) if texts else np.zeros((0, emb.dim), dtype=np.float32)
    files_meta = _files_meta(old, keep, fresh, longest, emb)
    manifest = _manifest(paths, cfg, emb, settings, files_meta)
    write(old, keep, fresh, vecs, manifest)
    if old is not None:
        old.db.close()
    stats.chunks = manifest["chunks"]
    stats.seconds = time.perf_counter() - t0
    return stats


def _open_current(index_dir: backends.Location, emb: Embedder, settings: dict) -> store.OpenIndex | None:
    """The current generation to update, or None when there is none; it must match embedder and chunking."""
    try:
        old = backends.open_index(index_dir)
    except store.IndexMissing:
        return None
    except IndexCorrupt as e:
        raise IndexCorrupt(f"{e} (or pass --rebuild to `rag index`)") from e
    _check_compatible(old.manifest, emb, settings, index_dir)
    return old


def _diff(
    files: list[tuple[Path, str]], old_files: dict, stats: BuildStats, progress: Progress | None
) -> tuple[list[tuple[str, str]], list[tuple[Path, str, str]]]:
    """Hash every file; ([(file, sha)] unchanged since `old_files`, [(path, file, sha)] new or changed).

    A file that cannot be read is counted in `stats` as skipped, with its reason.
    """
    keep: list[tuple[str, str]] = []
    todo: list[tuple[Path, str, str]] = []
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
        else:
            todo.append((path, rel, sha))
    if progress:
        progress("scan", len(files), len(files))
    return keep, todo


def load_chunks(path: Path, rel: str, splitter) -> list[Chunk]:
    """The chunks of one file, in order (raises load.Skip for a file that cannot be loaded)."""
    return [c for d in load.load_file(path, rel) for c in chunking.chunk_text(d.doc, d.text, splitter)]


def _load(
    todo: list[tuple[Path, str, str]], splitter, stats: BuildStats, progress: Progress | None
) -> list[tuple[str, str, list[Chunk]]]:
    """[(file, sha, chunks)] of the new or changed files; one that cannot be loaded is skipped in `stats`."""
    fresh: list[tuple[str, str, list[Chunk]]] = []
    for i, (path, rel, sha) in enumerate(todo):
        if progress:
            progress("load", i, len(todo))
        try:
            fresh.append((rel, sha, load_chunks(path, rel, splitter)))
        except load.Skip as e:
            stats.files_skipped += 1
            stats.skipped.append((rel, str(e)))
    return fresh


def _reusable(rels: list[str], old: store.OpenIndex | None) -> dict[str, np.ndarray]:
    """text -> vector of the old chunks of these files: a changed file usually keeps most chunks word for word."""
    reuse: dict[str, np.ndarray] = {}
    if old is not None:
        for rel in rels:
            if rel in old.manifest["files"]:
                reuse.update({c.text: v for c, v in old.db.by_file(rel)})
    return reuse


def _embed_new(
    fresh: list[tuple[str, str, list[Chunk]]],
    reuse: dict[str, np.ndarray],
    emb: Embedder,
    cfg: IndexConfig,
    progress: Progress | None,
) -> dict[str, np.ndarray]:
    """text -> vector for every distinct text of `fresh` that `reuse` lacks, each embedded once."""
    todo = sorted({c.text for _, _, cs in fresh for c in cs if c.text not in reuse})
    if not todo:
        return {}
    vecs = emb.encode(
        todo,
        batch_size=cfg.batch_size,
        progress=(lambda d, n: progress("embed", d, n)) if progress else None,
    )
    return dict(zip(todo, vecs))


def _files_meta(
    old: store.OpenIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    longest: dict[str, int],
    emb: Embedder,
) -> dict:
    """The manifest's per-file entries: sha256, chunk count, longest chunk in embedder tokens."""
    old_files: dict = old.manifest["files"] if old else {}
    meta = {rel: {**old_files[rel], "sha256": sha} for rel, sha in keep}
    for rel, m in meta.items():
        if not m.get("max_tokens"):  # an index from before the count was kept
            m["max_tokens"] = max((emb.count_tokens(c.text) for c, _ in old.db.by_file(rel)), default=0)
    meta.update(
        {rel: {"sha256": sha, "chunks": len(cs), "max_tokens": longest[rel]} for rel, sha, cs in fresh}
    )
    return dict(sorted(meta.items()))


def _manifest(paths: list[Path], cfg: IndexConfig, emb: Embedder, settings: dict, files_meta: dict) -> dict:
    chunks = sum(f["chunks"] for f in files_meta.values())
    return {
        "format_version": store.FORMAT_VERSION,
        "embedder": {"name": emb.name, "dim": emb.dim, "max_tokens": emb.max_tokens},
        "chunking": settings,
        # the longest chunk in embedder tokens, counted untruncated: the proof that nothing was cut
        "max_chunk_tokens": max((f.get("max_tokens") or 0 for f in files_meta.values()), default=0),
        "dense": "hnsw" if chunks > cfg.hnsw_threshold else "flat",
        "roots": [str(p.resolve()) for p in paths],
        "files": files_meta,
        "chunks": chunks,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_generation(
    index_dir: Path,
    cfg: IndexConfig,
    emb: Embedder,
    old: store.OpenIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    vecs: np.ndarray,
    manifest: dict,
) -> None:
    """Write a new generation folder (chunk store, FAISS, BM25, manifest) and make it current.

    Ctrl-C or a failure mid-write drops the half generation, so CURRENT still names the old one.
    """
    try:
        gen = store.new_generation_dir(index_dir)
    except OSError as e:
        raise _write_failed(index_dir, e) from e
    try:
        db = store.ChunkDB(gen / "chunks.sqlite", create=True)
        all_vecs = _fill_chunk_db(db, old, keep, fresh, vecs)
        db.commit()
        texts_all = db.all_texts()
        db.close()
        matrix = np.vstack(all_vecs).astype(np.float32) if all_vecs else np.zeros((0, emb.dim), np.float32)
        dense = store.build_dense(matrix, cfg.hnsw_threshold)
        store.write_dense(dense, gen / "dense.faiss")
        store.build_bm25(texts_all, gen / "bm25")
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


def _fill_chunk_db(
    db: store.ChunkDB,
    old: store.OpenIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    vecs: np.ndarray,
) -> list[np.ndarray]:
    """Unchanged files' chunks copied from the old store, then the fresh ones; the vectors in id order."""
    all_vecs: list[np.ndarray] = []
    for rel, _ in keep:
        rows = old.db.by_file(rel)
        db.add([(len(all_vecs) + j, c, rel, v) for j, (c, v) in enumerate(rows)])
        all_vecs.extend(v for _, v in rows)
    k = 0
    for rel, _, cs in fresh:
        db.add([(len(all_vecs) + j, c, rel, vecs[k + j]) for j, c in enumerate(cs)])
        all_vecs.extend(vecs[k : k + len(cs)])
        k += len(cs)
    return all_vecs


__all__ = ["BuildStats", "build_index", "RagError"]
