"""Experiments: several systems answer the same questions on the same retrieved chunks, then get scored.

One run:
  1. retrieve once per question (top max(k, 10), cached on disk per index + mode), shared by every system;
  2. for each reader (loaded once, unloaded after), answer every question with the top-k passages, and
     for its "@gold" (oracle) variant with the gold paragraph instead;
  3. optionally judge a seeded subsample with ragas (eval.judge);
  4. score (eval.metrics), compare systems with paired bootstrap CIs, append to the experiments log.

Per-question predictions are appended to the run folder as they are made, one JSONL per system,
each line keyed by question id + a hash of the question + a hash of the passages given; the file name
carries a hash of the system's configuration (reader, model and its sha256, adapter weights, oracle,
k, prompt). An interrupted run resumes where it stopped, and a rerun only computes what changed.

System names (`--systems`): "extractive", a reader preset ("qwen2.5-0.5b"), a preset with its shipped
adapter ("qwen2.5-0.5b+tuned") or with an adapter folder ("qwen2.5-0.5b+/path/to/adapter"), each
optionally suffixed "@gold" for the oracle run with the gold paragraph.

Latency is the reader's answer time per question (retrieval, shared by all systems, is reported once
for the test set). Peak RAM is the process's peak resident memory while that system loaded and ran
(it includes what the process already held: Python, torch and the retriever's embedder).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import json
import logging
import os
import random
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from eval import metrics as M
from eval.testset import Question, TestSet, gold_context
from rag.config import REPO_ROOT, runs_dir
from rag.errors import BadInput
from rag.hardware import choose_dtype, describe
from rag.prompt import ABSTAIN, INSTRUCTION
from rag.types import Chunk, Hit

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (phase label, done, total)
EXPERIMENTS_JSONL = "experiments.jsonl"
EXPERIMENTS_CSV = "experiments.csv"
LOG_VERSION = 1  # bump when the experiments row schema changes incompatibly
RETRIEVE_DEPTH = 10  # hits kept per question: MRR@10 and recall@10 need ten
SHIPPED_ADAPTERS = REPO_ROOT / "rag" / "adapters"
PROMPT_VERSION = hashlib.sha256((INSTRUCTION + ABSTAIN).encode()).hexdigest()[:8]


# ---------------------------------------------------------------- systems
@dataclass(frozen=True)
class SystemSpec:
    name: str  # display name, e.g. "qwen2.5-0.5b+tuned@gold"
    reader: str  # "extractive" | "llm"
    model: str | None = None  # model-store preset or folder, for llm readers
    adapter: str = "none"  # "none" or an adapter folder
    oracle: bool = False  # True: the gold paragraph is the only passage (no retrieval)

    @property
    def reader_key(self) -> tuple:
        """Systems with the same key share one loaded reader."""
        return (self.reader, self.model, self.adapter)


def shipped_adapter(preset: str) -> Path | None:
    """rag/adapters/<preset>/ when it holds a trained adapter."""
    d = SHIPPED_ADAPTERS / preset
    return d if (d / "rag_adapter.json").is_file() and (d / "adapter_config.json").is_file() else None


def _reader_presets() -> list[dict]:
    try:
        from rag import models

        return [r for r in models.list_presets() if r.get("kind") == "reader"]
    except ImportError:  # model store not importable (should not happen in an install)
        return []


def parse_system(name: str) -> SystemSpec:
    """A system name -> SystemSpec, or BadInput listing the valid forms.

    >>> parse_system("extractive@gold")
    SystemSpec(name='extractive@gold', reader='extractive', model=None, adapter='none', oracle=True)
    """
    base, oracle = (name[: -len("@gold")], True) if name.endswith("@gold") else (name, False)
    if base == "extractive":
        return SystemSpec(name=name, reader="extractive", oracle=oracle)
    model, _, adapter = base.partition("+")
    presets = [r["name"] for r in _reader_presets()]
    if model not in presets and not Path(model).expanduser().is_dir():
        raise BadInput(
            f"unknown system {name!r}: use extractive, a reader preset ({', '.join(presets) or 'none found'}), "
            "PRESET+tuned, PRESET+ADAPTER_DIR, each optionally with @gold"
        )
    if not adapter or adapter == "none":
        return SystemSpec(name=name, reader="llm", model=model, oracle=oracle)
    if adapter == "tuned":
        folder = shipped_adapter(Path(model).name)
        if folder is None:
            raise BadInput(
                f"no shipped adapter for {model} in {SHIPPED_ADAPTERS / Path(model).name}: "
                f"train one with `rag finetune` and pass {model}+ADAPTER_DIR, or drop {name!r}"
            )
        return SystemSpec(name=name, reader="llm", model=model, adapter=str(folder), oracle=oracle)
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise BadInput(
            f"{folder} is not an adapter folder (no adapter_config.json): "
            f"pass one written by `rag finetune` in {name!r}"
        )
    return SystemSpec(name=name, reader="llm", model=model, adapter=str(folder.resolve()), oracle=oracle)


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
        if shipped_adapter(r["name"]):
            best = f"{r['name']}+tuned"
            names.append(best)
        gold.append(f"{best}@gold")
    return [parse_system(n) for n in names + (gold if oracle else [])]


def _file_digest(paths: Sequence[Path]) -> str:
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
        from rag import models

        return models.model_info(model)
    except Exception as e:  # a model that is not pulled yet still gets a row, with unknowns
        log.info("no model info for %s: %s", model, e)
        return {}


def _adapter_manifest(folder: str) -> dict:
    if folder == "none":
        return {}
    try:
        return json.loads((Path(folder) / "rag_adapter.json").read_text())
    except (OSError, ValueError):
        return {}


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
        "quantization": info.get("quantization"),
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
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- small helpers
def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def _ctx_hash(hits: Sequence[Hit]) -> str:
    return _h(
        "\x1e".join(f"{h.chunk.doc}\x1f{h.chunk.start}\x1f{h.chunk.end}\x1f{h.chunk.text}" for h in hits)
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]


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


class _Appender:
    """Append JSON lines, flushed per line so an interruption loses at most the line being written."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class PeakRSS:
    """Samples this process's resident memory in a thread; .peak_mb is the maximum seen since start."""

    def __init__(self, every_s: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.every_s = every_s
        self.peak_mb = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self._rss())

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, self._rss())


