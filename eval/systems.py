"""Systems under evaluation: names parsed into specs, what each one is, and a hash of what it answers with.

System names (`--systems`): "extractive", a reader preset ("qwen2.5-0.5b"), a preset with its shipped
adapter ("qwen2.5-0.5b+tuned") or with an adapter folder ("qwen2.5-0.5b+/path/to/adapter"), then
optionally ":span" (span-faithful decoding, rag.toml's abstain threshold), ":span=T" (threshold T) or
":free" (free decoding; without a suffix, rag.toml's [reader] span decides), each
optionally suffixed "@gold" for the oracle run with the gold paragraph.

A system's hash covers everything that changes its answers (reader, model and its sha256, adapter
weights, oracle, k, prompt, span decoding, int8 weights); it names the file its predictions are saved in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assets import adapters
from rag.errors import BadInput
from rag.files import sha256_text
from rag.prompt import ABSTAIN, INSTRUCTION

log = logging.getLogger(__name__)

PROMPT_VERSION = sha256_text(INSTRUCTION + ABSTAIN)[:8]


@dataclass(frozen=True)
class SystemSpec:
    name: str  # display name, e.g. "qwen2.5-0.5b+tuned@gold"
    reader: str  # "extractive" | "llm"
    model: str | None = None  # model-store preset or folder, for llm readers
    adapter: str = "none"  # "none" or an adapter folder
    oracle: bool = False  # True: the gold paragraph is the only passage (no retrieval)
    span: bool | None = None  # span-faithful decoding (rag.span); None: rag.toml's [reader] span
    threshold: float | None = None  # its abstain threshold; None: rag.toml's [reader] abstain_threshold

    @property
    def reader_key(self) -> tuple:
        """Systems with the same key share one loaded reader."""
        return (self.reader, self.model, self.adapter, self.span, self.threshold)


def _reader_presets() -> list[dict]:
    try:
        from assets import models

        return [r for r in models.list_presets() if r.get("kind") == "reader"]
    except ImportError:  # model store not importable (should not happen in an install)
        return []


def parse_system(name: str) -> SystemSpec:
    """A system name -> SystemSpec, or BadInput listing the valid forms.

    >>> parse_system("extractive@gold")  # doctest: +ELLIPSIS
    SystemSpec(name='extractive@gold', reader='extractive', model=None, adapter='none', oracle=True, ...)
    """
    base, oracle = (name[: -len("@gold")], True) if name.endswith("@gold") else (name, False)
    base, span, threshold = _decoding(name, base)
    if base == "extractive" and span is not None:
        raise BadInput(f"{name!r}: :span and :free apply to LLM readers only; drop it from extractive")
    if base == "extractive":
        return SystemSpec(name=name, reader="extractive", oracle=oracle)
    model, _, adapter = base.partition("+")
    presets = [r["name"] for r in _reader_presets()]
    if model not in presets and not Path(model).expanduser().is_dir():
        raise BadInput(
            f"unknown system {name!r}: use extractive, a reader preset ({', '.join(presets) or 'none found'}), "
            "PRESET+tuned, PRESET+ADAPTER_DIR, each optionally with @gold"
        )
    dec = {"span": span, "threshold": threshold}
    if not adapter or adapter == "none":
        return SystemSpec(name=name, reader="llm", model=model, oracle=oracle, **dec)
    if adapter == "tuned":
        folder = adapters.shipped_adapter(Path(model).name)
        if folder is None:
            raise BadInput(
                f"no shipped adapter for {model} in {adapters.SHIPPED_ADAPTERS / Path(model).name}: "
                f"train one with `rag finetune` and pass {model}+ADAPTER_DIR, or drop {name!r}"
            )
        return SystemSpec(name=name, reader="llm", model=model, adapter=str(folder), oracle=oracle, **dec)
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise BadInput(
            f"{folder} is not an adapter folder (no adapter_config.json): "
            f"pass one written by `rag finetune` in {name!r}"
        )
    return SystemSpec(
        name=name, reader="llm", model=model, adapter=str(folder.resolve()), oracle=oracle, **dec
    )


def _decoding(name: str, base: str) -> tuple[str, bool | None, float | None]:
    """(name without its decoding suffix, span, threshold): "...:span", "...:span=-1.5" or "...:free";
    span None without a suffix (the [reader] default).

    >>> _decoding("q+tuned:span=-1.5", "q+tuned:span=-1.5"), _decoding("q", "q"), _decoding("q:free", "q:free")
    (('q+tuned', True, -1.5), ('q', None, None), ('q', False, None))
    """
    if base.endswith(":free"):
        return base[: -len(":free")], False, None
    head, sep, tail = base.rpartition(":span")
    if not sep or (tail and not tail.startswith("=")):
        return base, None, None
    if not tail:
        return head, True, None
    try:
        return head, True, float(tail[1:])
    except ValueError:
        raise BadInput(f"{name!r}: the threshold after :span= must be a number, like :span=-1.5") from None


def installed_systems(oracle: bool = True) -> list[SystemSpec]:
    """Default systems: extractive, every pulled reader preset untuned and (if shipped) tuned; with
    `oracle`, a "@gold" run of extractive and of each preset's best installed variant."""
    names = ["extractive"]
    gold = ["extractive@gold"]
    for r in _reader_presets():
        if not r.get("pulled"):
            continue
        names.append(r["name"])
        best = r["name"]
        if adapters.shipped_adapter(r["name"]):
            best = f"{r['name']}+tuned"
            names.append(best)
        gold.append(f"{best}@gold")
    return [parse_system(n) for n in names + (gold if oracle else [])]


