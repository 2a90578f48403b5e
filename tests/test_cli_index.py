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
    assert set(hits[0]) == {"rank", "score", "rerank_score", "source", "start", "end", "text"}
    assert hits[0]["rerank_score"] == 1.0  # reranked by default (conftest's OverlapScorer: one shared word)
    r = runner.invoke(
        app, ["search", "smallest planet", "-k", "1", "--json", "--mode", "bm25", "--no-rerank"]
    )
    assert json.loads(r.stdout)[0]["rerank_score"] is None

    r = runner.invoke(app, ["index", str(docs), "--json"])  # no --embedder: the index keeps fake-hash
    assert r.exit_code == 0 and "keeping the index's embedder fake-hash" in r.stderr, r.output

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


def _search(*args: str) -> list[dict]:
    r = runner.invoke(app, ["search", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_rag_toml_sets_search_defaults_and_flags_override(docs, tmp_path, monkeypatch):
    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash"])
    monkeypatch.chdir(tmp_path)  # rag.toml is read from the working directory
    query = "smallest planet Broncos"  # both files match, in BM25 and in dense
    default = _search(query)  # hybrid, k=5
    bm25_top1 = _search(query, "--mode", "bm25", "-k", "1")
    assert len(default) == 2 and len(bm25_top1) == 1 and default[0]["score"] != bm25_top1[0]["score"]

    (tmp_path / "rag.toml").write_text('[retrieval]\nmode = "bm25"\nk = 1\n')
    assert _search(query) == bm25_top1  # the file's mode and k, not the built-in defaults
    assert _search(query, "--mode", "hybrid", "-k", "5") == default  # flags win over the file


def test_rag_toml_rrf_k_changes_hybrid_scores(docs, tmp_path, monkeypatch):
    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash"])
    monkeypatch.chdir(tmp_path)
    # mercury.md is first in both rankings, so its fused score is 2 / (rrf_k + 1)
    assert _search("smallest planet")[0]["score"] == round(2 / 61, 6)
    (tmp_path / "rag.toml").write_text("[retrieval]\nrrf_k = 10\n")
    assert _search("smallest planet")[0]["score"] == round(2 / 11, 6)


def test_retrieval_config_reaches_the_retriever(docs, tmp_path, monkeypatch):
    import indexing.retrieve as retrieve
    from rag import cli
    from rag.config import RetrievalConfig

    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash"])
    idx = tmp_path / "rag_home" / "index"
    r = retrieve.open_retriever(idx, cfg=RetrievalConfig(rrf_k=7, candidates=3, rerank=False))
    assert isinstance(r, retrieve.HybridRetriever) and (r.rrf_k, r.candidates) == (7, 3)
    r = retrieve.open_retriever(idx, cfg=RetrievalConfig(rrf_k=7, candidates=3))  # reranked by default
    assert isinstance(r.inner, retrieve.HybridRetriever) and (r.inner.rrf_k, r.inner.candidates) == (7, 3)
    bm25 = retrieve.open_retriever(idx, cfg=RetrievalConfig(mode="bm25", rerank=False))
    assert isinstance(bm25, retrieve.BM25Retriever)
    r = cli._ask_retriever(idx, "hybrid", RetrievalConfig(rrf_k=7, candidates=3))  # what `rag ask` opens
    assert (r.inner.rrf_k, r.inner.candidates, r.candidates) == (7, 3, RetrievalConfig().rerank_candidates)

    opened = []
    real = retrieve.open_retriever
    monkeypatch.setattr(
        retrieve, "open_retriever", lambda *a, **kw: opened.append(real(*a, **kw)) or opened[-1]
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("[retrieval]\nrrf_k = 7\ncandidates = 3\n")
    _search("smallest planet")
    assert (opened[0].inner.rrf_k, opened[0].inner.candidates) == (7, 3)


def test_search_shows_where_a_document_is(docs):
    from indexing.retrieve import memory_retriever, open_retriever
    from rag.config import default_index_dir
    from rag.types import Chunk, IndexedRetriever

    runner.invoke(app, ["index", str(docs), "--embedder", "fake-hash"])
    r = open_retriever(default_index_dir(), mode="bm25")
    assert isinstance(r, IndexedRetriever)
    assert r.source_path("mercury.md") == str((docs / "mercury.md").resolve())
    mem = memory_retriever([Chunk("a.txt:0-7", "a.txt", "mercury", 0, 7)])
    assert mem.source_path("a.txt") == "a.txt"  # no index: the stored name