def index_fingerprint(index_dir: Path) -> str | None:
    """Hash of the index's current manifest (chunks, embedder, file hashes); None without an index."""
    try:
        from indexing.store import current_generation

        gen = current_generation(Path(index_dir))
        if gen is None:
            return None
        return _h((gen / "manifest.json").read_text())
    except (OSError, ImportError):
        return None


def _hit_to_row(h: Hit) -> dict:
    c = h.chunk
    return {"id": c.id, "doc": c.doc, "text": c.text, "start": c.start, "end": c.end, "score": h.score}


def _row_to_hit(r: dict) -> Hit:
    return Hit(Chunk(r["id"], r["doc"], r["text"], r["start"], r["end"]), r["score"])


def is_gold_hit(chunk: Chunk, q: Question) -> bool:
    """A retrieved chunk is relevant when it overlaps the gold paragraph: same source file and
    overlapping character spans; for questions that only carry the paragraph text (SQuAD JSON),
    when chunk and paragraph share a run of text of at least 50 characters (or all of the shorter)."""
    if q.has_gold_span:
        return M.same_source(chunk.doc, q.source) and M.spans_overlap(chunk.start, chunk.end, q.start, q.end)  # type: ignore[arg-type]
    if q.context:
        from difflib import SequenceMatcher

        a, b = " ".join(chunk.text.split()), " ".join(q.context.split())
        m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
        return m.size >= min(50, len(a), len(b))
    return False


# ---------------------------------------------------------------- the run
@dataclass
class EvalConfig:
    k: int = 5  # passages handed to the reader
    mode: str = "hybrid"  # retrieval mode
    index_dir: Path | None = None  # None = the default index
    seed: int = 0  # sampling and judge-subsample seed, recorded
    limit: int | None = None  # recorded only: the caller samples the questions
    judge: str | None = None  # judge preset (None = no judged metrics unless judge_limit > 0 -> default)
    judge_limit: int = 0  # answerable questions judged per system (0 = no judge)
    judge_systems: list[str] | None = None  # systems the judge scores (None = all of them)
    runs: Path | None = None  # runs folder (None = runs_dir())
    fresh: bool = False  # ignore cached predictions and retrieval
    n_boot: int = 2000  # bootstrap resamples
    command: str | None = None  # the command line, recorded


