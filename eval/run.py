"""Experiments: several systems answer the same questions on the same retrieved chunks, then get scored.

One run, one module per step:
  1. retrieve once per question (top max(k, 10), cached on disk per index + mode), shared by every
     system (eval.retrieval);
  2. for each reader (loaded once, released after), answer every question with the top-k passages, and
     for its "@gold" (oracle) variant with the gold paragraph instead, through rag.pipeline, the path
     `rag ask` serves; predictions are saved as they are made (eval.answers);
  3. optionally judge a seeded subsample with ragas (eval.judge);
  4. score (eval.metrics via eval.score), compare systems with paired bootstrap CIs, and append to the
     experiments log (eval.experiments).
System names and hashes are eval.systems'; the run folder's files and keys eval.runfiles'.

Latency is the reader's answer time per question (retrieval, shared by all systems, is reported once
for the test set). Peak RAM is the process's peak resident memory while that system loaded and ran
(it includes what the process already held: Python, torch and the retriever's embedder).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.answers import predict
from eval.experiments import EXPERIMENTS_JSONL, LOG_COLUMNS, append_experiments, log_rows
from eval.judge import judge_ids, judge_name, judge_predictions
from eval.retrieval import (
    Contexts,
    Progress,
    Retrieved,
    default_index_dir,
    gold_paragraphs,
    is_gold_hit,
    retrieve,
    retrieve_absent,
)
from eval.runfiles import read_jsonl, run_folder, short_hash, writable_run_dir
from eval.score import compare, retrieval_scores, score_systems
from eval.systems import SystemSpec, installed_systems, open_reader, parse_system, system_hash, system_meta
from eval.testset import ABSENT_ORIGIN, Question, TestSet
from rag.config import RetrievalConfig, runs_dir
from rag.errors import BadInput

# The names callers import from eval.run (the CLI, tests, eval.report, scripts), re-exported.
__all__ = [
    "EXPERIMENTS_JSONL",
    "LOG_COLUMNS",
    "EvalConfig",
    "EvalResult",
    "SystemSpec",
    "append_experiments",
    "installed_systems",
    "is_gold_hit",
    "judge_ids",
    "parse_system",
    "read_jsonl",
    "run_eval",
]

_RETRIEVAL = RetrievalConfig()


@dataclass(frozen=True)
class EvalConfig:
    k: int = _RETRIEVAL.k  # passages handed to the reader
    mode: str = _RETRIEVAL.mode  # retrieval mode
    rrf_k: int = _RETRIEVAL.rrf_k  # reciprocal rank fusion constant (hybrid mode)
    candidates: int = _RETRIEVAL.candidates  # per-mode candidates fused in hybrid mode
    rerank: bool = _RETRIEVAL.rerank  # rescore the fused top rerank_candidates with a cross-encoder
    rerank_candidates: int = _RETRIEVAL.rerank_candidates  # fused hits the reranker rescores
    reranker: str = _RETRIEVAL.reranker  # reranker preset or ONNX folder
    rerank_tokens: int = _RETRIEVAL.rerank_tokens  # longest query+passage pair the reranker reads
    rerank_names: bool = _RETRIEVAL.rerank_names  # the reranker reads each passage after its document's name
    index_dir: Path | str | None = None  # None = the default index; a folder or a postgresql:// URL
    absent_index: Path | None = None  # the held-out index corpus-absent questions are asked against
    seed: int = 0  # sampling and judge-subsample seed, recorded
    limit: int | None = None  # recorded only: the caller samples the questions
    judge: str | None = None  # judge preset (None = no judged metrics unless judge_limit > 0 -> default)
    judge_limit: int = 0  # answerable questions judged per system (0 = no judge)
    judge_systems: Sequence[str] | None = None  # systems the judge scores (None = all of them)
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
    judge: str | None = None  # the judge preset that scored (resolved from config.judge when judging)

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
            "absent_index": None if self.config.absent_index is None else str(self.config.absent_index),
            "judge": self.judge,
            "judge_limit": self.config.judge_limit,
            "judge_systems": self.config.judge_systems,
            "retrieval": self.retrieval,
            "comparisons": self.comparisons,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
        }


def check_request(systems: Sequence[SystemSpec], cfg: EvalConfig) -> None:
    """BadInput for a run that cannot be what was asked: no systems, duplicates, k < 1, an unknown
    --judge-system."""
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


def run_eval(
    testset: TestSet,
    questions: Sequence[Question],
    systems: Sequence[SystemSpec],
    cfg: EvalConfig | None = None,
    *,
    retriever: Any = None,
    reader_factory: Callable[[SystemSpec], Any] | None = None,
    judge: Any = None,
    progress: Progress | None = None,
    index_key: str | None = None,
    write_log: bool = True,
    absent_retriever: Any = None,
    absent_key: str | None = None,
) -> EvalResult:
    """Answer `questions` with every system, score them, and append the runs to the experiments log.

    `retriever` (an object with .search) and `reader_factory` (SystemSpec -> Reader) replace the real
    index and readers, e.g. in tests; `judge` is an eval.judge.Judge (else one is loaded when
    cfg.judge_limit > 0). `index_key` names the retrieval source in cache keys when a retriever is given.
    Corpus-absent questions (eval.absent) are retrieved from cfg.absent_index, or `absent_retriever`
    (cached under `absent_key`). `progress(phase, done, total)` is called as questions are retrieved,
    answered and judged.
    """
    cfg = cfg or EvalConfig()
    check_request(systems, cfg)
    runs = Path(cfg.runs) if cfg.runs else runs_dir()
    run_dir = run_folder(runs, testset.name, testset.files)
    writable_run_dir(run_dir, runs)
    qs = list(questions)
    golds = gold_paragraphs(qs, testset, systems)

    # 1. retrieval, once per question, cached per index + mode + depth; corpus-absent questions from
    # the held-out index
    found, away = Retrieved(), Retrieved()
    if any(not s.oracle for s in systems):
        absent = [q for q in qs if q.origin == ABSENT_ORIGIN]
        found = retrieve(
            [q for q in qs if q.origin != ABSENT_ORIGIN], cfg, run_dir, retriever, index_key, progress
        )
        if absent:
            away = retrieve_absent(absent, cfg, run_dir, absent_retriever, absent_key, progress)
    contexts = Contexts({**found.hits, **away.hits}, golds, cfg.k)

    # 2. answers, grouped by reader so each model loads once
    shash = {s.name: system_hash(s, cfg.k) for s in systems}
    preds = predict(qs, systems, shash, contexts, run_dir, reader_factory or open_reader, cfg.fresh, progress)

    # 3. judge a seeded subsample of answerable questions, the same ids for every system
    judged: dict[str, dict[str, dict]] = {s.name: {} for s in systems}
    judge_used = cfg.judge
    if cfg.judge_limit > 0:
        judge_used = judge_name(judge, cfg.judge)
        judged = judge_predictions(
            qs, systems, preds, contexts, shash, cfg, run_dir, judge_used, judge, progress
        )

    # 4. score, compare, log
    index = None
    if found.hits and (index_key is None or found.opened):
        from indexing.backends import display, is_url

        index = (
            display(cfg.index_dir)
            if is_url(cfg.index_dir)
            else str(Path(cfg.index_dir or default_index_dir()).resolve())
        )
    retrieval = retrieval_scores(qs, found.hits, found.seconds, cfg.k)
    per_q, metrics = score_systems(qs, systems, preds, contexts, judged, retrieval)
    result = EvalResult(
        run_id=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + short_hash(str(time.time_ns()))[:6],
        run_dir=run_dir,
        testset=testset.describe(),
        config=cfg,
        systems=[_system_entry(s, metrics[s.name], shash[s.name]) for s in systems],
        retrieval=retrieval,
        comparisons=compare(systems, per_q, judged, qs, cfg.n_boot, cfg.seed),
        n_questions=len(qs),
        index=index,
        judge=judge_used,
    )
    result.rows = log_rows(result)
    (run_dir / f"run-{result.run_id}.json").write_text(json.dumps(result.as_json(), indent=1))
    if write_log:
        append_experiments(result.rows, runs)
    return result


def _system_entry(s: SystemSpec, metrics: dict, shash: str) -> dict:
    meta = {**system_meta(s), "reader": s.reader, "oracle": s.oracle, "system_hash": shash}
    return {"name": s.name, "n": metrics["n"], "meta": meta, "metrics": metrics}
