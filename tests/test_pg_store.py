"""The PostgreSQL store through the command line, and the one-line errors a database can cause.

The store-agnostic indexing tests (incremental, deletion, atomicity, the three modes) run on both stores
in tests/test_indexing.py (the `where` fixture); these are Postgres's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import test_index_robustness
from fakes import HashEmbedder
from typer.testing import CliRunner

from indexing import pg
from indexing.backends import display, open_index
from indexing.build import build_index
from indexing.embed import register_embedder
from indexing.retrieve import open_retriever
from rag.cli import app
from rag.config import IndexConfig, RetrievalConfig
from rag.errors import BackendUnavailable, BadInput, IndexBusy, IndexCorrupt, IndexMismatch, IndexMissing

runner = CliRunner()
# test_index_robustness's fixtures: two small files, and the fake-hash embedder registered for every test
docs, fake_embedder = test_index_robustness.docs, test_index_robustness.fake_embedder
CFG = IndexConfig(chunk_tokens=12, chunk_overlap=3)


def _json(r) -> object:
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def one_line(r, message: str) -> None:
    assert r.exit_code == 1, r.output
    assert message in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) <= 3


def test_index_and_search_by_url_and_from_rag_toml(docs, pg_url, tmp_path, monkeypatch):
    stats = _json(
        runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash", "--store", pg_url, "--json"])
    )
    assert (stats["files_indexed"], stats["chunks"]) == (2, 2)
    hits = _json(
        runner.invoke(app, ["search", "smallest planet", "--store", pg_url, "--no-rerank", "--json"])
    )
    assert hits[0]["source"] == "mercury.md"
    assert not (tmp_path / "rag_home" / "index").exists()  # nothing went to the folder store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text(f'[index]\nembedder = "fake-hash"\nstore = "{pg_url}"\n')
    (docs / "mercury.md").unlink()
    stats = _json(runner.invoke(app, ["index", str(docs), "--json"]))
    assert (stats["files_removed"], stats["files_unchanged"], stats["chunks"]) == (1, 1, 1)
    hits = _json(runner.invoke(app, ["search", "Broncos", "--mode", "bm25", "--no-rerank", "--json"]))
    assert [h["source"] for h in hits] == ["broncos.txt"]


def test_a_database_built_with_another_embedder(docs, pg_url):
    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash", "--store", pg_url])
    register_embedder("fake-other", lambda: type("E", (HashEmbedder,), {"name": "fake-other"})())
    r = runner.invoke(app, ["index", str(docs), "--embedder", "fake-other", "--store", pg_url])
    one_line(r, "built with embedder fake-hash (64-d), not fake-other: rerun with --rebuild")
    assert "another --store than" in r.stderr


def test_unreachable_server_is_one_line(docs):
    r = runner.invoke(app, ["search", "x", "--store", "postgresql://me@127.0.0.1:1/rag", "--no-rerank"])
    one_line(r, "cannot reach PostgreSQL at postgresql://me@127.0.0.1:1/rag")
    assert "start the server, or fix the host and port" in r.stderr


def test_no_index_in_the_database(pg_url):
    with pytest.raises(IndexMissing, match="run `rag index PATH --store"):
        open_retriever(pg_url, embedder=HashEmbedder())


@pytest.fixture(scope="module")
def roles(pg_server):
    """A role with a password (scram, checked even over the socket) and one that may not create extensions."""
    hba = Path(pg_server.pgdata) / "pg_hba.conf"
    hba.write_text("local all pwuser scram-sha-256\n" + hba.read_text())
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE ROLE pwuser LOGIN PASSWORD 'right'")
        conn.execute("CREATE ROLE plain LOGIN")
        conn.execute("CREATE DATABASE noext OWNER plain")
        conn.execute("SELECT pg_reload_conf()")
    return pg_server


def _as(server, user: str, db: str) -> str:
    return server.get_uri(db).replace("postgresql://postgres:@", f"postgresql://{user}@")


def test_wrong_password_is_one_line(roles, docs):
    url = _as(roles, "pwuser:wrong", "postgres")
    with pytest.raises(BackendUnavailable, match="refused the password .*~/.pgpass") as e:
        build_index([docs], url, CFG, embedder=HashEmbedder())
    assert "wrong" not in str(e.value)  # the password is never printed


def test_missing_extension_names_create_extension(roles, docs):
    with pytest.raises(BackendUnavailable, match=r"may not enable it: .*`CREATE EXTENSION vector;`"):
        build_index([docs], _as(roles, "plain", "noext"), CFG, embedder=HashEmbedder())


def test_a_second_writer_fails_at_once(docs, pg_url):
    with pg.write_session(pg_url):
        with pytest.raises(IndexBusy, match="another rag index is writing"):
            build_index([docs], pg_url, CFG, embedder=HashEmbedder())
    assert build_index([docs], pg_url, CFG, embedder=HashEmbedder()).files_indexed == 2


def test_display_hides_the_password():
    assert (
        display("postgresql://me:s3cret@db:5432/rag?sslmode=require")
        == "postgresql://me@db:5432/rag?sslmode=require"
    )


# ---------------------------------------------------------------- generations
TOPICS = [
    "volcanoes erupt lava",
    "glaciers carve valleys",
    "tides follow the moon",
    "comets have tails",
    "deserts get little rain",
    "coral builds reefs",
    "bats hunt by echo",
    "owls fly at night",
]
QUERIES = ["lava eruption", "moon tides", "night owls", "rain in deserts", "reefs of coral"]
MODES = ("dense", "bm25", "hybrid")
VOLCANOES = (
    "Volcanoes sleep for centuries. Then they wake with ash. Villages nearby move away. Farmers return."
)
PENGUINS = "Penguins cannot fly but swim fast. They nest on the ice. Chicks huddle together in the cold wind."


@pytest.fixture
def topics(tmp_path) -> Path:
    """Eight one-topic files, a few chunks each (so a build writes several batches)."""
    d = tmp_path / "topics"
    d.mkdir()
    for i, t in enumerate(TOPICS):
        (d / f"t{i}.txt").write_text(f"{t.capitalize()} in file {i}.\n\n" + f"More about how {t}. " * 6)
    return d


def _answers(url: str, emb) -> dict:
    """Every mode's top 3 (chunk id, score) for QUERIES, from a newly opened reader."""
    return _answers_of({m: _reader(url, m, emb) for m in MODES})