@dataclass
class EvalResult:
    run_id: str
    run_dir: Path
    testset: dict
    config: EvalConfig
    systems: list[dict] = field(default_factory=list)  # [{name, n, meta, metrics}]
    retrieval: dict = field(default_factory=dict)
    comparisons: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # the experiments-log rows written
    n_questions: int = 0  # questions evaluated (after --limit sampling)
    index: str | None = None  # index folder the hits came from (None: no retrieval, or an injected retriever)

    def as_json(self) -> dict:
        """The `rag eval --json` object."""
        return {
            "systems": [
                {"name": s["name"], "n": s["n"], "metrics": s["metrics"], "meta": s["meta"]}
                for s in self.systems
            ],
            "testset": self.testset,
            "n_questions": self.n_questions,
            "seed": self.config.seed,
            "limit": self.config.limit,
            "k": self.config.k,
            "mode": self.config.mode,
            "index": self.index,
            "judge": self.config.judge,
            "judge_limit": self.config.judge_limit,
            "judge_systems": self.config.judge_systems,
            "retrieval": self.retrieval,
            "comparisons": self.comparisons,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
        }


def _default_reader_factory(spec: SystemSpec):
    from rag.reader import make_reader

    if spec.reader == "extractive":
        return make_reader("extractive")
    return make_reader("llm", model=spec.model, adapter=spec.adapter)


def _default_retriever_factory(cfg: EvalConfig):
    from indexing.retrieve import open_retriever

    return open_retriever(cfg.index_dir, mode=cfg.mode)


def _writable_run_dir(run_dir: Path, runs: Path) -> None:
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


