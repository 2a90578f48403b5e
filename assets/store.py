"""The model cache on disk: one folder per model under models_dir(), each with its rag_model.json.

A folder is in the cache only once it is complete: it is built in a staging folder next to its final
place (same filesystem) and published with one rename, and only a folder holding rag_model.json counts
as pulled. A crash or Ctrl-C mid-pull leaves the previous state, never half a model. Pulls of one model
take an flock, so two commands that hit a first use together download it once.

    models_dir()/smollm2-135m/        a preset: safetensors, tokenizer, rag_model.json
    models_dir()/local/<stem>-<sha>/  a user's .gguf, converted once, keyed by its content hash
    models_dir()/.smollm2-135m.lock   the pull lock

    >>> preset_dir("minilm").name, MODEL_MANIFEST
    ('minilm', 'rag_model.json')
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assets import Say, tell
from rag.config import models_dir
from rag.files import write_atomic

log = logging.getLogger(__name__)

MODEL_MANIFEST = "rag_model.json"
FORMAT_VERSION = 1


def preset_dir(name: str) -> Path:
    """Where a preset lives in the cache (whether or not it is pulled)."""
    return models_dir() / name


def read_model_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's rag_model.json, or None when it has none (not pulled, or not from the store)."""
    try:
        return json.loads((folder / MODEL_MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def write_model_manifest(folder: Path, data: dict[str, Any]) -> None:
    write_atomic(folder / MODEL_MANIFEST, json.dumps(data, indent=2) + "\n")


def is_pulled(name: str) -> bool:
    return read_model_manifest(preset_dir(name)) is not None


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mb(n: int) -> str:
    """A byte count for a progress line.

    >>> mb(1_315_000_000)
    '1,315 MB'
    """
    return f"{n / 1e6:,.0f} MB"


@contextlib.contextmanager
def pull_lock(key: str, say: Say) -> Iterator[None]:
    """Serialize pulls of one model across processes (two commands may hit a first use together)."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            tell(log, say, f"waiting for another process pulling {key}...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def staging_folder(final: Path) -> Iterator[Path]:
    """A scratch folder next to `final` (same filesystem, so the last rename is atomic); always removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish_folder(staged: Path, final: Path) -> None:
    """Move a finished folder into place in one rename; a stale incomplete folder is replaced."""
    for f in staged.rglob("*"):  # mkdtemp/safetensors leave owner-only modes; the cache is shared
        f.chmod(0o755 if f.is_dir() else 0o644)
    staged.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
