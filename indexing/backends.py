"""Where an index lives, named by one string: a folder (the default: FAISS + bm25s + SQLite, indexing.store)
or a PostgreSQL database with pgvector (indexing.pg), named by its URL.

    open_index(Path("~/.cache/rag/index"))      # -> store.OpenIndex
    open_index("postgresql://me@db:5432/rag")  # -> pg.PgIndex, with the same attributes

Both carry the manifest (embedder, dimension, chunking, file hashes, format version), a chunk store
(`db`: get, by_id, by_file, all_texts), a dense index that answers like FAISS (`dense`: ntotal, search)
and a BM25 index (`bm25`), so the retrievers and the incremental build do not know which they read.
"""

from __future__ import annotations

import re
from pathlib import Path

from rag.errors import BadInput

STORES = ("folder", "postgresql://USER@HOST:PORT/DB")
URL_SCHEMES = ("postgresql://", "postgres://")

Location = Path | str  # an index folder, or a database URL


def is_url(location: object) -> bool:
    """True for a database URL, False for a folder.

    >>> is_url("postgresql://me@db:5432/rag"), is_url(Path("postgresql:/x")), is_url("idx")
    (True, False, False)
    """
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def location(store: str, index: Path | None, default: Path) -> Location:
    """The index `--store` / [index] store names: "folder" means `index` (else `default`), a URL the database.

    >>> location("postgresql://u@h/db", None, Path("/d")), location("folder", None, Path("/d"))
    ('postgresql://u@h/db', PosixPath('/d'))
    """
    if is_url(store):
        return store
    if store != "folder":
        raise BadInput(f"unknown store {store!r}: choose {' or a URL like '.join(STORES)}")
    return Path(index).expanduser() if index else default


def display(location: Location) -> str:
    """A location to print or log: a URL without its password.

    >>> display("postgresql://me:secret@db:5432/rag")
    'postgresql://me@db:5432/rag'
    """
    if not is_url(location):
        return str(location)
    return re.sub(r"^([a-z]+://[^:/@?]*):[^@/?]*@", r"\1@", str(location))


def open_index(location: Location):
    """The index at `location` (a folder or a database URL), checked against its manifest."""
    if is_url(location):
        from indexing.pg import open_pg

        return open_pg(location)
    from indexing.store import open_index as open_folder

    return open_folder(Path(location))


def manifest_text(location: Location) -> str | None:
    """The index's current manifest as text (it changes with every build), for cache keys; None without one."""
    import json

    try:
        if is_url(location):
            from indexing.pg import read_manifest

            manifest = read_manifest(location)
            return None if manifest is None else json.dumps(manifest, sort_keys=True)
        from indexing.store import current_generation

        gen = current_generation(Path(location))
        return None if gen is None else (gen / "manifest.json").read_text()
    except (OSError, ImportError):
        return None