def run_eval(
    testset: TestSet,
    questions: Sequence[Question],
    systems: Sequence[SystemSpec],
    cfg: EvalConfig | None = None,
    *,
    retriever: Any = None,
    reader_factory: Callable[[SystemSpec], Any] | None = None,
    judge: Any = None,
    on_progress: Progress | None = None,
    index_key: str | None = None,
    write_log: bool = True,
) -> EvalResult:
    """Answer `questions` with every system, score them, and append the runs to the experiments log.

    `retriever` (an object with .search) and `reader_factory` (SystemSpec -> Reader) replace the real
    index and readers, e.g. in tests; `judge` is an eval.judge.Judge (else one is loaded when
    cfg.judge_limit > 0). `index_key` names the retrieval source in cache keys when a retriever is given.
    """
    cfg = cfg or EvalConfig()
    if not systems:
        raise BadInput("no systems to evaluate: pass --systems NAME ... (e.g. extractive)")
    unknown = sorted(set(cfg.judge_systems or []) - {s.name for s in systems})
    if unknown:
        raise BadInput(
            f"--judge-system {unknown[0]} is not among the evaluated systems: add it with "
            f"--systems {unknown[0]}, or judge one of {', '.join(s.name for s in systems)}"
        )
    if cfg.k < 1:
        raise BadInput(f"--k must be at least 1, got {cfg.k}")
    if len({s.name for s in systems}) != len(systems):
        raise BadInput("a system is listed twice in --systems: list each once")
    progress = on_progress or (lambda phase, done, total: None)
    retriever_was_default = retriever is None
    reader_factory = reader_factory or _default_reader_factory
    runs = Path(cfg.runs) if cfg.runs else runs_dir()
    # Keyed by the files' paths, not their content: an edited test set reuses every unchanged answer.
    run_dir = runs / "eval" / f"{_safe(testset.name)}-{_h(';'.join(testset.files))[:8]}"
    _writable_run_dir(run_dir, runs)
    qs = list(questions)
    gold_cache: dict = {}
    golds_ctx = {q.id: gold_context(q, testset.corpus_root, gold_cache) for q in qs}
    oracle_systems = [s for s in systems if s.oracle]
    if oracle_systems and not any(golds_ctx[q.id] for q in qs):
        raise BadInput(
            f"{oracle_systems[0].name}: the test set gives no gold paragraphs (no source/start/end "
            f"with the files under {testset.corpus_root}, no context): drop the @gold systems"
        )

    # 1. retrieval, once per question, cached per index + mode + depth
    depth = max(cfg.k, RETRIEVE_DEPTH)
    hits_by_id: dict[str, list[Hit]] = {}
    retrieval_s: list[float] = []
    if any(not s.oracle for s in systems):
        # An injected retriever without an index_key is not cached across runs: its identity is unknown.
        ikey = index_key or (
            index_fingerprint(cfg.index_dir or _default_index_dir()) if retriever is None else None
        )
        rkey = _h(json.dumps([ikey, cfg.mode, depth]))
        hpath = run_dir / f"hits-{rkey}.jsonl"
        cached = {} if cfg.fresh or ikey is None else {r["id"]: r for r in read_jsonl(hpath)}
        todo = [q for q in qs if q.id not in cached or cached[q.id].get("qhash") != _h(q.question)]
        if todo:
            if retriever is None:
                retriever = _default_retriever_factory(cfg)
                ikey = index_fingerprint(cfg.index_dir or _default_index_dir())
                rkey = _h(json.dumps([ikey, cfg.mode, depth]))
                hpath = run_dir / f"hits-{rkey}.jsonl"
            out = _Appender(hpath)
            batched = hasattr(retriever, "search_batch")  # embeds queries in batches: much faster
            step = 64 if batched else 1
            try:
                for b in range(0, len(todo), step):
                    batch = todo[b : b + step]
                    t0 = time.perf_counter()
                    if batched:
                        results = retriever.search_batch([q.question for q in batch], depth)
                    else:
                        results = [retriever.search(q.question, depth) for q in batch]
                    dt = (time.perf_counter() - t0) / len(batch)  # amortized per question in a batch
                    for q, hits in zip(batch, results, strict=True):
                        row = {
                            "id": q.id,
                            "qhash": _h(q.question),
                            "seconds": dt,
                            "hits": [_hit_to_row(h) for h in hits],
                        }
                        out.write(row)
                        cached[q.id] = row
                    progress("retrieve", b + len(batch), len(todo))
            finally:
                out.close()
        for q in qs:
            hits_by_id[q.id] = [_row_to_hit(r) for r in cached[q.id]["hits"]]
            retrieval_s.append(cached[q.id].get("seconds", 0.0))
        if retriever_was_default:
            retriever = None  # free the index and its embedder before readers load (cleaner RAM figures)
            _release_models()

    def contexts(spec: SystemSpec, q: Question) -> list[Hit] | None:
        if spec.oracle:
            text = golds_ctx[q.id]
            if text is None:
                return None
            start = q.start if q.start is not None else 0
            end = q.end if q.end is not None else len(text)
            doc = q.source or "gold"
            return [Hit(Chunk(f"{doc}#{start}-{end}", doc, text, start, end), 1.0)]
        return hits_by_id[q.id][: cfg.k]

    # 2. answers, grouped by reader so each model loads once
    shash = {s.name: system_hash(s, cfg.k) for s in systems}
    preds: dict[str, dict[str, dict]] = {}
    groups: dict[tuple, list[SystemSpec]] = {}
    for s in systems:
        groups.setdefault(s.reader_key, []).append(s)
    for group in groups.values():
        todo_by_sys: dict[str, list[tuple[Question, list[Hit]]]] = {}
        for s in group:
            path = run_dir / f"pred-{_safe(s.name)}-{shash[s.name]}.jsonl"
            have = {} if cfg.fresh else {r["id"]: r for r in read_jsonl(path)}
            keep: dict[str, dict] = {}
            todo = []
            for q in qs:
                ctx = contexts(s, q)
                if ctx is None:
                    continue  # oracle without a gold paragraph for this question
                r = have.get(q.id)
                if r and r.get("qhash") == _h(q.question) and r.get("ctx") == _ctx_hash(ctx):
                    keep[q.id] = r
                else:
                    todo.append((q, ctx))
            preds[s.name] = keep
            todo_by_sys[s.name] = todo
        if not any(todo_by_sys.values()):
            continue
        gc.collect()
        with PeakRSS() as mem:
            reader = reader_factory(group[0])
            for s in group:
                todo = todo_by_sys[s.name]
                if not todo:
                    continue
                out = _Appender(run_dir / f"pred-{_safe(s.name)}-{shash[s.name]}.jsonl")
                try:
                    for i, (q, ctx) in enumerate(todo, 1):
                        t0 = time.perf_counter()
                        ans = reader.answer(q.question, ctx)
                        dt = time.perf_counter() - t0
                        row = {
                            "id": q.id,
                            "qhash": _h(q.question),
                            "ctx": _ctx_hash(ctx),
                            "system": s.name,
                            "text": ans.text,
                            "abstained": bool(ans.abstained),
                            "citations": [asdict(c) for c in ans.citations],
                            "supported": bool(ans.supported),
                            "raw": ans.raw,
                            "seconds": dt,
                            "timings": dict(ans.timings or {}),
                            "rss_mb": round(mem.peak_mb, 1),
                        }
                        out.write(row)
                        preds[s.name][q.id] = row
                        progress(f"answer {s.name}", i, len(todo))
                finally:
                    out.close()
            del reader
            _release_models()

    # 3. judge a seeded subsample of answerable questions, the same ids for every system
    judged: dict[str, dict[str, dict]] = {s.name: {} for s in systems}
    if cfg.judge_limit > 0:
        judged = _run_judge(qs, systems, shash, preds, contexts, cfg, run_dir, judge, progress)

    # 4. score, compare, log
    index = None
    if hits_by_id and (index_key is None or retriever_was_default):
        index = str(Path(cfg.index_dir or _default_index_dir()).resolve())
    result = _score(
        testset, qs, systems, shash, preds, hits_by_id, judged, contexts, retrieval_s, cfg, run_dir, index
    )
    if write_log:
        append_experiments(result.rows, runs)
    return result


