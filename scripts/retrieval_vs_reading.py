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
from eval.run import _safe, is_gold_hit, read_jsonl  # noqa: E402
from eval.testset import load_testset, sample  # noqa: E402
from rag.types import Chunk  # noqa: E402


def _preds(run_dir: Path, system: str) -> dict[str, dict]:
    files = sorted(run_dir.glob(f"pred-{_safe(system)}-*.jsonl"), key=lambda p: sum(1 for _ in p.open()))
    if not files:
        sys.exit(f"error: no predictions of {system} in {run_dir}: run rag eval with -s {system} first")
    return {r["id"]: r for r in read_jsonl(files[-1])}  # the most complete prediction file of the system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="the eval run folder holding pred-*.jsonl and hits-*.jsonl")
    ap.add_argument("system", help="a reader system, e.g. qwen2.5-0.5b+tuned (its @gold run must exist)")
    ap.add_argument("--limit", type=int, default=1300)
    ap.add_argument("--unanswerable", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=5)
    a = ap.parse_args()
    qs = {q.id: q for q in sample(load_testset(None).questions, a.limit, a.seed, a.unanswerable)
          if not q.unanswerable}
    hits = {}
    for path in a.run_dir.glob("hits-*.jsonl"):
        for r in read_jsonl(path):
            if r["id"] in qs:
                hits[r["id"]] = [Chunk(h["id"], h["doc"], h["text"], h["start"], h["end"]) for h in r["hits"]]
    found = {qid: any(is_gold_hit(c, qs[qid]) for c in hits[qid][: a.k]) for qid in qs}
    out = {}
    for name in (a.system, a.system + "@gold"):
        p = _preds(a.run_dir, name)
        for hit in (True, False):
            f1 = [0.0 if p[q]["abstained"] else M.em_f1(p[q]["text"], qs[q].answers)[1]
                  for q in qs if found[q] == hit]
            out[(name, hit)] = (len(f1), 100 * sum(f1) / len(f1))
    n = len(qs)
    print(f"{'system':32} {'gold in top ' + str(a.k):>18} {'gold missed':>16}")
    for name in (a.system, a.system + "@gold"):
        (n1, f1), (n0, f0) = out[(name, True)], out[(name, False)]
        print(f"{name:32} {f'F1 {f1:.1f} (n={n1})':>18} {f'F1 {f0:.1f} (n={n0})':>16}")
    (n1, r1), (n0, r0) = out[(a.system, True)], out[(a.system, False)]
    (_, g1), (_, g0) = out[(a.system + "@gold", True)], out[(a.system + "@gold", False)]
    print(f"F1 lost to retrieval misses: {n0 * (g0 - r0) / n:.1f}; to reading among distractors: "
          f"{n1 * (g1 - r1) / n:.1f} (of {n} answerable questions)")


if __name__ == "__main__":
    main()
