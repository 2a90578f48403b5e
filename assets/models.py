"""A model name -> a local folder -> a loaded model, loaded once per process.

A name is one of three things, tried in this order:

    a preset          "smollm2-135m": pulled into the cache on first use (pull.py), then read from there
    a local path      a Hugging Face folder is used as is; a .gguf file, or a folder holding one, is
                      converted into the cache once
    a hub id          "org/model", only when the user is online (HF_HUB_OFFLINE unset)

Nothing else here touches the network. Loaded models are kept per process (a `rag ask` loop or an
eval run asks for the same reader many times); `unload()` drops them.

    >>> resolve("./no-such-folder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rag.errors.ModelUnavailable: no such model folder or file: ./no-such-folder: check the path, or use a preset (minilm, ...)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from assets import Say, tell
from assets.presets import PRESETS, preset_names
from assets.pull import convert_local_gguf, pull
from assets.store import is_pulled, preset_dir, read_model_manifest
from rag.errors import ModelUnavailable
from rag.hardware import cpu_threads

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- resolve


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _is_model_folder(p: Path) -> bool:
    return (p / "config.json").is_file() or (p / "modules.json").is_file()


def _resolve_local(p: Path, say: Say) -> Path:
    if p.is_file() and p.suffix == ".gguf":
        return convert_local_gguf(p, say)
    if _is_model_folder(p):
        return p
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return convert_local_gguf(ggufs[0], say)
    if len(ggufs) > 1:
        raise ModelUnavailable(f"{p} holds {len(ggufs)} .gguf files: pass the path of the one to use")
    raise ModelUnavailable(
        f"{p} is neither a model folder (no config.json or modules.json) nor holds a .gguf file: "
        f"pass a Hugging Face model folder, a .gguf file, or a preset ({preset_names()})"
    )


def _resolve_hub(repo_id: str, say: Say) -> Path:
    hint = f"use a preset ({preset_names()}; `rag models list`) or pass a local model folder"
    if _offline():
        raise ModelUnavailable(
            f"{repo_id!r} is not a preset or a local folder, and hub access is off (HF_HUB_OFFLINE): {hint}"
        )
    try:
        from huggingface_hub import snapshot_download

        tell(log, say, f"downloading {repo_id} from the hub...")
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


def resolve(name_or_path: str | Path, say: Say = None) -> Path:
    """A preset, a local folder/.gguf, or a hub id -> a local folder that from_pretrained can load.

    A preset is pulled on first use (and says so through `say`).
    """
    s = str(name_or_path)
    if s in PRESETS:
        if not is_pulled(s):
            tell(log, say, f"pulling {s} (first use)...")
            return pull(s, say)
        return preset_dir(s)
    p = Path(s).expanduser()
    if p.exists():
        return _resolve_local(p.resolve(), say)
    if s.startswith((".", "/", "~")) or s.endswith(".gguf") or s.count("/") > 1:
        raise ModelUnavailable(
            f"no such model folder or file: {s}: check the path, or use a preset ({preset_names()})"
        )
    return _resolve_hub(s, say)


# ---------------------------------------------------------------- facts without loading


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
        man = read_model_manifest(folder)
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
        raise ModelUnavailable(f"no preset or local model {s!r}: valid presets are {preset_names()}")
    man = read_model_manifest(p)
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


# ---------------------------------------------------------------- loading, once per process

_LM_CACHE: dict[tuple[str, str], tuple[Any, Any, dict[str, Any]]] = {}
_EMB_CACHE: dict[str, Any] = {}

# End-of-turn markers of the chat templates our presets use; generation must stop on them.
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "</s>")


def unload() -> None:
    """Forget every model loaded by this process, so its memory can be freed (eval runs several in turn)."""
    _LM_CACHE.clear()
    _EMB_CACHE.clear()


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
    name_or_path: str | Path, dtype: Any = None, say: Say = None, cache: bool = True
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
    path = resolve(name_or_path, say)
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


def load_embedder(name_or_path: str | Path = "minilm", say: Say = None) -> Any:
    """A sentence_transformers.SentenceTransformer on cpu; loaded once per process."""
    import torch
    from sentence_transformers import SentenceTransformer

    path = resolve(name_or_path, say)
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
