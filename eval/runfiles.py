"""The run folder: where a test set's hits, predictions and judge scores are saved, and how they are keyed.

Each is a JSONL file appended one flushed line per result, so an interrupted run loses at most the line
being written and the next run resumes from the rest. Lines carry short hashes of what produced them
(the question text, the passages given), so an edited question or a changed passage is redone and
everything else is reused.

    >>> short_hash("Who won Super Bowl 50?")
    'ea14d925005b'
    >>> safe_name("qwen2.5-0.5b+tuned@gold")
    'qwen2.5-0.5b_tuned_gold'
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from rag.errors import BadInput
from rag.files import sha256_text
from rag.types import Hit

log = logging.getLogger(__name__)


def short_hash(s: str) -> str:
    """The first 12 hex characters of the string's sha256: a cache key, not a checksum."""
    return sha256_text(s)[:12]


def ctx_hash(hits: Sequence[Hit]) -> str:
    """Key of the passages a reader was given: their sources, offsets and texts, in order."""
    return short_hash(
        "\x1e".join(f"{h.chunk.doc}\x1f{h.chunk.start}\x1f{h.chunk.end}\x1f{h.chunk.text}" for h in hits)
    )


def safe_name(name: str) -> str:
    """A system or test set name as a file-name part (60 characters at most)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]


def run_folder(runs: Path, name: str, files: Sequence[str]) -> Path:
    """runs/eval/<test set>-<hash of its file paths>/.

    Keyed by the files' paths, not their content: an edited test set reuses every unchanged answer.
    """
    return runs / "eval" / f"{safe_name(name)}-{short_hash(';'.join(files))[:8]}"


def writable_run_dir(run_dir: Path, runs: Path) -> None:
    """Create run_dir and write a file in it now: a read-only RAG_HOME failed with a traceback, and only
    after readers had loaded."""
    probe = run_dir / f".write-test-{os.getpid()}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise BadInput(
            f"cannot write to {runs} ({e.strerror or type(e).__name__}): set RAG_HOME to a writable "
            "folder or pass --runs DIR"
        ) from e


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (from a crash mid-write) is skipped."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line (interrupted write?)", path)
    return rows


def strict_json(v):
    """`v` with infinite and NaN floats as None, at any depth: JSON that any reader parses (Python's
    json would write Infinity, which jq and most other tools reject).

    >>> strict_json({"threshold": float("inf"), "gaps": [1.5, float("nan")]})
    {'threshold': None, 'gaps': [1.5, None]}
    """
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: strict_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [strict_json(x) for x in v]
    return v


class Appender:
    """Append JSON lines, flushed per line so an interruption loses at most the line being written;
    non-finite floats are written as null (strict_json)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(strict_json(row), ensure_ascii=False, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
