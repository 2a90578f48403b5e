"""`rag index --engine ray`: Ray Data loads, chunks and embeds; the index is the local engine's."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import test_indexing
from fakes import HashEmbedder

from indexing import backends
from indexing.build import build_index
from indexing.ray_engine import RayEngine, connect
from rag.config import IndexConfig
from rag.errors import BackendUnavailable

CFG = IndexConfig(chunk_tokens=12, chunk_overlap=3)
CORPUS = Path(__file__).resolve().parent.parent / "corpus"
docs = test_indexing.docs  # one file per loader: txt, md, rst, html, jsonl, pdf


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs) for the session; its workers import the tests' fakes."""
    import ray

    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def corpus(docs) -> Path:
    """test_indexing's six loaders' files, and one that both engines skip with the same reason."""
    (docs / "blob.txt").write_bytes(b"abc\x00def")
    return docs


def open_index_chunks(location, rel: str) -> list[tuple[str, np.ndarray]]:
    """(text, vector) of one file's chunks, in id order."""
    return [(c.text, v) for c, v in backends.open_index(location).db.by_file(rel)]


def _contents(location) -> dict[str, list[tuple[str, np.ndarray]]]:
    idx = backends.open_index(location)
    return {rel: [(c.id, v) for c, v in idx.db.by_file(rel)] for rel in idx.manifest["files"]}


def test_ray_engine_gives_the_local_chunks_and_vectors(ray_local, corpus, tmp_path, where):
    local = build_index([corpus], tmp_path / "local", CFG, embedder=HashEmbedder())
    engine = RayEngine(actors=1, make_embedder=HashEmbedder)
    remote = build_index([corpus], where, CFG, embedder=HashEmbedder(), engine=engine)
    assert (remote.files_indexed, remote.chunks, remote.skipped) == (
        local.files_indexed,
        local.chunks,
        local.skipped,
    )
    want, got = _contents(tmp_path / "local"), _contents(where)
    assert sorted(got) == sorted(want) and len(want) == 6
    for rel in want:
        assert [i for i, _ in got[rel]] == [i for i, _ in want[rel]], rel  # identical chunk ids, in order
        # bf16 models differ by batch padding; the fake embedder is exact, so any drift is a bug
        assert np.allclose(np.stack([v for _, v in got[rel]]), np.stack([v for _, v in want[rel]]), atol=1e-6)
    assert (
        backends.open_index(where).manifest["files"]
        == backends.open_index(tmp_path / "local").manifest["files"]
    )

    # a paragraph appended: only the new chunk is embedded; the file's other chunks keep their vectors
    (corpus / "broncos.txt").write_text(
        (corpus / "broncos.txt").read_text() + "\n\nTickets sold out within hours."
    )
    again = build_index([corpus], where, CFG, embedder=HashEmbedder(), engine=engine)
    assert (again.files_indexed, again.files_unchanged) == (1, 5)
    chunks = backends.open_index(where).manifest["files"]["broncos.txt"]["chunks"]
    assert 1 <= again.chunks_embedded < chunks - 1


def test_unreachable_cluster_and_missing_ray_are_one_line(monkeypatch):
    with pytest.raises(
        BackendUnavailable, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:1 .*ray start --head"
    ):
        connect("127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'rag-reader\[scale\]'"):
        connect(None)


def _bge(models: str):
    """The real bge-small from the shared model cache, in a Ray actor: the session's Ray workers started
    with the first test's RAG_MODELS, so the folder is passed explicitly."""
    os.environ["RAG_MODELS"] = models
    from indexing.embed import get_embedder

    return get_embedder("bge-small")


@pytest.mark.integration
def test_ray_engine_with_the_real_embedder_gives_the_local_vectors(
    ray_local, real_models, tmp_path, monkeypatch
):
    from indexing import ray_engine
    from indexing.embed import get_embedder

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("Super_Bowl_50.txt", "Warsaw.txt", "Oxygen.txt"):
        (corpus / name).write_text((CORPUS / name).read_text()[:4000])
    cfg = IndexConfig(embedder="bge-small")
    emb = get_embedder("bge-small")
    local = build_index([corpus], tmp_path / "local", cfg, embedder=emb)
    # one document per actor batch: the actor embeds each file's chunks apart, the local engine all together
    monkeypatch.setattr(ray_engine, "DOCS_PER_BATCH", 1)
    engine = RayEngine(actors=1, make_embedder=functools.partial(_bge, str(real_models)))
    remote = build_index([corpus], tmp_path / "ray", cfg, embedder=emb, engine=engine)
    assert remote.chunks == local.chunks > 6 and remote.chunks_embedded == local.chunks_embedded
    want, got = _contents(tmp_path / "local"), _contents(tmp_path / "ray")
    assert sorted(got) == sorted(want) == ["Oxygen.txt", "Super_Bowl_50.txt", "Warsaw.txt"]
    for rel in want:
        assert [i for i, _ in got[rel]] == [i for i, _ in want[rel]], rel  # identical chunk ids, in order
        # the actor embedded each file apart, the local engine all files together; each text runs alone
        # (indexing.onnx), so its vector does not depend on what else was embedded with it
        ray_vecs = np.stack([v for _, v in got[rel]])
        local_vecs = np.stack([v for _, v in want[rel]])
        assert np.allclose(ray_vecs, local_vecs, atol=1e-6), rel
