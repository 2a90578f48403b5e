"""The PostgreSQL store: chunks, pgvector vectors (HNSW) and the BM25 index in one database.

    rag index corpus/ --store postgresql://me@db:5432/rag
    open_pg("postgresql://me@db:5432/rag")  # -> PgIndex, read as store.OpenIndex is

Tables, in the connection's schema (set another with `?options=-csearch_path%3Dmyschema` in the URL):

    rag_manifest         one row: the manifest the folder store keeps in manifest.json, plus "generation"
    rag_chunks_g000003   id, doc, file, start, end, text, vec vector(dim); HNSW (inner product) on vec
    rag_bm25             the bm25s index files over the current chunks, and ids.npy (BM25 row -> chunk id)

Full-text search is bm25s kept beside the chunks, not Postgres's tsvector: ts_rank is not BM25 (no IDF
saturation, no length normalisation by default), so `bm25` and `hybrid` would rank differently from the
folder store, and recall@5 must match it. The price: every build re-scores BM25 over all chunks.

Every build is one transaction: readers keep seeing the previous index until COMMIT, and an interrupted
`rag index` (Ctrl-C, kill -9, a lost connection) rolls back. A full build COPYs into a new generation table
and indexes it, then drops the old one; an update deletes and inserts only the rows of changed files.
One writer at a time: a session advisory lock, released by the server when the writer goes away.
"""

from __future__ import annotations

import io
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from indexing import store
from indexing.backends import display
from rag.errors import BackendUnavailable, BadInput, IndexBusy, IndexCorrupt, IndexMissing, WriteFailed
from rag.types import Chunk

log = logging.getLogger(__name__)

MANIFEST = "rag_manifest"
BM25 = "rag_bm25"
LOCK_KEY = 7_496_035_101  # pg_try_advisory_lock key of rag index writers
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100
EF_SEARCH = 100  # candidates HNSW visits per query (at least the number asked for)
SCALE = "pip install 'rag-reader[scale]'"


def table(generation: int) -> str:
    """The chunk table of a generation.

    >>> table(3)
    'rag_chunks_g000003'
    """
    return f"rag_chunks_g{int(generation):06d}"


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
    timeout = {} if "connect_timeout" in url else {"connect_timeout": 10}
    try:
        return psycopg.connect(url, autocommit=True, **timeout)
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


def _read_manifest(conn) -> dict | None:
    if conn.execute(f"SELECT to_regclass('{MANIFEST}')").fetchone()[0] is None:
        return None
    row = conn.execute(f"SELECT manifest FROM {MANIFEST} WHERE id = 1").fetchone()
    return None if row is None else row[0]


def read_manifest(url: str) -> dict | None:
    """The database's current manifest, or None when nothing was indexed there."""
    with connect(url) as conn:
        return _read_manifest(conn)