def _release_models() -> None:
    """Drop the model store's per-process model cache so the next reader's RAM is its own.

    rag.models keeps loaded models for the process's lifetime (right for `rag ask`); an eval run
    loads several in turn, and without this each system's peak RAM would include the previous ones.
    """
    try:
        from rag import models

        release = getattr(models, "unload", None)
        if callable(release):
            release()
        else:  # no public hook yet: clear its caches directly
            for name in ("_LM_CACHE", "_EMB_CACHE"):
                cache = getattr(models, name, None)
                if isinstance(cache, dict):
                    cache.clear()
    except ImportError:
        pass
    from indexing import embed

    embed._CACHE.clear()  # the retriever's query embedder, kept per process like the models
    gc.collect()


def _default_index_dir() -> Path:
    from rag.config import default_index_dir

    return default_index_dir()


def judge_ids(questions: Sequence[Question], limit: int, seed: int) -> list[str]:
    """The seeded subsample of answerable question ids the judge scores (same for every system)."""
    ids = [q.id for q in questions if not q.unanswerable]
    random.Random(seed).shuffle(ids)
    return ids[:limit]


def _run_judge(
    qs, systems, shash, preds, contexts, cfg, run_dir, judge, progress
) -> dict[str, dict[str, dict]]:
    from eval.judge import default_judge_preset

    name = getattr(judge, "name", None) or cfg.judge or default_judge_preset()
    cfg.judge = name
    ids = judge_ids(qs, cfg.judge_limit, cfg.seed)
    by_id = {q.id: q for q in qs}
    path = run_dir / f"judge-{_safe(name)}.jsonl"
    cache = {} if cfg.fresh else {(r["system_hash"], r["id"], r["key"]): r for r in read_jsonl(path)}
    judged: dict[str, dict[str, dict]] = {s.name: {} for s in systems}
    todo = []
    for s in systems:
        if cfg.judge_systems is not None and s.name not in cfg.judge_systems:
            continue
        for qid in ids:
            p = preds[s.name].get(qid)
            if p is None or p["abstained"]:
                continue  # abstentions are not judged: there is no claim to check
            ctx = contexts(s, by_id[qid])
            texts = [h.chunk.text for h in ctx]
            key = _h(json.dumps([by_id[qid].question, p["text"], texts]))
            hit = cache.get((shash[s.name], qid, key))
            if hit:
                judged[s.name][qid] = hit
            else:
                todo.append((s, qid, key, texts))
    if todo:
        if judge is None:
            from eval.judge import load_judge

            judge = load_judge(name)
        from eval.judge import JudgeSample

        out = _Appender(path)
        try:
            for i, (s, qid, key, texts) in enumerate(todo, 1):
                sc = judge.score(JudgeSample(by_id[qid].question, preds[s.name][qid]["text"], texts))
                row = {"system_hash": shash[s.name], "system": s.name, "id": qid, "key": key, **sc.as_dict()}
                out.write(row)
                judged[s.name][qid] = row
                progress(f"judge ({name})", i, len(todo))
        finally:
            out.close()
    return judged


