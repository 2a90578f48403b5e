"""The PostgreSQL store: chunks, pgvector vectors (HNSW), full text and the BM25 index in one database.

    rag index corpus/ --store postgresql://me@db:5432/rag
    open_pg("postgresql://me@db:5432/rag")  # -> PgIndex, read as store.OpenIndex is

Tables, in the connection's schema (set another with `?options=-csearch_path%3Dmyschema` in the URL):

    rag_manifest         one row: the current generation's number, and the manifest the folder store keeps
                         in manifest.json (plus "generation", "table", "next_id")
    rag_chunks_g000003   id, doc, file, start, end, text, vec vector(dim), tsv tsvector, born, died;
                         HNSW (inner product) on vec, GIN on tsv
    rag_bm25_files       generation, name, data: a generation's bm25s files, and ids.npy (BM25 row -> chunk id)

Generations. A build writes generation G+1 beside the current G, one committed transaction per BATCH_ROWS
rows, then makes it current in one last, short transaction (the manifest row). Until then readers see G
exactly as it was, and an interrupted build (Ctrl-C, kill -9, a lost connection) leaves only rows of a
generation that never became current, which the next build deletes before it writes.

- A full build (the first, --rebuild) COPYs into a new table, indexes it, and its last transaction drops
  the old table.
- An update keeps the table and writes only changed files: their new rows are born = G+1 (invisible to G),
  their old rows get died = G+1 (still visible to G). Readers of G filter `born <= G AND (died IS NULL OR
  died > G)`; superseded rows and G's BM25 files stay until the next build starts, so a reader still on G
  answers as before until it notices G+1. (The HNSW scan meets the update's rows too and drops them after
  the scan: a large update in progress can cost readers some of their ef_search candidates.)

Readers read the generation number once per search (one single-row SELECT) and reload when another is
current, so a long-lived `rag serve` answers from the newest build without a restart. Row ids are never
reused across generations, so a search that straddles a full build's switch can come back empty, but never
with chunks of the other generation.

Lexical search is bm25s kept beside the chunks by default, as in the folder store: ts_rank is not BM25 (no
IDF, no term-frequency saturation), so `bm25` and `hybrid` would rank differently from the folder store,
whose recall@5 the Postgres store must match. `?lexical=tsvector` in the URL ranks with Postgres's own
full-text search instead (ts_rank over the tsv column, the query's stems OR'ed): nothing to load into the
reader's memory. benchmarks/bench_scale.py measures both; BM25 stays the default until that measurement
says otherwise.

One writer at a time: a session advisory lock, released by the server when the writer goes away.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from indexing import store
from indexing.backends import display
from rag.errors import (
    BackendUnavailable,
    BadInput,
    IndexBusy,
    IndexCorrupt,
    IndexMismatch,
    IndexMissing,
    WriteFailed,
)
from rag.types import Chunk

log = logging.getLogger(__name__)

MANIFEST = "rag_manifest"
BM25 = "rag_bm25_files"
LEGACY_BM25 = "rag_bm25"  # layout 1 kept one generation's BM25 files here
LAYOUT = 2  # the tables' layout (manifest "pg_layout"): 2 = generations in rows, committed per batch
LOCK_KEY = 7_496_035_101  # pg_try_advisory_lock key of rag index writers
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100
EF_SEARCH = 100  # candidates HNSW visits per query (at least the number asked for)
BATCH_ROWS = 2000  # chunks per committed transaction while a build writes
PIN_SECONDS = 30.0  # a search that failed before fetching its chunks unpins after this
RANK = "ts_rank(tsv, q, 1)"  # `?lexical=tsvector`'s score (PgTsvector says why this one)
OPTIONS = {"lexical": ("bm25", "tsvector")}  # rag's own URL parameters: removed before libpq sees the URL
SCALE = "pip install 'rag-reader[scale]'"


def table(generation: int) -> str:
    """The chunk table a full build of a generation creates.

    >>> table(3)
    'rag_chunks_g000003'
    """
    return f"rag_chunks_g{int(generation):06d}"


def visible(generation: int) -> str:
    """The SQL condition on a chunk table's rows that a reader of `generation` sees.

    >>> visible(4)
    'born <= 4 AND (died IS NULL OR died > 4)'
    """
    g = int(generation)
    return f"born <= {g} AND (died IS NULL OR died > {g})"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for libpq, and rag's own parameters taken out of it (the rest is left as written).

    >>> split_url("postgresql://me@db/rag?sslmode=require&lexical=tsvector")
    ('postgresql://me@db/rag?sslmode=require', {'lexical': 'tsvector'})
    """
    base, sep, query = url.partition("?")
    if not sep:
        return url, {}
    ours, rest = {}, []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key in OPTIONS:
            if value not in OPTIONS[key]:
                raise BadInput(
                    f"--store ...?{key}={value} is not one of {', '.join(OPTIONS[key])}: fix it in the URL"
                )
            ours[key] = value
        elif item:
            rest.append(item)
    return base + ("?" + "&".join(rest) if rest else ""), ours