class PgChunks:
    """The chunk store of one generation table (what store.ChunkDB answers, from Postgres)."""

    def __init__(self, conn, name: str):
        self.conn, self.table = conn, name

    def __len__(self) -> int:
        return self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0]

    def get(self, ids: list[int]) -> list[Chunk]:
        if not ids:
            return []
        rows = self.conn.execute(
            f'SELECT id, doc, start, "end", text FROM {self.table} WHERE id = ANY(%s)',
            ([int(i) for i in ids],),
        )
        by_id = {r[0]: store.make_chunk(*r[1:]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def by_id(self, chunk_id: str) -> Chunk | None:
        """The chunk whose id is `chunk_id`, else None: a lookup in the table, never a path."""
        key = store.parse_chunk_id(chunk_id)
        if key is None:
            return None
        row = self.conn.execute(
            f'SELECT doc, start, "end", text FROM {self.table} WHERE doc = %s AND start = %s AND "end" = %s LIMIT 1',
            key,
        ).fetchone()
        return None if row is None else store.make_chunk(*row)

    def by_file(self, file: str) -> list[tuple[Chunk, np.ndarray]]:
        rows = self.conn.execute(
            f'SELECT doc, start, "end", text, vec FROM {self.table} WHERE file = %s ORDER BY id',
            (file,),
            binary=True,  # the vectors' exact float32 bytes
        ).fetchall()
        return [(store.make_chunk(d, s, e, t), v.to_numpy()) for d, s, e, t, v in rows]

    def all_texts(self) -> list[str]:
        return [r[0] for r in self.conn.execute(f"SELECT text FROM {self.table} ORDER BY id")]

    def close(self) -> None:
        self.conn.close()


class PgDense:
    """What DenseRetriever asks of a FAISS index (ntotal, search), answered by pgvector's HNSW index.

    Scores are inner products of unit vectors, as in the folder store; ids missing from a short answer are -1.
    """

    def __init__(self, conn, name: str, ntotal: int):
        self.conn, self.table, self.ntotal = conn, name, ntotal
        self._ef = None

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        ef = min(1000, max(EF_SEARCH, n))  # HNSW returns at most ef_search rows
        if ef != self._ef:
            self.conn.execute(f"SET hnsw.ef_search = {ef}")
            self._ef = ef
        scores = np.full((len(queries), n), -np.inf, np.float32)
        ids = np.full((len(queries), n), -1, np.int64)
        sql = f"SELECT id, vec <#> %s AS d FROM {self.table} ORDER BY d LIMIT %s"  # <#>: minus inner product
        for i, q in enumerate(np.asarray(queries, np.float32)):
            for j, (cid, d) in enumerate(self.conn.execute(sql, (q, n))):
                ids[i, j], scores[i, j] = cid, -d
        return scores, ids


class RowsBM25:
    """A bm25s index whose rows are mapped to chunk ids (ids have gaps after incremental updates)."""

    def __init__(self, bm25, ids: np.ndarray):
        self.bm25, self.ids = bm25, ids

    def retrieve(self, tokens, k: int, **kw):
        rows, scores = self.bm25.retrieve(tokens, k=k, **kw)
        return self.ids[rows], scores


@dataclass
class PgIndex(store.OpenIndex):
    """An index in PostgreSQL; `dir` is its URL without the password, `gen` names its chunk table."""

    url: str = ""

    @property
    def where(self) -> str:
        return f"--store {self.dir}"

    @property
    def bm25(self):
        if self._bm25 is None:
            import bm25s

            rows = dict(self.db.conn.execute(f"SELECT name, data FROM {BM25}").fetchall())
            try:
                ids = np.load(io.BytesIO(rows.pop("ids.npy")))
                with tempfile.TemporaryDirectory() as d:
                    for name, data in rows.items():
                        (Path(d) / name).write_bytes(data)
                    self._bm25 = RowsBM25(bm25s.BM25.load(d), ids)
            except (KeyError, OSError, ValueError) as e:
                raise IndexCorrupt(
                    f"index in {self.dir} is damaged (bm25: {e}): rebuild it with "
                    f"`rag index PATH --rebuild --store {self.dir}`"
                ) from e
        return self._bm25


def open_pg(url: str) -> PgIndex:
    """The current index in the database at `url`, or an error that says how to fix it."""
    psycopg = _driver()
    where = display(url)
    fix = f"rebuild it with `rag index PATH --rebuild --store {where}`"
    conn = connect(url)
    try:
        manifest = _read_manifest(conn)
        if manifest is None:
            raise IndexMissing(f"no index in {where}: run `rag index PATH --store {where}` first")
        if manifest.get("format_version") != store.FORMAT_VERSION:
            raise IndexCorrupt(
                f"index in {where} has format {manifest.get('format_version')}, this rag reads "
                f"{store.FORMAT_VERSION}: {fix}"
            )
        _register_vector(conn, where)
        name = table(manifest["generation"])
        db = PgChunks(conn, name)
        try:
            n = len(db)
        except psycopg.errors.UndefinedTable as e:
            raise IndexCorrupt(f"index in {where} is damaged ({name} is missing): {fix}") from e
        if n != manifest["chunks"]:
            raise IndexCorrupt(
                f"index in {where} is inconsistent ({n} chunks stored, manifest says {manifest['chunks']}): {fix}"
            )
    except BaseException:
        conn.close()
        raise
    gen = PurePosixPath(f"g{manifest['generation']:06d}")
    return PgIndex(dir=where, gen=gen, manifest=manifest, db=db, dense=PgDense(conn, name, n), url=url)


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


def _copy(conn, name: str, rows) -> None:
    with (
        conn.cursor() as cur,
        cur.copy(
            f'COPY {name} (id, doc, file, start, "end", text, vec) FROM STDIN WITH (FORMAT BINARY)'
        ) as copy,
    ):
        copy.set_types(["int8", "text", "text", "int4", "int4", "text", "vector"])
        for row in rows:
            copy.write_row(row)


def _write_bm25(conn, name: str) -> None:
    """Score BM25 over the table's chunks (in id order) and store its files beside them."""
    ids, texts = [], []
    for i, t in conn.execute(f"SELECT id, text FROM {name} ORDER BY id"):
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
    conn.execute(f"CREATE TABLE IF NOT EXISTS {BM25} (name text PRIMARY KEY, data bytea NOT NULL)")
    conn.execute(f"DELETE FROM {BM25}")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {BM25} (name, data) VALUES (%s, %s)", list(files.items()))


def _new_table(conn, name: str, dim: int, rows) -> None:
    conn.execute(
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, doc text NOT NULL, file text NOT NULL, "
        f'start integer NOT NULL, "end" integer NOT NULL, text text NOT NULL, vec vector({dim}) NOT NULL)'
    )
    _copy(conn, name, rows)
    # indexes after the COPY: one HNSW build over every row is much faster than row-by-row inserts
    conn.execute(f"CREATE INDEX ON {name} (file)")
    conn.execute(f'CREATE INDEX ON {name} (doc, start, "end")')
    conn.execute(
        f"CREATE INDEX ON {name} USING hnsw (vec vector_ip_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
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
    """Make the database hold `keep` (unchanged since `old`) plus `fresh`, and `manifest`, in one transaction.

    Without `old` (a first build, or --rebuild) the chunks go to a new generation table; with it, only the
    rows of changed and deleted files are replaced. Nothing is visible to readers before COMMIT.
    """
    psycopg = _driver()
    rows_of = _rows(fresh, vecs)
    try:
        with conn.transaction():
            conn.execute("SET LOCAL maintenance_work_mem = '512MB'")  # the HNSW graph built in memory
            if old is None:
                previous = _read_manifest(conn) or {}
                gen = int(previous.get("generation", 0)) + 1
                name = table(gen)
                _new_table(conn, name, manifest["embedder"]["dim"], rows_of(0))
                stale = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename LIKE 'rag\\_chunks\\_g%%' AND tablename <> %s",
                    (name,),
                ).fetchall()
                for (t,) in stale:
                    conn.execute(f'DROP TABLE "{t}"')
            else:
                gen, name = old.manifest["generation"], old.db.table
                kept = {rel for rel, _ in keep}
                gone = [rel for rel in old.manifest["files"] if rel not in kept]
                conn.execute(f"DELETE FROM {name} WHERE file = ANY(%s)", (gone,))
                start = conn.execute(f"SELECT coalesce(max(id) + 1, 0) FROM {name}").fetchone()[0]
                _copy(conn, name, rows_of(start))
            _write_bm25(conn, name)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MANIFEST} "
                "(id integer PRIMARY KEY CHECK (id = 1), manifest jsonb NOT NULL)"
            )
            conn.execute(
                f"INSERT INTO {MANIFEST} (id, manifest) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET manifest = EXCLUDED.manifest",
                (psycopg.types.json.Jsonb({**manifest, "generation": gen}),),
            )
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


def _rows(fresh: list[tuple[str, str, list[Chunk]]], vecs: np.ndarray):
    """rows(start) -> the COPY rows of `fresh`, with ids from `start` in order."""

    def rows(start: int):
        k = 0
        for rel, _, chunks in fresh:
            for c in chunks:
                yield (start + k, c.doc, rel, c.start, c.end, c.text, np.asarray(vecs[k], np.float32))
                k += 1

    return rows
