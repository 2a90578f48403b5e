"""`rag index` and `rag search` end to end through the CLI, with a fake embedder."""

from __future__ import annotations

import json

import pytest
from fakes import HashEmbedder
from typer.testing import CliRunner

from indexing.embed import register_embedder
from rag.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def fake_embedder():
    register_embedder("fake-hash", HashEmbedder)


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "broncos.txt").write_text("The Denver Broncos won Super Bowl 50 in Santa Clara.")
    (d / "mercury.md").write_text("Mercury is the smallest planet.")
    (d / "photo.png").write_bytes(b"\x89PNG")
    return d


def test_index_then_search_json(docs, rag_home):
    r = runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash", "--json"])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["files_indexed"] == 2 and stats["files_skipped"] == 1 and stats["chunks"] == 2
    assert set(stats) == {
        "files_indexed",
        "files_unchanged",
        "files_removed",
        "files_skipped",
        "chunks",
        "seconds",
        "chunks_embedded",
    }
    assert "skipped photo.png" in r.stderr
    assert (rag_home / "index" / "CURRENT").exists()

    r = runner.invoke(app, ["search", "smallest planet", "-k", "1", "--json", "--mode", "bm25"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert hits[0]["source"] == "mercury.md" and hits[0]["rank"] == 1
    assert set(hits[0]) == {"rank", "score", "source", "start", "end", "text"}

    r = runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash", "--json"])
    assert json.loads(r.stdout.strip().splitlines()[-1])["files_unchanged"] == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["index", "/no/such/folder", "--embedder", "fake-hash"], "does not exist"),
        (["search", "anything"], "run `rag index PATH` first"),
        (["search", "anything", "--mode", "fuzzy"], "choose one of dense, bm25, hybrid"),
    ],
)
def test_errors_are_one_line_with_exit_1(args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    assert message in r.stderr
    assert "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) <= 2  # one message (rich may wrap a long path once)


def test_search_with_another_embedder_index_errors(docs, tmp_path):
    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash"])
    register_embedder("fake-other", lambda: type("E", (HashEmbedder,), {"name": "fake-other"})())
    r = runner.invoke(app, ["index", str(docs), "--embedder", "fake-other"])
    assert r.exit_code == 1 and "--rebuild" in r.stderr
