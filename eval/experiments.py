"""The experiments log: one row per system per run, in runs/experiments.jsonl and runs/experiments.csv.

LOG_COLUMNS is the schema: JSONL rows carry exactly these keys, in this order, and the CSV header is
this order (plus any keys older rows carry). A row that drifts from it is refused with LogSchemaDrift
before anything is written, so a mistake in this file cannot reach the log.

Columns about answers: em, f1, correct_cited (x100); declined, abstain_* and wrong_abstain_rate
(abstention), with declined split into declined_absent (corpus-absent questions, eval.absent) and
declined_disfl (Disfl-QA near misses), x100, None when the run had none of that kind;
citation_accuracy and citation_rate; grounding (eval.metrics: the share of the answer's content words
found in the passages it cites, the reader's own support test) and supported_rate (the share of
answers the reader itself flagged supported: the same test thresholded); judged faithfulness and
relevancy (ragas); retrieval, latency and peak RAM.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.runfiles import read_jsonl
from rag.config import REPO_ROOT, runs_dir
from rag.errors import RagError
from rag.files import write_atomic
from rag.hardware import choose_dtype, describe

if TYPE_CHECKING:
    from eval.run import EvalResult

EXPERIMENTS_JSONL = "experiments.jsonl"
EXPERIMENTS_CSV = "experiments.csv"
# bump when the experiments row schema changes; 2 added declined_absent and declined_disfl. Older rows
# stay in the log as written (readers take missing keys as None; the CSV leaves their cells empty)
LOG_VERSION = 2

# What a row says about the system (from eval.systems.system_meta), its answers, and its judged scores.
META_COLUMNS = (
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
ANSWER_COLUMNS = (
    "n",
    "n_answerable",
    "n_unanswerable",
    "em",
    "f1",
    "correct_cited",
    "declined",
    "declined_absent",
    "declined_disfl",
    "abstain_precision",
    "abstain_recall",
    "wrong_abstain_rate",
    "citation_accuracy",
    "citation_rate",
    "grounding",
    "supported_rate",
)
JUDGED_COLUMNS = (
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
    *META_COLUMNS,
    *ANSWER_COLUMNS,
    "judge",
    "judge_limit",
    *JUDGED_COLUMNS,
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


class LogSchemaDrift(RagError):
    """An experiments row whose keys are not LOG_COLUMNS (a bug in this module, not in the user's run)."""


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


def check_row(row: dict) -> None:
    """LogSchemaDrift unless the row's keys are exactly LOG_COLUMNS, in order."""
    if tuple(row) != LOG_COLUMNS:
        extra = [k for k in row if k not in LOG_COLUMNS]
        missing = [k for k in LOG_COLUMNS if k not in row]
        raise LogSchemaDrift(
            f"experiments row keys drifted from LOG_COLUMNS (extra {extra}, missing {missing}, or out of "
            "order): fix eval/experiments.py (add new columns to LOG_COLUMNS and bump LOG_VERSION)"
        )


def log_rows(res: EvalResult) -> list[dict]:
    """The experiments-log rows of a run, one per system, checked against LOG_COLUMNS."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    commit = _git_commit()
    rows = []
    for s in res.systems:
        row = _row(res, s, now, commit)
        check_row(row)
        rows.append(row)
    return rows


def _row(res: EvalResult, s: dict, now: str, commit: str | None) -> dict:
    cfg, m, meta = res.config, s["metrics"], s["meta"]
    retr = {} if meta["oracle"] else res.retrieval
    return {
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
        **{k: meta.get(k) for k in META_COLUMNS},
        **{k: m.get(k) for k in ANSWER_COLUMNS},
        "judge": res.judge if cfg.judge_limit > 0 else None,
        "judge_limit": cfg.judge_limit,
        **{k: m.get(k) for k in JUDGED_COLUMNS},
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
        write_atomic(jpath, old + new)
        all_rows = read_jsonl(jpath)
        cols = list(LOG_COLUMNS) + sorted({k for r in all_rows for k in r} - set(LOG_COLUMNS))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in all_rows:
            w.writerow({c: _csv_cell(r.get(c)) for c in cols})
        write_atomic(cpath, buf.getvalue())
    return jpath