def open_reader(spec: SystemSpec):
    """The reader a system answers with (the same factory `rag ask` uses)."""
    from rag.reader import make_reader

    if spec.reader == "extractive":
        return make_reader("extractive")
    return make_reader(
        "llm",
        model=spec.model,
        adapter=spec.adapter,
        span=span_of(spec),
        abstain_threshold=threshold_of(spec),
        quantize=quantize_of(spec),
        decline_missing_names=names_of(spec),
        min_rerank_score=min_rerank_of(spec),
    )


def span_of(spec: SystemSpec) -> bool:
    """Whether a system decodes span-faithfully: its suffix, else rag.toml's [reader] span."""
    if spec.reader == "extractive":
        return False
    if spec.span is not None:
        return spec.span
    from rag.config import load_config

    return load_config().reader.span


def names_of(spec: SystemSpec) -> bool:
    """Whether a system's reader declines questions naming what no passage names: [reader]
    decline_missing_names."""
    if spec.reader == "extractive":
        return False
    from rag.config import load_config

    return load_config().reader.decline_missing_names


def min_rerank_of(spec: SystemSpec) -> float:
    """The reranker score below which a system's reader declines unread: [reader] min_rerank_score (it acts
    only on reranked passages)."""
    if spec.reader == "extractive":
        return float("-inf")
    from rag.config import load_config

    return load_config().reader.min_rerank_score


def quantize_of(spec: SystemSpec) -> str:
    """The int8 weights mode a system's reader loads with (rag.quant): rag.toml's [reader] quantize, "auto"
    resolved by this CPU's dtype, as make_reader resolves it."""
    if spec.reader == "extractive":
        return "none"
    from rag.config import load_config
    from rag.quant import resolve_mode
    from rag.reader import reader_dtype

    return resolve_mode(load_config().reader.quantize, reader_dtype())


def threshold_of(spec: SystemSpec) -> float:
    """The abstain threshold a span system decides with: its own, else rag.toml's."""
    if spec.threshold is not None:
        return spec.threshold
    from rag.config import load_config

    return load_config().reader.abstain_threshold


# ---------------------------------------------------------------- what a system is
def _file_digest(paths: Sequence[Path]) -> str:
    """sha256 over each file's name and bytes, in order (a file renamed is a different adapter)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _adapter_digest(folder: str) -> str | None:
    if folder == "none":
        return None
    d = Path(folder)
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.startswith("adapter_"))
    return _file_digest(files)[:16] if files else None


def _model_info(model: str | None) -> dict:
    if model is None:
        return {}
    try:
        from assets import models

        return models.model_info(model)
    except Exception as e:  # a model that is not pulled yet still gets a row, with unknowns
        log.info("no model info for %s: %s", model, e)
        return {}


def _adapter_manifest(folder: str) -> dict:
    """The adapter's rag_adapter.json, or {} for no adapter or an unreadable one (its columns stay empty)."""
    return {} if folder == "none" else adapters.manifest_or_none(folder) or {}


def _first(d: dict, *paths: str) -> Any:
    """First non-None value at any dotted path.

    >>> _first({"a": {"b": 3}}, "x", "a.b")
    3
    """
    for p in paths:
        cur: Any = d
        for part in p.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is not None:
            return cur
    return None


def _quantization(source: str | None, mode: str) -> str | None:
    """The source file's quantization, plus the reader's own int8 weights when on.

    >>> _quantization("Q4 GGUF repack", "int8"), _quantization("Q4_1", "none")
    ('Q4 GGUF repack; served int8', 'Q4_1')
    """
    if mode == "none":
        return source
    return f"{source or 'unknown'}; served {mode}"


def system_meta(spec: SystemSpec) -> dict:
    """What the experiments table shows about a system (None where unknown)."""
    info = _model_info(spec.model)
    man = _adapter_manifest(spec.adapter)
    if spec.reader == "extractive":
        return {
            "model": None,
            "params": None,
            "quantization": None,
            "adapter": None,
            "adapter_rank": None,
            "training_time_s": None,
            "adapter_val_em": None,
            "adapter_val_f1": None,
        }
    return {
        "model": spec.model,
        "params": info.get("params"),
        "quantization": _quantization(info.get("quantization"), quantize_of(spec)),
        "adapter": None if spec.adapter == "none" else spec.adapter,
        "adapter_rank": _first(man, "hyperparameters.rank", "hyperparameters.r", "rank", "lora.r"),
        "training_time_s": _first(man, "training.train_time_s", "training.wall_time_s", "training_time_s"),
        "adapter_val_em": _first(man, "final.em"),
        "adapter_val_f1": _first(man, "final.f1"),
    }


def system_hash(spec: SystemSpec, k: int) -> str:
    """Hash of everything that changes a system's answers (12 hex chars)."""
    info = _model_info(spec.model)
    key = {
        "reader": spec.reader,
        "model": spec.model,
        "model_sha256": info.get("sha256"),
        "adapter": _adapter_digest(spec.adapter),
        "oracle": spec.oracle,
        "k": None if spec.oracle else k,
        "prompt": PROMPT_VERSION,
    }
    if span_of(spec):  # only then: the hashes (and saved predictions) of free-decoding systems stay as before
        key["decoding"] = {"span": True, "threshold": threshold_of(spec)}
    if quantize_of(spec) != "none":  # likewise: unquantized systems keep their hashes
        key["quantize"] = quantize_of(spec)
    if names_of(spec):  # likewise; the rule's version, so answers saved under an older rule are redone
        from rag.text import NAMES_RULE

        key["names"] = NAMES_RULE
    if math.isfinite(min_rerank_of(spec)):  # likewise
        key["min_rerank_score"] = min_rerank_of(spec)
    return sha256_text(json.dumps(key, sort_keys=True))[:12]