def _reader(url: str, mode: str, emb):
    return open_retriever(url, mode=mode, cfg=RetrievalConfig(rerank=False), embedder=emb)


def _answers_of(readers: dict) -> dict:
    return {
        (m, q): [(h.chunk.id, round(h.score, 6)) for h in r.search(q, 3)]
        for m, r in readers.items()
        for q in QUERIES
    }


def _rows(url: str) -> dict:
    """What the database holds besides the current generation's rows: tables, rows never made current."""
    with pg.connect(url) as conn:
        m = pg._read_manifest(conn)
        t, g = m["table"], m["generation"]
        return {
            "tables": sorted(pg._chunk_tables(conn)),
            "unborn": conn.execute(f"SELECT count(*) FROM {t} WHERE born > %s", (g,)).fetchone()[0],
            "generation": g,
        }


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["embedding", "writing", "writing a rebuild"])
def test_an_interrupted_build_leaves_the_old_index_and_the_rerun_cleans_up(
    topics, pg_url, monkeypatch, where
):
    emb = HashEmbedder()
    build_index([topics], pg_url, CFG, embedder=emb)
    before = _answers(pg_url, emb)
    open_before = {m: _reader(pg_url, m, emb) for m in MODES}  # a reader that stays open through it all
    assert _answers_of(open_before) == before
    state = _rows(pg_url)

    (topics / "t0.txt").write_text(VOLCANOES)  # changed
    (topics / "t1.txt").unlink()  # deleted
    (topics / "t8.txt").write_text(PENGUINS)  # new
    monkeypatch.setattr(pg, "BATCH_ROWS", 1)  # one chunk per committed transaction
    if where == "embedding":
        monkeypatch.setattr(emb, "encode", lambda *a, **k: (_ for _ in ()).throw(Interrupted()))
    else:
        copies = iter(range(3))
        real = pg._copy

        def copy_then_fail(*a):
            if next(copies, None) is None:  # three batches committed, then the process "dies"
                raise Interrupted
            real(*a)

        monkeypatch.setattr(pg, "_copy", copy_then_fail)
    with pytest.raises(Interrupted):
        build_index([topics], pg_url, CFG, embedder=emb, rebuild=where == "writing a rebuild")
    monkeypatch.undo()

    after = _rows(pg_url)
    if where == "writing":  # the committed batches are there, unborn: rows of a generation never made current
        assert after["unborn"] == 3 and after["tables"] == state["tables"]
    if where == "writing a rebuild":  # a new table beside the current one, never made current
        assert len(after["tables"]) == 2 and state["tables"][0] in after["tables"]
    assert after["generation"] == state["generation"]
    assert _answers(pg_url, emb) == before  # readers opened now ...
    assert _answers_of(open_before) == before  # ... and those open all along answer exactly as before

    calls = emb.calls
    stats = build_index([topics], pg_url, CFG, embedder=emb)
    assert (stats.files_indexed, stats.files_removed, stats.files_unchanged) == (2, 1, 6)  # by file hash
    files = open_index(pg_url).manifest["files"]
    # only the changed and the new file's chunks were embedded
    assert (
        emb.calls - calls
        == stats.chunks_embedded
        == files["t0.txt"]["chunks"] + files["t8.txt"]["chunks"]
        > 3
    )
    done = _rows(pg_url)
    assert done["generation"] == state["generation"] + 1 and done["unborn"] == 0
    assert len(done["tables"]) == 1
    fresh = _answers(pg_url, emb)
    assert fresh != before and _answers_of(open_before) == fresh  # the open readers moved to it
    assert open_index(pg_url).db.by_file("t1.txt") == []
    assert _reader(pg_url, "bm25", emb).search("penguins swim", 1)[0].chunk.doc == "t8.txt"