def _per_question(q: Question, p: dict, ctx: list[Hit]) -> dict:
    """Scores of one prediction (EM/F1 on answerable questions only)."""
    cited = [ctx[c["n"] - 1].chunk.text for c in p["citations"] if 1 <= c["n"] <= len(ctx)]
    out: dict[str, Any] = {"abstained": p["abstained"], "unanswerable": q.unanswerable, "cited": bool(cited)}
    if not p["abstained"]:
        out["grounding"] = M.grounding_score(p["text"], cited)
    if not q.unanswerable:
        em, f1 = (0.0, 0.0) if p["abstained"] else M.em_f1(p["text"], q.answers)
        cites_gold = any(M.contains_answer(t, q.answers) for t in cited)
        out.update(
            em=em,
            f1=f1,
            cites_gold=cites_gold,
            correct_cited=M.correct_with_citation(f1, p["abstained"], cites_gold),
        )
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _score(
    testset, qs, systems, shash, preds, hits_by_id, judged, contexts, retrieval_s, cfg, run_dir, index
) -> EvalResult:
    from eval.judge import summarize

    # retrieval, once for the test set (answerable questions with a known gold paragraph)
    ranks = []
    if hits_by_id:
        for q in qs:
            if q.unanswerable or not (q.has_gold_span or q.context):
                continue
            ranks.append(M.first_relevant_rank([is_gold_hit(h.chunk, q) for h in hits_by_id[q.id]]))
    retrieval = (
        {
            "n": len(ranks),
            **{f"recall_at_{k}": _r(M.recall_at_k(ranks, k)) if ranks else None for k in (1, 3, 5, 10)},
            "recall_at_k": _r(M.recall_at_k(ranks, cfg.k)) if ranks else None,
            "mrr_at_10": _r(M.mrr_at_k(ranks, 10)) if ranks else None,
            "latency_p50_s": _r(M.percentile(retrieval_s, 50)),
            "latency_p95_s": _r(M.percentile(retrieval_s, 95)),
        }
        if hits_by_id
        else {}
    )

    by_id = {q.id: q for q in qs}
    per_q: dict[str, dict[str, dict]] = {}
    sys_out = []
    for s in systems:
        rows = {}
        for q in qs:
            p = preds[s.name].get(q.id)
            if p is not None:
                rows[q.id] = _per_question(q, p, contexts(s, q))
        per_q[s.name] = rows
        vals = list(rows.values())
        ans = [v for v in vals if not v["unanswerable"]]
        answered_ans = [v for v in ans if not v["abstained"]]
        abst = M.abstention_scores([v["abstained"] for v in vals], [v["unanswerable"] for v in vals])
        un = [v for v in vals if v["unanswerable"]]
        cited_ans = [v for v in answered_ans if v["cited"]]
        answered = [v for v in vals if not v["abstained"]]
        recs = [preds[s.name][qid] for qid in rows]
        js = summarize(list(judged.get(s.name, {}).values()))
        m = {
            "n": len(vals),
            "n_answerable": len(ans),
            "n_unanswerable": len(un),
            "em": _pct(M.mean([v["em"] for v in ans])),
            "f1": _pct(M.mean([v["f1"] for v in ans])),
            "correct_cited": _pct(M.mean([float(v["correct_cited"]) for v in ans])),
            "declined": _pct(abst["recall"]),
            "abstain_precision": _r(abst["precision"]),
            "abstain_recall": _r(abst["recall"]),
            "wrong_abstain_rate": _r(abst["wrong_rate"]),
            "citation_accuracy": _r(M.mean([float(v["cites_gold"]) for v in cited_ans])),
            "citation_rate": _r(M.mean([float(v["cited"]) for v in answered])),
            "grounding": _r(M.mean([v.get("grounding") for v in answered])),
            "supported_rate": _r(M.mean([float(p["supported"]) for p in recs if not p["abstained"]])),
            "faithfulness": _r(js["faithfulness"]),
            "faithfulness_n": js["faithfulness_n"],
            "faithfulness_failed": js["faithfulness_failed"],
            "relevancy": _r(js["relevancy"]),
            "relevancy_n": js["relevancy_n"],
            "relevancy_failed": js["relevancy_failed"],
            "judge_n": js["judge_n"],
            "recall_at_k": None if s.oracle else retrieval.get("recall_at_k"),
            "mrr_at_10": None if s.oracle else retrieval.get("mrr_at_10"),
            "latency_p50_s": _r(M.percentile([p["seconds"] for p in recs], 50)),
            "latency_p95_s": _r(M.percentile([p["seconds"] for p in recs], 95)),
            "peak_ram_mb": max((p.get("rss_mb") or 0 for p in recs), default=None) or None,
        }
        sys_out.append(
            {
                "name": s.name,
                "n": m["n"],
                "meta": {
                    **system_meta(s),
                    "reader": s.reader,
                    "oracle": s.oracle,
                    "system_hash": shash[s.name],
                },
                "metrics": m,
            }
        )

    comparisons = _compare(systems, per_q, judged, by_id, cfg)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + _h(str(time.time_ns()))[:6]
    result = EvalResult(
        run_id=run_id,
        run_dir=run_dir,
        testset=testset.describe(),
        config=cfg,
        systems=sys_out,
        retrieval=retrieval,
        comparisons=comparisons,
        n_questions=len(qs),
        index=index,
    )
    result.rows = _log_rows(result)
    (run_dir / f"run-{run_id}.json").write_text(json.dumps(result.as_json(), indent=1))
    return result


