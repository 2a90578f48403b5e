"""Loaders, chunk offsets, incremental builds, atomicity and retrieval, with a fake embedder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import HashEmbedder, tiny_st

from indexing import backends, load, store
from indexing.build import build_index
from indexing.chunk import chunk_text, make_splitter
from indexing.retrieve import as_langchain, memory_retriever, open_retriever, rrf
from rag.config import IndexConfig
from rag.errors import BadInput, IndexCorrupt, IndexMismatch, IndexMissing
from rag.types import Chunk

CFG = IndexConfig(chunk_tokens=12, chunk_overlap=3)


def make_pdf(path: Path, text: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType, so the text is extractable
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.text(0.1, 0.5, text)
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture
def docs(tmp_path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "broncos.txt").write_text(
        "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50.\n\n"
        "The game was played at Levi's Stadium in Santa Clara, California."
    )
    (d / "mercury.md").write_text("# Mercury\n\nMercury is the smallest planet and the closest to the Sun.")
    (d / "guide.rst").write_text("Install\n=======\n\nRun pip install to set up the tool.")
    (d / "paris.html").write_text(
        "<html><head><title>T</title><style>p{}</style><script>var secret = 1;</script></head>"
        "<body><h1>France</h1><p>Paris is the capital of France.</p></body></html>"
    )
    (d / "faq.jsonl").write_text(
        json.dumps({"text": "Refunds are accepted within 30 days."})
        + "\n"
        + json.dumps({"content": "Shipping is free."})
        + "\n"
    )
    make_pdf(d / "tower.pdf", "The Eiffel Tower was completed in 1889.")
    return d


def build(docs: Path, idx: Path, emb: HashEmbedder | None = None, **kw):
    return build_index([docs], idx, CFG, embedder=emb or HashEmbedder(), **kw)


# ---------------------------------------------------------------- loaders
def test_each_loader_extracts_text(docs):
    got = {d.doc: d.text for p, rel in load.iter_files([docs]) for d in load.load_file(p, rel)}
    assert "Denver Broncos" in got["broncos.txt"]
    assert got["mercury.md"].startswith("# Mercury")
    assert "pip install" in got["guide.rst"]
    assert got["paris.html"] == "France\nParis is the capital of France."  # no script, style or title
    assert got["faq.jsonl#1"] == "Refunds are accepted within 30 days."
    assert got["faq.jsonl#2"] == "Shipping is free."
    assert "Eiffel Tower" in got["tower.pdf"]


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("img.png", b"\x89PNG\r\n", "unsupported"),
        ("bin.txt", b"abc\x00def", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.md", b"  \n\n", "empty"),
        ("bad.jsonl", b'{"text": "ok"}\nnot json\n', "line 2"),
        ("broken.pdf", b"%PDF-1.4 garbage", "PDF"),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path, name, data, reason):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(load.Skip, match=reason):
        load.load_file(p, name)


def test_hidden_and_ragignored_files_are_not_listed(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("x")
    (tmp_path / ".hidden.txt").write_text("x")
    (tmp_path / "README.md").write_text("license")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / ".ragignore").write_text("# comment\nREADME.md\n")
    assert [rel for _, rel in load.iter_files([tmp_path])] == ["a.txt"]


# ---------------------------------------------------------------- chunking
def test_chunk_offsets_point_at_the_chunk_text():
    text = " ".join(f"Alpha{i} beta gamma delta." for i in range(7)) + "\n\n"
    text += " ".join(f"Epsilon{i} zeta eta theta iota." for i in range(5))
    splitter = make_splitter(lambda t: len(t.split()), chunk_tokens=10, overlap=3)
    chunks = chunk_text("doc.txt", text, splitter)
    assert len(chunks) > 3
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(c.text.split()) <= 10
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_chunks_stay_under_the_embedder_limit(docs, where):
    long_doc = docs / "long.txt"
    long_doc.write_text(" ".join(f"word{i}" for i in range(500)))
    emb = HashEmbedder()
    build_index([docs], where, IndexConfig(chunk_tokens=10_000, chunk_overlap=0), embedder=emb)
    idx = backends.open_index(where)
    assert idx.manifest["chunking"]["chunk_tokens"] == emb.max_tokens
    assert all(emb.count_tokens(t) <= emb.max_tokens for t in idx.db.all_texts())


def test_indexed_chunk_offsets_match_source_files(docs, where):
    build(docs, where)
    idx = backends.open_index(where)
    texts = {
        "broncos.txt": (docs / "broncos.txt").read_text(),
        "mercury.md": (docs / "mercury.md").read_text(),
    }
    chunks = idx.db.get(list(range(len(idx))))
    checked = 0
    for c in chunks:
        if c.doc in texts:
            assert texts[c.doc][c.start : c.end] == c.text
            checked += 1
    assert checked >= 3


# ---------------------------------------------------------------- incremental builds
def test_reindex_only_embeds_what_changed(docs, where):
    idx = where
    emb = HashEmbedder()
    first = build(docs, idx, emb)
    assert first.files_indexed == 6 and first.files_unchanged == 0
    n_all = emb.calls

    again = build(docs, idx, emb)
    assert (again.files_indexed, again.files_unchanged, again.files_removed) == (0, 6, 0)
    assert emb.calls == n_all  # nothing re-embedded

    (docs / "mercury.md").write_text("# Mercury\n\nMercury has no moons at all.")
    (docs / "paris.html").unlink()
    (docs / "new.txt").write_text("Photosynthesis turns light into chemical energy.")
    before = emb.calls
    third = build(docs, idx, emb)
    assert (third.files_indexed, third.files_unchanged, third.files_removed) == (2, 4, 1)
    assert emb.calls - before == 2  # one chunk each for the changed and the new file

    # appending a paragraph re-embeds the new chunk only; the file's unchanged chunks keep their vectors
    (docs / "broncos.txt").write_text(
        (docs / "broncos.txt").read_text() + "\n\nTickets sold out within hours."
    )
    before = emb.calls
    fourth = build(docs, idx, emb)
    assert fourth.files_indexed == 1 and fourth.chunks_embedded == emb.calls - before
    assert 1 <= fourth.chunks_embedded < backends.open_index(idx).manifest["files"]["broncos.txt"]["chunks"]
    r = open_retriever(idx, mode="bm25", embedder=emb)
    assert r.search("moons", 1)[0].chunk.doc == "mercury.md"
    assert not any(h.chunk.doc == "paris.html" for h in r.search("Paris capital France", 10))
    assert r.search("photosynthesis", 1)[0].chunk.doc == "new.txt"
    # the store holds exactly the files on disk
    assert sorted(backends.open_index(idx).manifest["files"]) == sorted(
        ["broncos.txt", "mercury.md", "guide.rst", "faq.jsonl", "tower.pdf", "new.txt"]
    )


def test_rebuild_reembeds_everything(docs, where):
    emb = HashEmbedder()
    build(docs, where, emb)
    stats = build(docs, where, emb, rebuild=True)
    assert stats.files_indexed == 6 and stats.files_unchanged == 0
    assert len(backends.open_index(where)) == stats.chunks


def test_other_embedder_is_refused(docs, where):
    build(docs, where)
    other = HashEmbedder()
    other.name = "another-model"
    with pytest.raises(IndexMismatch, match="--rebuild"):
        build_index([docs], where, CFG, embedder=other)
    with pytest.raises(IndexMismatch, match="built with embedder fake-hash"):
        open_retriever(where, embedder_name="another-model")


def test_interrupted_write_leaves_previous_index(docs, where, monkeypatch):
    idx = where
    emb = HashEmbedder()
    build(docs, idx, emb)
    before = [h.chunk.id for h in open_retriever(idx, embedder=emb).search("Denver Broncos", 3)]
    (docs / "broncos.txt").write_text("Completely different text about gardening.")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "build_bm25", boom)
    with pytest.raises(KeyboardInterrupt):
        build(docs, idx, emb)
    assert [h.chunk.id for h in open_retriever(idx, embedder=emb).search("Denver Broncos", 3)] == before
    if not backends.is_url(idx):
        assert [p.name for p in idx.glob("g*")] == [json.loads((idx / "CURRENT").read_text())["generation"]]


def test_killed_process_leaves_previous_index(docs, tmp_path, where):
    """SIGKILL while the new generation is being written: the old one still loads."""
    idx = where
    emb = HashEmbedder()
    build(docs, idx, emb)
    (docs / "extra.txt").write_text("A brand new document about volcanoes.")
    marker = tmp_path / "writing"
    target = repr(idx) if backends.is_url(idx) else f"Path({str(idx)!r})"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from fakes import HashEmbedder
        from indexing import store
        from indexing.build import build_index
        from rag.config import IndexConfig
        real = store.build_bm25
        def slow(texts, out):
            real(texts, out)
            Path({str(marker)!r}).write_text("x")
            time.sleep(60)
        store.build_bm25 = slow
        build_index([Path({str(docs)!r})], {target}, IndexConfig(chunk_tokens=12, chunk_overlap=3),
                    embedder=HashEmbedder())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), "child never reached the write phase"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    r = open_retriever(idx, mode="bm25", embedder=emb)
    assert r.search("Denver Broncos", 1)[0].chunk.doc == "broncos.txt"
    assert not any(h.chunk.doc == "extra.txt" for h in r.search("volcanoes", 5))
    # the next run cleans up the half-written generation and picks up the new file
    stats = build(docs, idx, emb)
    assert stats.files_indexed == 1
    if not backends.is_url(idx):
        assert len(list(idx.glob("g*"))) == 1


# ---------------------------------------------------------------- errors
def test_errors_name_the_fix(tmp_path, docs, where):
    with pytest.raises(BadInput, match="does not exist"):
        build_index([tmp_path / "nope"], tmp_path / "idx", CFG, embedder=HashEmbedder())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no files"):
        build_index([tmp_path / "empty"], tmp_path / "idx", CFG, embedder=HashEmbedder())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.bin").write_bytes(b"\x00")
    with pytest.raises(BadInput, match="every file was skipped"):
        build_index([tmp_path / "junk"], tmp_path / "idx", CFG, embedder=HashEmbedder())
    with pytest.raises(IndexMissing, match="rag index PATH"):
        open_retriever(where, embedder=HashEmbedder())


def test_corrupt_index_is_reported(docs, tmp_path):
    idx = tmp_path / "idx"
    build(docs, idx)
    gen = store.current_generation(idx)
    (gen / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorrupt, match="--rebuild"):
        open_retriever(idx, embedder=HashEmbedder())
    with pytest.raises(IndexCorrupt, match="--rebuild"):
        build(docs, idx)
    assert build(docs, idx, rebuild=True).files_indexed == 6  # --rebuild recovers
    (idx / "CURRENT").write_text("{half")
    with pytest.raises(IndexCorrupt, match="damaged"):
        open_retriever(idx, embedder=HashEmbedder())


# ---------------------------------------------------------------- retrieval
def test_three_modes_find_the_right_chunk(docs, where):
    emb = HashEmbedder()
    build(docs, where, emb)
    for mode in ("dense", "bm25", "hybrid"):
        r = open_retriever(where, mode=mode, embedder=emb)
        hits = r.search("Which planet is the smallest", 3)
        assert hits[0].chunk.doc == "mercury.md", mode
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert r.index.db.by_id(hits[0].chunk.id) == hits[0].chunk
        lc = as_langchain(r, k=2).invoke("Which planet is the smallest")
        assert lc[0].metadata["source"] == "mercury.md" and 1 <= len(lc) <= 2
    with pytest.raises(BadInput, match="dense, bm25, hybrid"):
        open_retriever(where, mode="fuzzy", embedder=emb)


def test_rrf_rewards_agreement():
    fused = rrf([[(1, 0.9), (2, 0.8), (3, 0.1)], [(4, 9.0), (2, 5.0), (3, 1.0)]], k=60)
    assert [i for i, _ in fused][:1] == [2]  # rank 2 in both beats rank 1 in one
    assert fused[0][1] == pytest.approx(2 / 62)


def test_memory_retriever_and_langchain_adapter():
    chunks = [
        Chunk(id=str(i), doc=f"d{i}.txt", text=t, start=0, end=len(t))
        for i, t in enumerate(["cats purr softly", "dogs bark loudly", "fish swim quietly"])
    ]
    r = memory_retriever(chunks, mode="hybrid", embedder=HashEmbedder())
    assert r.search("why do dogs bark", 1)[0].chunk.doc == "d1.txt"
    lc = as_langchain(r, k=2)
    docs = lc.invoke("fish swim")
    assert docs[0].page_content == "fish swim quietly"
    assert docs[0].metadata["source"] == "d2.txt" and len(docs) == 2


def test_batch_search_equals_single_search(docs, where):
    emb = HashEmbedder()
    build(docs, where, emb)
    queries = ["smallest planet", "Denver Broncos Super Bowl", "capital of France"]
    for mode in ("dense", "bm25", "hybrid"):
        r = open_retriever(where, mode=mode, embedder=emb)
        batch = r.search_batch(queries, 3)
        assert [[h.chunk.id for h in hits] for hits in batch] == [
            [h.chunk.id for h in r.search(q, 3)] for q in queries
        ]


# ---------------------------------------------------------------- query embedder without sentence-transformers
def _tiny_st(folder: Path, pooling: str = "mean") -> Path:
    return tiny_st(folder, pooling=pooling)


@pytest.mark.parametrize("bf16", [False, True])
def test_query_embedder_matches_sentence_transformers(tmp_path, bf16):
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from indexing.embed import QueryEmbedder, plain_st_config

    folder = _tiny_st(tmp_path)
    assert plain_st_config(folder) == {"max_seq_length": 16, "do_lower_case": False, "normalize": True}
    st = SentenceTransformer(str(folder), device="cpu")
    if bf16:
        st.to(torch.bfloat16)
    texts = [
        "Which NFL team represented the AFC at Super Bowl 50?",
        "who won",
        " ".join(["denver broncos"] * 20),
    ]  # the last one is truncated at max_seq_length
    want = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    got = QueryEmbedder("tiny", folder, bf16=bf16).encode(texts, batch_size=2)
    assert got.shape == want.shape == (3, 32)
    assert np.allclose(got, want, atol=1e-2 if bf16 else 1e-5)
    assert (got @ want.T).argmax(1).tolist() == [0, 1, 2]
    # one query at a time (what `rag ask` does), the vectors are the same bits
    q = QueryEmbedder("tiny", folder, bf16=bf16)
    for t in texts:
        assert np.array_equal(q.encode([t]), st.encode([t], normalize_embeddings=True, convert_to_numpy=True))


def test_only_plain_mean_pooling_models_skip_sentence_transformers(tmp_path, monkeypatch):
    from indexing import embed

    cls = _tiny_st(tmp_path / "cls", pooling="cls")
    assert embed.plain_st_config(cls) is None
    assert embed.plain_st_config(tmp_path) is None  # no modules.json
    mean = _tiny_st(tmp_path / "mean")
    monkeypatch.setattr(embed, "_CACHE", {})
    assert isinstance(embed.get_embedder(str(mean), queries=True), embed.QueryEmbedder)
    assert isinstance(embed.get_embedder(str(cls), queries=True), embed.SentenceTransformerEmbedder)
    assert isinstance(
        embed.get_embedder(str(mean)), embed.SentenceTransformerEmbedder
    )  # indexing: the library
