"""Split a reader's F1 loss on retrieved passages into retrieval misses and reading among distractors.

Reads the saved predictions of a headline-style run (see scripts/headline_eval.sh): for the answerable
questions, F1 of SYSTEM and SYSTEM@gold, on the questions whose gold paragraph is in the top k and on
those where it is not.

    python scripts/retrieval_vs_reading.py /work/evalruns2/eval/bundled-48185d3d qwen2.5-0.5b+tuned
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import metrics as M  # noqa: E402
from eval.retrieval import is_gold_hit  # noqa: E402
from eval.runfiles import read_jsonl, safe_name  # noqa: E402
from eval.testset import load_testset, sample  # noqa: E402
from rag.types import Chunk  # noqa: E402


def _covering(files: list[Path], ids: set[str], what: str, fix: str) -> dict[str, dict]:
    """Rows by id of the newest file that holds every id (a file per system hash or retrieval setting:
    picking the newest complete one never mixes two adapters or two retrieval settings)."""
    for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
        rows = {r["id"]: r for r in read_jsonl(path)}
        if ids <= rows.keys():
            print(f"{what}: {path.name}", file=sys.stderr)
            return rows
    sys.exit(f"error: no file of {what} covering the {len(ids)} questions: {fix}")


def _f1(p: dict, q) -> float:
    return 0.0 if p["abstained"] else M.em_f1(p["text"], q.answers)[1]


def _mean(xs: list[float]) -> str:
    return f"F1 {100 * sum(xs) / len(xs):.1f} (n={len(xs)})" if xs else "n=0"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="the eval run folder holding pred-*.jsonl and hits-*.jsonl")
    ap.add_argument("system", help="a reader system, e.g. qwen2.5-0.5b+tuned (its @gold run must exist)")
    ap.add_argument("--limit", type=int, default=1300)
    ap.add_argument("--unanswerable", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=5)
    a = ap.parse_args()
    if not a.run_dir.is_dir():
        sys.exit(f"error: {a.run_dir} is not a folder: pass the eval run folder (RUNS/eval/bundled-...)")
    qs = {
        q.id: q
        for q in sample(load_testset(None).questions, a.limit, a.seed, a.unanswerable)
        if not q.unanswerable
    }
    fix = f"run rag eval --testset --limit {a.limit} --unanswerable {a.unanswerable} --seed {a.seed}"
    hits = _covering(list(a.run_dir.glob("hits-*.jsonl")), set(qs), "retrieved passages", fix)
    found = {
        qid: any(
            is_gold_hit(Chunk(h["id"], h["doc"], h["text"], h["start"], h["end"]), qs[qid])
            for h in hits[qid]["hits"][: a.k]
        )
        for qid in qs
    }
    f1: dict[tuple[str, bool], list[float]] = {}
    for name in (a.system, a.system + "@gold"):
        p = _covering(
            list(a.run_dir.glob(f"pred-{safe_name(name)}-*.jsonl")),
            set(qs),
            f"predictions of {name}",
            f"{fix} -s {name}",
        )
        for hit in (True, False):
            f1[(name, hit)] = [_f1(p[q], qs[q]) for q in qs if found[q] == hit]
    print(f"{'system':32} {'gold in top ' + str(a.k):>18} {'gold missed':>16}")
    for name in (a.system, a.system + "@gold"):
        print(f"{name:32} {_mean(f1[(name, True)]):>18} {_mean(f1[(name, False)]):>16}")
    lost = {hit: sum(f1[(a.system + "@gold", hit)]) - sum(f1[(a.system, hit)]) for hit in (True, False)}
    print(
        f"F1 lost to retrieval misses: {100 * lost[False] / len(qs):.1f}; to reading among distractors: "
        f"{100 * lost[True] / len(qs):.1f} (of {len(qs)} answerable questions)"
    )


if __name__ == "__main__":
    main()