def _pairs(systems: Sequence[SystemSpec]) -> list[tuple[SystemSpec, SystemSpec]]:
    """(a, b) pairs worth a CI: every reader vs extractive on the same contexts; tuned vs untuned."""
    by_name = {s.name: s for s in systems}
    out = []
    for s in systems:
        base = "extractive@gold" if s.oracle else "extractive"
        if s.reader != "extractive" and base in by_name:
            out.append((s, by_name[base]))
        if s.adapter != "none":
            untuned = s.model + ("@gold" if s.oracle else "")
            if untuned in by_name:
                out.append((s, by_name[untuned]))
    return out


def _compare(systems, per_q, judged, by_id, cfg) -> list[dict]:
    out = []
    for a, b in _pairs(systems):
        common = [qid for qid in per_q[a.name] if qid in per_q[b.name] and not by_id[qid].unanswerable]
        for metric in ("f1", "em"):
            xa = [100 * per_q[a.name][q][metric] for q in common]
            xb = [100 * per_q[b.name][q][metric] for q in common]
            bs = M.paired_bootstrap(xa, xb, n_boot=cfg.n_boot, seed=cfg.seed)
            out.append({"a": a.name, "b": b.name, "metric": metric, **_round_bs(bs.as_dict())})
        ja, jb = judged.get(a.name, {}), judged.get(b.name, {})
        for metric in ("faithfulness", "relevancy"):  # on the questions both answered and the judge scored
            common_j = [
                q for q in ja if q in jb and ja[q].get(metric) is not None and jb[q].get(metric) is not None
            ]
            if common_j:
                bs = M.paired_bootstrap(
                    [ja[q][metric] for q in common_j],
                    [jb[q][metric] for q in common_j],
                    n_boot=cfg.n_boot,
                    seed=cfg.seed,
                )
                out.append({"a": a.name, "b": b.name, "metric": metric, **_round_bs(bs.as_dict())})
    return out


