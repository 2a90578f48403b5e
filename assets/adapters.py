"""The LoRA adapter manifest, rag_adapter.json, and the adapters shipped with rag.

An adapter folder holds peft's files (adapter_config.json, adapter_model.safetensors) plus our
manifest: the base model it was trained on (preset name and sha256), the data, hyperparameters,
training time and validation scores. `rag finetune` writes it (finetune.train); the reader checks it
before merging (rag.reader); `rag eval` and the report read it for their tables. This module is the
one place that knows the file's name and how it is read and written.

Shipped adapters live in rag/adapters/<preset>/ (package data of `rag`); `--adapter default` means the
shipped one for the reader's model, if there is one.

    >>> check_base({"base": "smollm2-135m"}, {"name": "qwen2.5-0.5b"}, Path("ad"))
    Traceback (most recent call last):
    ...
    rag.errors.BadInput: adapter ad was trained on base model 'smollm2-135m', but the reader model is 'qwen2.5-0.5b': pass --model smollm2-135m or --adapter none
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rag
from rag.errors import BadInput
from rag.files import write_atomic

ADAPTER_MANIFEST = "rag_adapter.json"
MANIFEST_VERSION = 1  # "format_version" in the manifest
PEFT_CONFIG = "adapter_config.json"
SHIPPED_ADAPTERS = Path(rag.__file__).resolve().parent / "adapters"


def shipped_adapter(model_name: str) -> Path | None:
    """rag/adapters/<model_name>/ when it holds a trained adapter (peft's config and our manifest)."""
    d = SHIPPED_ADAPTERS / model_name
    return d if (d / ADAPTER_MANIFEST).is_file() and (d / PEFT_CONFIG).is_file() else None


def resolve_adapter(spec: str | Path | None, model_name: str) -> Path | None:
    """'default' -> the shipped adapter of `model_name`, if any; 'none'/None -> None; else a folder."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "default":
        return shipped_adapter(model_name)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"no adapter folder at {path}: pass a folder written by `rag finetune`, 'default' or 'none'"
        )
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    """The adapter's rag_adapter.json, after checking the folder is a peft adapter (BadInput if not)."""
    folder = Path(folder)
    if not (folder / PEFT_CONFIG).is_file():
        raise BadInput(
            f"{folder} is not a LoRA adapter folder (no {PEFT_CONFIG}): "
            "pass a folder written by `rag finetune` or --adapter none"
        )
    try:
        return json.loads((folder / ADAPTER_MANIFEST).read_text())
    except FileNotFoundError as e:
        raise BadInput(
            f"{folder} has no {ADAPTER_MANIFEST}, so its base model is unknown: "
            "retrain it with `rag finetune` or pass --adapter none"
        ) from e
    except ValueError as e:
        raise BadInput(f"{folder / ADAPTER_MANIFEST} is not valid JSON ({e}): retrain the adapter") from e


def manifest_or_none(folder: str | Path) -> dict[str, Any] | None:
    """The folder's rag_adapter.json if it has a readable one, else None (for tables that show unknowns)."""
    try:
        man = json.loads((Path(folder) / ADAPTER_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) else None


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write rag_adapter.json into `folder` atomically (a reader sees the old manifest or the new one)."""
    write_atomic(Path(folder) / ADAPTER_MANIFEST, json.dumps(manifest, indent=1))


def base_of(folder: Path) -> str | None:
    """The base model an adapter folder names: rag_adapter.json's "base", else peft's base_model_name_or_path."""
    for name, key in ((ADAPTER_MANIFEST, "base"), (PEFT_CONFIG, "base_model_name_or_path")):
        try:
            base = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if base:
            return str(base)
    return None


def check_base(manifest: dict[str, Any], info: Any, folder: Path) -> None:
    """BadInput when an adapter was trained on another base model (or another build of it) than `info`'s.

    `info` is the loaded model's info (rag.reader passes a dict with "name" and "sha256", or an object
    with those attributes).
    """

    def get(key: str) -> Any:
        return info.get(key) if isinstance(info, dict) else getattr(info, key, None)

    model = get("name")
    base = manifest.get("base")
    if base != model:
        raise BadInput(
            f"adapter {folder} was trained on base model {base!r}, but the reader model is "
            f"{model!r}: pass --model {base} or --adapter none"
        )
    want, have = manifest.get("base_sha256"), get("sha256")
    if want and have and want != have:
        raise BadInput(
            f"adapter {folder} was trained on a different build of {model} (sha256 {want[:12]}... "
            f"vs {have[:12]}...): re-pull the model with `rag models pull {model}` or retrain the adapter"
        )