def with_option(url: str, key: str, value: str) -> str:
    """`url` with one of rag's parameters set.

    >>> with_option("postgresql://me@db/rag", "lexical", "tsvector")
    'postgresql://me@db/rag?lexical=tsvector'
    """
    base, ours = split_url(url)
    ours[key] = value
    extra = "&".join(f"{k}={v}" for k, v in ours.items())
    return base + ("&" if "?" in base else "?") + extra


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _driver():
    try:
        import pgvector.psycopg  # noqa: F401
        import psycopg
    except ImportError as e:
        raise BackendUnavailable(
            f"--store postgresql://... needs psycopg and pgvector ({e.name} is missing): {SCALE}"
        ) from e
    return psycopg


def connect(url: str):
    """An autocommit connection, or one line saying why there is none and what to do."""
    psycopg = _driver()
    libpq_url, _ = split_url(url)
    timeout = {} if "connect_timeout" in libpq_url else {"connect_timeout": 10}
    try:
        return psycopg.connect(libpq_url, autocommit=True, **timeout)
    except psycopg.OperationalError as e:
        raise refused(url, e) from e
    except psycopg.ProgrammingError as e:  # a malformed URL
        raise BadInput(
            f"--store {display(url)} is not a PostgreSQL URL ({_first_line(e)}): "
            "write it as postgresql://USER[:PASSWORD]@HOST:PORT/DB"
        ) from e


def refused(url: str, e: Exception) -> BackendUnavailable:
    """The one-line error for a connection the server refused or never answered."""
    where = display(url)
    reason = _first_line(e).split(" failed: ")[-1].removeprefix("FATAL:").strip()
    low = reason.lower()
    if "password" in low:
        return BackendUnavailable(
            f"PostgreSQL at {where} refused the password ({reason}): put the right one in the URL "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB) or in ~/.pgpass"
        )
    if "database" in low and "does not exist" in low:
        return BackendUnavailable(
            f"{reason} on {where}: create it (`createdb NAME`) or fix the URL's database"
        )
    if "role" in low and "does not exist" in low:
        return BackendUnavailable(f"{reason} on {where}: fix the user in the URL, or create the role")
    return BackendUnavailable(
        f"cannot reach PostgreSQL at {where} ({reason}): start the server, or fix the host and port in --store"
    )


def _register_vector(conn, where: str) -> None:
    try:
        from pgvector.psycopg import register_vector

        register_vector(conn)
    except _driver().ProgrammingError as e:  # "vector type not found in the database"
        raise BackendUnavailable(
            f"the vector extension is not enabled in {where} ({_first_line(e)}): run `CREATE EXTENSION vector;` "
            "in that database (as its owner or a superuser), or rebuild with `rag index PATH --store URL`"
        ) from e


def _ensure_vector(conn, where: str) -> None:
    """CREATE EXTENSION vector unless it is there; a server without pgvector or a user without the right
    to enable it gets one line naming the fix."""
    psycopg = _driver()
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege as e:
        raise BackendUnavailable(
            f"the vector extension is not enabled in {where} and this user may not enable it: have the "
            "database owner or a superuser run `CREATE EXTENSION vector;` in that database, then rerun"
        ) from e
    except psycopg.Error as e:  # no pgvector on the server: "extension "vector" is not available"
        raise BackendUnavailable(
            f"PostgreSQL at {where} has no pgvector ({_first_line(e)}): install pgvector on the server "
            "(Debian: postgresql-NN-pgvector), then run `CREATE EXTENSION vector;` in that database"
        ) from e