def _round_bs(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# ---------------------------------------------------------------- the experiments log
def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Columns of an experiments row, in order (CSV header order; JSONL rows carry exactly these keys).
LOG_COLUMNS = (
    "log_version",
    "run_id",
    "time",
    "git_commit",
    "command",
    "run_dir",
    "testset",
    "testset_sha256",
    "testset_files",
    "n_testset",
    "limit",
    "seed",
    "k",
    "mode",
    "index",
    "system",
    "reader",
    "oracle",
    "model",
    "params",
    "quantization",
    "adapter",
    "adapter_rank",
    "training_time_s",
    "adapter_val_em",
    "adapter_val_f1",
    "system_hash",
    "n",
    "n_answerable",
    "n_unanswerable",
    "em",
    "f1",
    "correct_cited",
    "declined",
    "abstain_precision",
    "abstain_recall",
    "wrong_abstain_rate",
    "citation_accuracy",
    "citation_rate",
    "grounding",
    "supported_rate",
    "judge",
    "judge_limit",
    "judge_n",
    "faithfulness",
    "faithfulness_n",
    "faithfulness_failed",
    "relevancy",
    "relevancy_n",
    "relevancy_failed",
    "recall_at_k",
    "mrr_at_10",
    "recall_at_1",
    "recall_at_3",
    "recall_at_5",
    "recall_at_10",
    "retrieval_n",
    "retrieval_p50_s",
    "latency_p50_s",
    "latency_p95_s",
    "peak_ram_mb",
    "dtype",
    "cpu",
    "comparisons",
)


def _log_rows(res: EvalResult) -> list[dict]:
    cfg = res.config
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = _git_commit()
    rows = []
    for s in res.systems:
        m, meta = s["metrics"], s["meta"]
        retr = {} if meta["oracle"] else res.retrieval
        row = {
            "log_version": LOG_VERSION,
            "run_id": res.run_id,
            "time": now,
            "git_commit": commit,
            "command": cfg.command,
            "run_dir": str(res.run_dir),
            "testset": res.testset["name"],
            "testset_sha256": res.testset["sha256"],
            "testset_files": res.testset["files"],
            "n_testset": res.testset["n"],
            "limit": cfg.limit,
            "seed": cfg.seed,
            "k": cfg.k,
            "mode": cfg.mode,
            "index": res.index,
            "system": s["name"],
            "reader": meta["reader"],
            "oracle": meta["oracle"],
            **{
                k: meta.get(k)
                for k in (
                    "model",
                    "params",
                    "quantization",
                    "adapter",
                    "adapter_rank",
                    "training_time_s",
                    "adapter_val_em",
                    "adapter_val_f1",
                    "system_hash",
                )
            },
            **{
                k: m.get(k)
                for k in (
                    "n",
                    "n_answerable",
                    "n_unanswerable",
                    "em",
                    "f1",
                    "correct_cited",
                    "declined",
                    "abstain_precision",
                    "abstain_recall",
                    "wrong_abstain_rate",
                    "citation_accuracy",
                    "citation_rate",
                    "grounding",
                    "supported_rate",
                )
            },
            "judge": cfg.judge if cfg.judge_limit > 0 else None,
            "judge_limit": cfg.judge_limit,
            **{
                k: m.get(k)
                for k in (
                    "judge_n",
                    "faithfulness",
                    "faithfulness_n",
                    "faithfulness_failed",
                    "relevancy",
                    "relevancy_n",
                    "relevancy_failed",
                    "recall_at_k",
                    "mrr_at_10",
                )
            },
            **{f"recall_at_{k}": retr.get(f"recall_at_{k}") for k in (1, 3, 5, 10)},
            "retrieval_n": retr.get("n"),
            "retrieval_p50_s": retr.get("latency_p50_s"),
            **{k: m.get(k) for k in ("latency_p50_s", "latency_p95_s", "peak_ram_mb")},
            # speed depends on the CPU and the dtype chosen for it: a figure names both
            "dtype": None if meta["reader"] == "extractive" else choose_dtype(),
            "cpu": describe(),
            "comparisons": [
                {k: v for k, v in c.items() if k != "a"} for c in res.comparisons if c["a"] == s["name"]
            ],
        }
        assert tuple(row) == LOG_COLUMNS, "experiments row keys drifted from LOG_COLUMNS"
        rows.append(row)
    return rows


def _write_atomic(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return "" if v is None else v


def append_experiments(rows: Sequence[dict], runs: Path | None = None) -> Path:
    """Append rows to runs/experiments.jsonl and rewrite runs/experiments.csv from it; both atomically
    (write a temporary file, fsync, rename), under a lock so two runs cannot interleave."""
    import fcntl

    runs = Path(runs) if runs else runs_dir()
    runs.mkdir(parents=True, exist_ok=True)
    jpath, cpath = runs / EXPERIMENTS_JSONL, runs / EXPERIMENTS_CSV
    with open(runs / ".experiments.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = jpath.read_text(encoding="utf-8") if jpath.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        _write_atomic(jpath, old + new)
        all_rows = read_jsonl(jpath)
        cols = list(LOG_COLUMNS) + sorted({k for r in all_rows for k in r} - set(LOG_COLUMNS))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in all_rows:
            w.writerow({c: _csv_cell(r.get(c)) for c in cols})
        _write_atomic(cpath, buf.getvalue())
    return jpath
