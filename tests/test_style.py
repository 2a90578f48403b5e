"""The suite fails when the code is not ruff-clean or not ruff-formatted (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff(args):
    r = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, (
        f"ruff {' '.join(args)} failed (run `ruff {args[0]} .` to fix):\n{r.stdout[-3000:]}"
    )