def _exists(conn, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def _read_manifest(conn) -> dict | None:
    if not _exists(conn, MANIFEST):
        return None
    row = conn.execute(f"SELECT manifest FROM {MANIFEST} WHERE id = 1").fetchone()
    return None if row is None else row[0]


def read_manifest(url: str) -> dict | None:
    """The database's current manifest, or None when nothing was indexed there."""
    with connect(url) as conn:
        return _read_manifest(conn)


def _current_manifest(conn, where: str) -> dict:
    """The current manifest, checked: it exists, and this rag reads its format and layout."""
    fix = f"rebuild it with `rag index PATH --rebuild --store {where}`"
    manifest = _read_manifest(conn)
    if manifest is None:
        raise IndexMissing(f"no index in {where}: run `rag index PATH --store {where}` first")
    if manifest.get("format_version") != store.FORMAT_VERSION:
        raise IndexCorrupt(
            f"index in {where} has format {manifest.get('format_version')}, this rag reads "
            f"{store.FORMAT_VERSION}: {fix}"
        )
    if manifest.get("pg_layout") != LAYOUT:
        raise IndexCorrupt(
            f"index in {where} has table layout {manifest.get('pg_layout', 1)}, this rag reads {LAYOUT}: {fix}"
        )
    return manifest


class PgChunks:
    """The chunk store of a reader's generation (what store.ChunkDB answers, from Postgres)."""

    def __init__(self, conn):
        self.conn = conn
        self.owner: PgIndex | None = None  # set by open_pg: the table and generation come from it

    @property
    def table(self) -> str:
        return self.owner.manifest["table"]

    @property
    def visible(self) -> str:
        return visible(self.owner.generation)

    def __len__(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {self.table} WHERE {self.visible}").fetchone()[0]

    def get(self, ids: list[int]) -> list[Chunk]:
        """The chunks of `ids` that exist, in that order. Every search ends here, so this ends its pin."""
        self.owner.unpin()
        if not ids:
            return []
        psycopg = _driver()

        def fetch():
            sql = f'SELECT id, doc, start, "end", text FROM {self.table} WHERE id = ANY(%s)'
            return self.conn.execute(sql, ([int(i) for i in ids],)).fetchall()

        try:
            rows = fetch()
        except psycopg.errors.UndefinedTable:  # a full build replaced the table mid-search: ids are never
            self.owner.reload()  # reused, so the new table has none of these and the search comes back empty
            rows = fetch()
        by_id = {r[0]: store.make_chunk(*r[1:]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def by_id(self, chunk_id: str) -> Chunk | None:
        """The chunk whose id is `chunk_id`, else None: a lookup in the table, never a path."""
        key = store.parse_chunk_id(chunk_id)
        if key is None:
            return None
        row = self.conn.execute(
            f'SELECT doc, start, "end", text FROM {self.table} '
            f'WHERE doc = %s AND start = %s AND "end" = %s AND {self.visible} LIMIT 1',
            key,
        ).fetchone()
        return None if row is None else store.make_chunk(*row)

    def by_file(self, file: str) -> list[tuple[Chunk, np.ndarray]]:
        rows = self.conn.execute(
            f'SELECT doc, start, "end", text, vec FROM {self.table} WHERE file = %s AND {self.visible} ORDER BY id',
            (file,),
            binary=True,  # the vectors' exact float32 bytes
        ).fetchall()
        return [(store.make_chunk(d, s, e, t), v.to_numpy()) for d, s, e, t, v in rows]

    def all_texts(self) -> list[str]:
        return [
            r[0] for r in self.conn.execute(f"SELECT text FROM {self.table} WHERE {self.visible} ORDER BY id")
        ]

    def close(self) -> None:
        self.conn.close()


class PgDense:
    """What DenseRetriever asks of a FAISS index (ntotal, search), answered by pgvector's HNSW index.

    Scores are inner products of unit vectors, as in the folder store; ids missing from a short answer are -1.
    """

    def __init__(self, conn):
        self.conn = conn
        self.owner: PgIndex | None = None
        self._ef = None

    @property
    def ntotal(self) -> int:
        """The reader's chunk count; DenseRetriever reads it first, so a search's generation check is here."""
        self.owner.refresh()
        return len(self.owner)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        psycopg = _driver()
        try:
            return self._search(queries, n)
        except psycopg.errors.UndefinedTable:  # a full build replaced the table since the check
            self.owner.reload()
            return self._search(queries, n)

    def _search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        ef = min(1000, max(EF_SEARCH, n))  # HNSW returns at most ef_search rows
        if ef != self._ef:
            self.conn.execute(f"SET hnsw.ef_search = {ef}")
            self._ef = ef
        scores = np.full((len(queries), n), -np.inf, np.float32)
        ids = np.full((len(queries), n), -1, np.int64)
        owner = self.owner
        # <#>: minus inner product. Rows of a build in progress are skipped after the HNSW scan. Ties are
        # broken by id, as FAISS does: the heap order they would come in changes when rows are updated
        sql = (
            f"SELECT id, d FROM (SELECT id, vec <#> %s AS d FROM {owner.manifest['table']} "
            f"WHERE {visible(owner.generation)} ORDER BY d LIMIT %s) hits ORDER BY d, id"
        )
        for i, q in enumerate(np.asarray(queries, np.float32)):
            for j, (cid, d) in enumerate(self.conn.execute(sql, (q, n))):
                ids[i, j], scores[i, j] = cid, -d
        return scores, ids


class PgBM25:
    """bm25s over the reader's generation, loaded from rag_bm25_files (again when the generation changes)."""

    def __init__(self, owner: PgIndex):
        self.owner, self.generation = owner, None
        self.bm25, self.ids = None, np.zeros(0, np.int64)

    def load(self) -> None:
        gen = self.owner.generation
        if self.generation == gen:
            return
        import bm25s

        rows = dict(
            self.owner.db.conn.execute(f"SELECT name, data FROM {BM25} WHERE generation = %s", (gen,))
        )
        try:
            ids = np.load(io.BytesIO(rows.pop("ids.npy")))
            with tempfile.TemporaryDirectory() as d:
                for name, data in rows.items():
                    (Path(d) / name).write_bytes(data)
                self.bm25 = bm25s.BM25.load(d)
        except (KeyError, OSError, ValueError) as e:
            raise IndexCorrupt(
                f"index in {self.owner.dir} is damaged (bm25: {e}): rebuild it with "
                f"`rag index PATH --rebuild --store {self.owner.dir}`"
            ) from e
        self.ids, self.generation = ids, gen

    def retrieve(self, tokens, k: int, **kw):
        self.owner.refresh()
        self.load()
        k = min(k, len(self.ids))
        if k == 0:
            shape = (len(tokens.ids), 0)
            return np.zeros(shape, np.int64), np.zeros(shape, np.float32)
        rows, scores = self.bm25.retrieve(tokens, k=k, **kw)
        return self.ids[rows], scores


class PgTsvector:
    """Postgres full-text search in BM25's place (`?lexical=tsvector`): ts_rank over the tsv column.

    The query arrives as bm25s tokens (stemmed, stopwords gone): their stems are OR'ed into a tsquery, since
    Postgres's AND (plainto_tsquery, websearch_to_tsquery) finds nothing for most questions. PyStemmer's
    English stems equal Postgres's `english` lexemes for 99.8% of corpus/'s words, so they are matched as
    they are ('simple'); without PyStemmer the words are stemmed by Postgres ('english').

    The ranking, ts_rank normalised by 1 + log(length) (RANK), was the best of six tried on 300 seeded SQuAD
    dev questions over corpus/ (6,448 chunks): recall@5 0.877 against bm25s's 0.890; ts_rank_cd (cover
    density) gave 0.71 at every normalisation, ts_rank unnormalised 0.863, by length 0.683.
    """

    def __init__(self, owner: PgIndex):
        self.owner = owner
        self.config = "simple" if importlib.util.find_spec("Stemmer") else "english"

    def load(self) -> None:
        pass

    def retrieve(self, tokens, k: int, **kw):
        self.owner.refresh()
        words = {i: w for w, i in tokens.vocab.items()}
        ids = np.full((len(tokens.ids), k), -1, np.int64)
        scores = np.zeros((len(tokens.ids), k), np.float32)
        for qi, q in enumerate(tokens.ids):
            terms = sorted({words[t] for t in q if words.get(t)})
            if not terms:
                continue
            tsquery = " | ".join("'" + t.replace("'", "''") + "'" for t in terms)
            owner = self.owner
            sql = (
                f"SELECT id, {RANK} AS r FROM {owner.manifest['table']}, to_tsquery(%s, %s) q "
                f"WHERE tsv @@ q AND {visible(owner.generation)} ORDER BY r DESC, id LIMIT %s"
            )
            for j, (cid, r) in enumerate(owner.db.conn.execute(sql, (self.config, tsquery, k))):
                ids[qi, j], scores[qi, j] = cid, r
        return ids, scores


@dataclass
class PgIndex(store.OpenIndex):
    """An index in PostgreSQL; `dir` is its URL without the password, `gen` names its generation.

    One thread at a time, as the folder store's SQLite connection: a search checks the generation once
    (refresh), reads chunks and vectors of that generation, and ends when it fetches its chunks (unpin).
    """

    url: str = ""
    lexical: str = "bm25"  # "bm25" (bm25s files) or "tsvector" (Postgres full-text search)
    pinned: float | None = None  # when the search in progress checked the generation; None between searches

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @property
    def where(self) -> str:
        return f"--store {self.dir}"

    @property
    def bm25(self):
        if self._bm25 is None:
            self._bm25 = PgTsvector(self) if self.lexical == "tsvector" else PgBM25(self)
        self._bm25.load()
        return self._bm25

    def refresh(self) -> None:
        """At the start of a search: reload if a build made another generation current (one small SELECT).
        The rest of the search (dense, lexical, its chunks) then reads that generation."""
        now = time.monotonic()
        if self.pinned is not None and now - self.pinned < PIN_SECONDS:
            return
        self.pinned = now
        row = self.db.conn.execute(f"SELECT generation FROM {MANIFEST} WHERE id = 1").fetchone()
        if row is not None and row[0] != self.generation:
            self.reload()

    def unpin(self) -> None:
        self.pinned = None

    def reload(self) -> None:
        """Read the generation that is current now; its embedder must be the one this reader queries with."""
        manifest = _current_manifest(self.db.conn, self.dir)
        was, now = self.manifest["embedder"], manifest["embedder"]
        if (was["name"], was["dim"]) != (now["name"], now["dim"]):
            raise IndexMismatch(
                f"index in {self.dir} was rebuilt with embedder {now['name']} ({now['dim']}-d) while this "
                f"reader was open with {was['name']}: restart it (e.g. `rag serve`) to read the new index"
            )
        if not _exists(self.db.conn, manifest["table"]):
            raise IndexCorrupt(
                f"index in {self.dir} is damaged ({manifest['table']} is missing): {_fix(self.dir)}"
            )
        log.info("index in %s: generation %d -> %d", self.dir, self.generation, manifest["generation"])
        self.manifest = manifest
        self.gen = PurePosixPath(f"g{manifest['generation']:06d}")


def _fix(where: str) -> str:
    return f"rebuild it with `rag index PATH --rebuild --store {where}`"


def open_pg(url: str) -> PgIndex:
    """The current index in the database at `url`, or an error that says how to fix it."""
    psycopg = _driver()
    where = display(url)
    _, options = split_url(url)
    conn = connect(url)
    try:
        manifest = _current_manifest(conn, where)
        _register_vector(conn, where)
        idx = PgIndex(
            dir=where,
            gen=PurePosixPath(f"g{manifest['generation']:06d}"),
            manifest=manifest,
            db=PgChunks(conn),
            dense=PgDense(conn),
            url=url,
            lexical=options.get("lexical", "bm25"),
        )
        idx.db.owner = idx.dense.owner = idx
        try:
            n = len(idx.db)
        except psycopg.errors.UndefinedTable as e:
            raise IndexCorrupt(
                f"index in {where} is damaged ({manifest['table']} is missing): {_fix(where)}"
            ) from e
        if n != manifest["chunks"]:
            raise IndexCorrupt(
                f"index in {where} is inconsistent ({n} chunks stored, manifest says {manifest['chunks']}): "
                f"{_fix(where)}"
            )
    except BaseException:
        conn.close()
        raise
    return idx


@contextmanager
def write_session(url: str) -> Iterator[object]:
    """A connection that may write the index: pgvector enabled, the writers' advisory lock held."""
    where = display(url)
    conn = connect(url)
    try:
        _ensure_vector(conn, where)
        if not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            raise IndexBusy(f"another rag index is writing to {where}; wait for it to finish")
        _register_vector(conn, where)
        yield conn
    finally:
        conn.close()  # ends the session, and the advisory lock with it


def _chunk_tables(conn) -> list[str]:
    return [
        t
        for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename LIKE 'rag\\_chunks\\_g%%'"
        ).fetchall()
    ]


def _copy(conn, name: str, rows) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(
            f'COPY {name} (id, doc, file, start, "end", text, vec, born) FROM STDIN WITH (FORMAT BINARY)'
        ) as copy,
    ):
        copy.set_types(["int8", "text", "text", "int4", "int4", "text", "vector", "int8"])
        for row in rows:
            copy.write_row(row)


def _copy_batches(conn, name: str, rows) -> None:
    """COPY `rows`, one committed transaction per BATCH_ROWS: a long build never holds one huge transaction,
    and what it wrote stays invisible until its generation becomes current."""
    it = iter(rows)
    while batch := list(itertools.islice(it, BATCH_ROWS)):
        with conn.transaction():
            _copy(conn, name, batch)


def _clean(conn, previous: dict) -> None:
    """Delete what no reader of the current generation sees: tables and rows of an interrupted build, rows
    the current generation superseded, other generations' BM25 files. The current table stays."""
    current = previous.get("table") or (table(previous["generation"]) if "generation" in previous else None)
    for t in _chunk_tables(conn):
        if t != current:
            conn.execute(f'DROP TABLE "{t}"')
    if previous.get("pg_layout") != LAYOUT or not _exists(conn, current):
        return
    g = int(previous["generation"])
    with conn.transaction():
        conn.execute(f"DELETE FROM {current} WHERE born > %s OR died <= %s", (g, g))
        conn.execute(f"UPDATE {current} SET died = NULL WHERE died > %s", (g,))
        if _exists(conn, BM25):
            conn.execute(f"DELETE FROM {BM25} WHERE generation <> %s", (g,))


def _new_table(conn, name: str, dim: int) -> None:
    conn.execute(
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, doc text NOT NULL, file text NOT NULL, "
        f'start integer NOT NULL, "end" integer NOT NULL, text text NOT NULL, vec vector({dim}) NOT NULL, '
        "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED, "
        "born bigint NOT NULL, died bigint)"
    )


def _index_table(conn, name: str) -> None:
    # after the COPY: one HNSW build over every row is much faster than row-by-row inserts
    conn.execute(f"CREATE INDEX ON {name} (file)")
    conn.execute(f'CREATE INDEX ON {name} (doc, start, "end")')
    conn.execute(f"CREATE INDEX ON {name} USING gin (tsv)")
    conn.execute(
        f"CREATE INDEX ON {name} USING hnsw (vec vector_ip_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


def _write_bm25(conn, name: str, generation: int) -> None:
    """Score BM25 over the generation's chunks (in id order) and store its files under that generation."""
    ids, texts = [], []
    for i, t in conn.execute(f"SELECT id, text FROM {name} WHERE {visible(generation)} ORDER BY id"):
        ids.append(i)
        texts.append(t)
    files = {}
    with tempfile.TemporaryDirectory() as d:
        store.build_bm25(texts, Path(d) / "bm25")
        for p in (Path(d) / "bm25").iterdir():
            files[p.name] = p.read_bytes()
    buf = io.BytesIO()
    np.save(buf, np.asarray(ids, np.int64))
    files["ids.npy"] = buf.getvalue()
    with conn.transaction():
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {BM25} "
            "(generation bigint, name text, data bytea NOT NULL, PRIMARY KEY (generation, name))"
        )
        conn.execute(f"DELETE FROM {BM25} WHERE generation = %s", (generation,))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {BM25} (generation, name, data) VALUES (%s, %s, %s)",
                [(generation, n, data) for n, data in files.items()],
            )


def write_index(
    conn,
    url: str,
    old: PgIndex | None,
    keep: list[tuple[str, str]],
    fresh: list[tuple[str, str, list[Chunk]]],
    vecs: np.ndarray,
    manifest: dict,
) -> None:
    """Make `keep` (unchanged since `old`) plus `fresh`, and `manifest`, the database's next generation.

    Without `old` (a first build, or --rebuild) the chunks go to a new table; with it, only the rows of
    changed and deleted files are replaced. Rows are committed per batch but no reader sees them before
    the last transaction makes the generation current.
    """
    psycopg = _driver()
    try:
        previous = _read_manifest(conn) or {}
        _clean(conn, previous)
        gen = int(previous.get("generation", 0)) + 1
        conn.execute("SET maintenance_work_mem = '512MB'")  # the HNSW graph built in memory
        if old is None:
            name, start = table(gen), int(previous.get("next_id", 0))
            _new_table(conn, name, manifest["embedder"]["dim"])
            _copy_batches(conn, name, _rows(fresh, vecs, start, gen))
            _index_table(conn, name)
        else:
            name, start = previous["table"], int(previous["next_id"])
            kept = {rel for rel, _ in keep}
            replaced = [rel for rel in old.manifest["files"] if rel not in kept]  # changed or deleted
            with conn.transaction():
                conn.execute(
                    f"UPDATE {name} SET died = %s WHERE died IS NULL AND file = ANY(%s)", (gen, replaced)
                )
            _copy_batches(conn, name, _rows(fresh, vecs, start, gen))
        _write_bm25(conn, name, gen)
        with conn.transaction():  # the switch: short, and the only write readers can see
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MANIFEST} "
                "(id integer PRIMARY KEY CHECK (id = 1), generation bigint, manifest jsonb NOT NULL)"
            )
            conn.execute(f"ALTER TABLE {MANIFEST} ADD COLUMN IF NOT EXISTS generation bigint")  # layout 1
            full = {
                **manifest,
                "generation": gen,
                "table": name,
                "next_id": start + len(vecs),
                "pg_layout": LAYOUT,
            }
            conn.execute(
                f"INSERT INTO {MANIFEST} (id, generation, manifest) VALUES (1, %s, %s) ON CONFLICT (id) "
                "DO UPDATE SET generation = EXCLUDED.generation, manifest = EXCLUDED.manifest",
                (gen, psycopg.types.json.Jsonb(full)),
            )
            for t in _chunk_tables(conn):
                if t != name:
                    conn.execute(f'DROP TABLE "{t}"')
            conn.execute(f"DROP TABLE IF EXISTS {LEGACY_BM25}")
    except psycopg.OperationalError as e:
        raise WriteFailed(
            f"lost PostgreSQL at {display(url)} while writing ({_first_line(e)}): rerun when it is back; "
            "the previous index is unchanged"
        ) from e
    except psycopg.Error as e:  # a full disk, a quota, a statement timeout
        raise WriteFailed(
            f"PostgreSQL at {display(url)} refused the index ({_first_line(e)}): fix that and rerun; "
            "the previous index is unchanged"
        ) from e


def _rows(fresh: list[tuple[str, str, list[Chunk]]], vecs: np.ndarray, start: int, born: int):
    """The COPY rows of `fresh`, with ids from `start` in order, born in generation `born`."""
    k = 0
    for rel, _, chunks in fresh:
        for c in chunks:
            yield (start + k, c.doc, rel, c.start, c.end, c.text, np.asarray(vecs[k], np.float32), born)
            k += 1
