"""`rag index --engine ray`: Ray Data loads, chunks and embeds; the index is the local engine's."""

from __future__ import annotations

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