def test_a_long_lived_reader_follows_new_builds(topics, pg_url):
    emb = HashEmbedder()
    build_index([topics], pg_url, CFG, embedder=emb)
    readers = {m: _reader(pg_url, m, emb) for m in MODES}
    idx = readers["bm25"].index
    manifest = idx.manifest
    readers["bm25"].search("lava", 3)
    assert idx.manifest is manifest  # no build, no reload: one SELECT of the generation number per search

    (topics / "t8.txt").write_text("Penguins cannot fly but swim fast.")
    (topics / "t2.txt").unlink()
    build_index([topics], pg_url, CFG, embedder=emb)  # an update: same table, rows of a new generation
    for m, r in readers.items():
        assert r.search("penguins swim fast", 1)[0].chunk.doc == "t8.txt", m
        assert all(h.chunk.doc != "t2.txt" for h in r.search("tides follow the moon", 10)), m
    assert _answers_of(readers) == _answers(pg_url, emb)
    assert idx.generation == 2

    dense = readers["dense"].index
    stale = [i for i, _ in readers["dense"].ranked("comets have tails", 3)]
    dense.unpin()
    build_index([topics], pg_url, CFG, embedder=emb, rebuild=True)  # a new table; the old one is dropped
    # a search that straddles the switch finds nothing rather than another generation's chunks
    assert dense.db.get(stale) == [] and dense.generation == 3
    assert _answers_of(readers) == _answers(pg_url, emb)

    register_embedder("fake-other", lambda: type("E", (HashEmbedder,), {"name": "fake-other"})())
    build_index(
        [topics], pg_url, CFG, embedder=type("E", (HashEmbedder,), {"name": "fake-other"})(), rebuild=True
    )
    with pytest.raises(IndexMismatch, match="rebuilt with embedder fake-other .*restart it"):
        readers["hybrid"].search("lava", 3)


def test_tsvector_lexical_mode(topics, pg_url):
    emb = HashEmbedder()
    build_index([topics], pg_url, CFG, embedder=emb)
    url = pg.with_option(pg_url, "lexical", "tsvector")
    assert pg.split_url(url) == (pg_url, {"lexical": "tsvector"})
    ts = _reader(url, "bm25", emb)
    assert isinstance(ts.index.bm25, pg.PgTsvector)
    assert ts.search("Which glaciers carved the valleys?", 1)[0].chunk.doc == "t1.txt"  # stems: carve, valley
    assert ts.search("the of and", 3) == []  # only stopwords
    assert _reader(url, "hybrid", emb).search("bats hunting", 1)[0].chunk.doc == "t6.txt"
    (topics / "t1.txt").unlink()
    build_index([topics], pg_url, CFG, embedder=emb)
    assert all(h.chunk.doc != "t1.txt" for h in ts.search("glaciers valleys", 5))
    with pytest.raises(BadInput, match=r"lexical=bm26 is not one of bm25, tsvector"):
        open_index(pg.with_option(pg_url, "lexical", "bm26"))


def test_a_database_of_the_earlier_layout_asks_for_a_rebuild(topics, pg_url):
    build_index([topics], pg_url, CFG, embedder=HashEmbedder())
    with pg.connect(pg_url) as conn:
        conn.execute(f"UPDATE {pg.MANIFEST} SET manifest = manifest - 'pg_layout'")
    with pytest.raises(
        IndexCorrupt, match="table layout 1, this rag reads 2: rebuild it with `rag index PATH --rebuild"
    ):
        open_index(pg_url)
    assert build_index([topics], pg_url, CFG, embedder=HashEmbedder(), rebuild=True).files_indexed == 8
    assert len(open_index(pg_url)) > 8
