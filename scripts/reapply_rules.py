"""Re-apply the reader's decline rules offline to saved span-decoding predictions of `rag eval`.

Each saved row keeps its names-rule decision, the log P gap of span decoding and the best span (even when
it declined), and the run folder's hits file keeps the reranker scores, so a (cut, gap) pair can be scored
without answering again: declined when a name is missing, when the best of the first K reranked passages
scores below the cut, or when the gap exceeds the threshold; otherwise the span is the answer. A cut looser
than the run's cannot be re-applied to rows the run's cut declined unread (they have no span).

    python scripts/reapply_rules.py PRED.jsonl --hits RUN/hits-A.jsonl [RUN/hits-B.jsonl] \
        --rule=-3.5,inf --rule=-8,3.395 [--gold eval/data/squad_dev.jsonl] [--k 3]

Prints EM / F1 on the answerable questions and the share declined per kind: Disfl-QA ("disfl_" ids),
corpus-absent ("absent:" ids or questions without answers in --gold), and answerable (wrong declines).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_scores(hits_files: list[Path], k: int) -> dict[str, float]:
    best = {}
    for f in hits_files:
        for line in open(f):
            r = json.loads(line)
            scores = [h["rerank_score"] for h in r["hits"][:k] if h.get("rerank_score") is not None]
            best[r["id"]] = max(scores) if scores else float("inf")  # not reranked: the cut cannot act
    return best


def score(
    rows: list[dict], gold: dict[str, list[str]], best: dict[str, float], cut: float, gap: float
) -> dict:
    from rag.text import em_f1

    n = {"answerable": 0, "disfl": 0, "absent": 0}
    declined = dict.fromkeys(n, 0)
    em = f1 = 0.0
    for r in rows:
        i, d = r["id"], r.get("decision") or {}
        kind = (
            "disfl"
            if i.startswith("disfl")
            else "absent"
            if i.startswith("absent") or not gold.get(i)
            else "answerable"
        )
        n[kind] += 1
        if d.get("missing_names") or best.get(i, float("inf")) < cut:
            out, text = True, ""
        elif d.get("abstain_logprob") is not None and d.get("answer_logprob") is not None:
            out = d["abstain_logprob"] - d["answer_logprob"] > gap
            text = re.sub(r"\s*\[\d+\]\s*$", "", d.get("span") or "")
        else:
            out, text = r["abstained"], r["text"]
        if out:
            declined[kind] += 1
        elif kind == "answerable":
            e, f = em_f1(text, gold[i])
            em, f1 = em + e, f1 + f
    a = max(1, n["answerable"])
    return {
        "n": n,
        "EM": round(100 * em / a, 1),
        "F1": round(100 * f1 / a, 1),
        "absent declined %": round(100 * declined["absent"] / max(1, n["absent"]), 1),
        "Disfl declined %": round(100 * declined["disfl"] / max(1, n["disfl"]), 1),
        "wrong declines %": round(100 * declined["answerable"] / a, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=Path)
    ap.add_argument(
        "--hits", type=Path, nargs="+", required=True, help="the run folder's reranked hits files"
    )
    ap.add_argument(
        "--rule",
        action="append",
        required=True,
        help="CUT,GAP, e.g. --rule=-3.5,inf (with = : the value starts with a minus)",
    )
    ap.add_argument("--gold", type=Path, default=ROOT / "eval" / "data" / "squad_dev.jsonl")
    ap.add_argument("--k", type=int, default=3, help="passages the reader was given")
    args = ap.parse_args()
    gold = {q["id"]: q.get("answers") or [] for q in map(json.loads, open(args.gold))}
    rows = [json.loads(line) for line in open(args.pred)]
    best = best_scores(args.hits, args.k)
    for rule in args.rule:
        cut, gap = (float(x) for x in rule.split(","))
        print(f"cut {cut:g}, gap {gap:g}: {score(rows, gold, best, cut, gap)}")


if __name__ == "__main__":
    main()
