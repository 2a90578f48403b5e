"""The ONNX embedder (bge-small): choice by folder, query prefix, pooling, limits, errors, and a real index.

Unit tests need no model; the marked integration tests run the real int8 ONNX bge-small-en from the
model store (pulled once per machine with pip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import HashEmbedder

from indexing.embed import get_embedder, is_onnx_folder
from indexing.onnx import OnnxEmbedder, encode_queries, folder_settings
from rag.errors import IndexMismatch, ModelUnavailable

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
QUERY = "Which NFL team represented the AFC at Super Bowl 50?"


def test_folder_kinds(tmp_path):
    onnx, st = tmp_path / "onnx", tmp_path / "st"
    for d in (onnx, st):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x")
        (d / "tokenizer.json").write_text("{}")
    (st / "modules.json").write_text("[]")  # a sentence-transformers folder that also exported ONNX
    assert is_onnx_folder(onnx) and not is_onnx_folder(st) and not is_onnx_folder(tmp_path)


def test_settings_come_from_the_preset_or_the_folder(tmp_path):
    bge = folder_settings(tmp_path, "bge-small")
    assert bge["pooling"] == "cls" and bge["query_prefix"].startswith("Represent this sentence")
    assert folder_settings(tmp_path, str(tmp_path)) == {"pooling": "mean", "query_prefix": ""}
    (tmp_path / "rag_model.json").write_text(json.dumps({"pooling": "cls", "query_prefix": "query: "}))
    assert folder_settings(tmp_path, str(tmp_path)) == {"pooling": "cls", "query_prefix": "query: "}


def test_queries_use_encode_when_an_embedder_has_no_prefix():
    emb = HashEmbedder()
    assert np.array_equal(encode_queries(emb, ["a b"]), emb.encode(["a b"]))


@pytest.fixture
def threads(monkeypatch):
    """threads(n): this process's cpu_threads() is n until the test ends (it is cached per process)."""
    from rag import hardware

    def set_to(n: int) -> None:
        monkeypatch.setenv("RAG_THREADS", str(n))
        hardware.cpu_threads.cache_clear()

    yield set_to
    monkeypatch.undo()
    hardware.cpu_threads.cache_clear()


def test_session_pool_keeps_the_order_uses_every_core_and_raises_a_workers_error(monkeypatch, threads):
    import threading
    import time

    from indexing import onnx

    monkeypatch.setattr(onnx, "make_session", lambda path, n: f"s{n}-{path.name}")
    threads(2)
    pool = onnx.SessionPool(Path("m.onnx"), "first")
    used, seen = set(), []

    def fn(session, x):
        used.add((session, threading.get_ident()))
        time.sleep(0.002)  # long enough that both workers take items
        return x * 10

    assert pool.map(fn, list(range(50)), progress=lambda d, n: seen.append((d, n)), every=8) == [
        x * 10 for x in range(50)
    ]
    assert {s for s, _ in used} == {"first", "s1-m.onnx"} and len({t for _, t in used}) == 2
    assert seen[-1] == (50, 50)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert pool.sessions(5) == ["first", "s1-m.onnx"]  # one per core, kept

    def bad(session, x):
        if x == 7:
            raise RuntimeError("boom")
        return x

    with pytest.raises(RuntimeError, match="boom"):
        pool.map(bad, list(range(30)))
    threads(1)
    assert pool.map(lambda s, x: s, list(range(20))) == ["first"] * 20


def test_missing_or_corrupt_files_name_the_pull_command(rag_home):
    folder = rag_home / "models" / "bge-small"
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(
        ModelUnavailable, match=r"model.onnx is missing: run `rag models pull bge-small --force`"
    ):
        OnnxEmbedder(folder, "bge-small")
    (folder / "model.onnx").write_bytes(b"corrupt")
    with pytest.raises(ModelUnavailable, match=r"does not load .*rag models pull bge-small --force"):
        OnnxEmbedder(folder, "bge-small")
    with pytest.raises(ValueError, match="pooling"):
        OnnxEmbedder(folder, "bge-small", pooling="max")


# ---------------------------------------------------------------- the real model


@pytest.fixture
def bge(real_models):
    return get_embedder("bge-small")


@pytest.mark.integration
def test_real_bge_ranks_the_answer_first_and_uses_the_query_prefix(bge):
    assert isinstance(bge, OnnxEmbedder) and bge.dim == 384 and bge.max_tokens == 510
    rel = (CORPUS / "Super_Bowl_50.txt").read_text()[:800]
    others = [
        "Photosynthesis converts light energy into chemical energy.",
        "Warsaw is the capital of Poland.",
    ]
    p = bge.encode([rel, *others])
    q = bge.encode_queries([QUERY])
    assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-5)
    sims = (q @ p.T)[0]
    assert sims.argmax() == 0 and sims[0] - sims[1:].max() > 0.2, sims
    assert not np.allclose(q, bge.encode([QUERY]), atol=1e-3)  # the prefix changes the vector


@pytest.mark.integration
def test_real_bge_vectors_do_not_depend_on_batch_mates_or_threads(bge, threads):
    texts = [(CORPUS / n).read_text()[:700] for n in ("Super_Bowl_50.txt", "Warsaw.txt", "Oxygen.txt")]
    texts += ["short text", "Warsaw is the capital of Poland."]
    threads(2)
    together = bge.encode(texts, batch_size=2)
    alone = np.stack([bge.encode([t])[0] for t in texts])
    assert np.array_equal(together, alone)  # each text runs on its own: no batch-mates, no padding
    threads(1)
    assert np.array_equal(bge.encode(texts), together)  # one worker or several: the same vectors
    seen = []
    bge.encode(texts * 20, batch_size=16, progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (100, 100) and [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.integration
def test_real_bge_counts_past_its_limit_and_encodes_long_text(bge):
    long = "The Broncos defeated the Panthers in Santa Clara. " * 120
    assert bge.count_tokens(long) > 1000  # real length, not capped at 512
    v = bge.encode([long, "short"])  # cut at 512 positions inside, no crash
    assert v.shape == (2, 384) and np.isfinite(v).all()


@pytest.mark.integration
def test_real_bge_index_search_and_mismatch(bge, tmp_path):
    from indexing.build import build_index
    from indexing.retrieve import open_retriever
    from rag.config import IndexConfig

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("Super_Bowl_50.txt", "Warsaw.txt", "Oxygen.txt"):
        (docs / name).write_text((CORPUS / name).read_text()[:6000])
    stats = build_index([docs], tmp_path / "idx", IndexConfig(embedder="bge-small"))
    manifest = json.loads(next((tmp_path / "idx").glob("g*/manifest.json")).read_text())
    assert manifest["embedder"] == {"name": "bge-small", "dim": 384, "max_tokens": 510}
    assert stats.chunks > 3
    hits = open_retriever(tmp_path / "idx", mode="dense").search(QUERY, 3)
    assert hits[0].chunk.doc == "Super_Bowl_50.txt"
    with pytest.raises(IndexMismatch, match="built with embedder bge-small, not minilm"):
        open_retriever(tmp_path / "idx", mode="dense", embedder_name="minilm")
