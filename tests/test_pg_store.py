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

from indexing.backends import display
from indexing.build import build_index
from indexing.embed import register_embedder
from indexing.retrieve import open_retriever
from rag.cli import app
from rag.config import IndexConfig
from rag.errors import BackendUnavailable, IndexBusy, IndexMissing

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
    from indexing import pg

    with pg.write_session(pg_url):
        with pytest.raises(IndexBusy, match="another rag index is writing"):
            build_index([docs], pg_url, CFG, embedder=HashEmbedder())
    assert build_index([docs], pg_url, CFG, embedder=HashEmbedder()).files_indexed == 2


def test_display_hides_the_password():
    assert (
        display("postgresql://me:s3cret@db:5432/rag?sslmode=require")
        == "postgresql://me@db:5432/rag?sslmode=require"
    )
