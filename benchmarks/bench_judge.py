"""Does the judge tell faithful answers from unfaithful ones? Validation on labelled cases.

`rag eval --judge-limit` reports ragas faithfulness and answer relevancy from a small local judge LLM.
Before those columns mean anything, the judge must score answers whose label is known by construction:

  - span      the gold answer of a SQuAD dev question, over its gold paragraph      (faithful, relevant)
  - sentence  the paragraph's sentence that holds the gold answer, verbatim          (faithful, relevant)
  - swap      the gold answer of a question about another article, absent from the  (unfaithful, irrelevant)
              paragraph

For each metric it prints the mean score per kind, the AUC (probability that a random faithful case
scores above a random unfaithful one; ties count half; 0.5 = chance), the accuracy at a 0.5 threshold,
and how many judge outputs did not parse. Scores are cached per case in benchmarks/results/judge_cases.jsonl,
so an interrupted run resumes. Writes benchmarks/results/judge.json. Slow: the 1.5B judge needs about a
minute per case on 2 cores; run it on an otherwise idle machine.

    python benchmarks/bench_judge.py [--n 8] [--judge qwen2.5-1.5b] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

# kind -> (faithful, relevant) labels
KINDS = {"span": (1, 1), "sentence": (1, 1), "swap": (0, 0)}


def build_cases(n: int, seed: int) -> list[dict]:
    """n questions x the three kinds, from the bundled SQuAD dev questions with a known gold paragraph."""
    from eval.metrics import contains_answer
    from eval.testset import gold_context, load_testset
    from rag.reader import split_sentences

    ts = load_testset()
    cache: dict = {}
    pool = [q for q in ts.questions if not q.unanswerable and q.has_gold_span]
    rng = random.Random(seed)
    rng.shuffle(pool)
    cases = []
    for q in pool:
        if len(cases) >= 3 * n:
            break
        ctx = gold_context(q, ts.corpus_root, cache)
        if not ctx:
            continue
        gold = q.answers[0]
        sentence = next(
            (ctx[a:b] for a, b in split_sentences(ctx) if contains_answer(ctx[a:b], [gold])), None
        )
        # a swap: another article's gold answer that the paragraph does not contain (deterministic pick)
        others = [o for o in pool if o.source != q.source and not contains_answer(ctx, [o.answers[0]])]
        if sentence is None or not others:
            continue
        swap = others[int(hashlib.sha256(q.id.encode()).hexdigest(), 16) % len(others)].answers[0]
        for kind, answer in (("span", gold), ("sentence", sentence.strip()), ("swap", swap)):
            f, r = KINDS[kind]
            cases.append(
                {
                    "id": f"{q.id}:{kind}",
                    "qid": q.id,
                    "kind": kind,
                    "question": q.question,
                    "answer": answer,
                    "context": ctx,
                    "faithful": f,
                    "relevant": r,
                }
            )
    return cases


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(score of a random positive > score of a random negative), ties count half.

    >>> auc([1.0, 0.5], [0.0, 0.5])
    0.875
    """
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for metric, label in (("faithfulness", "faithful"), ("relevancy", "relevant")):
        ok = [r for r in rows if r.get(metric) is not None]
        m: dict = {"n": len(rows), "failed": len(rows) - len(ok)}
        for kind in KINDS:
            vals = [r[metric] for r in ok if r["kind"] == kind]
            m[f"mean_{kind}"] = round(sum(vals) / len(vals), 3) if vals else None
            m[f"n_{kind}"] = len(vals)
        pos = [r[metric] for r in ok if r[label]]
        neg = [r[metric] for r in ok if not r[label]]
        a = auc(pos, neg)
        m["auc"] = None if a is None else round(a, 3)
        m["accuracy_at_0.5"] = (
            round(sum((r[metric] >= 0.5) == bool(r[label]) for r in ok) / len(ok), 3) if ok else None
        )
        out[metric] = m
    secs = [r["seconds"] for r in rows if r.get("seconds")]
    out["seconds_per_case"] = round(sum(secs) / len(secs), 1) if secs else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8, help="questions (3 labelled cases each)")
    ap.add_argument("--judge", default=None, help="judge preset (default: the strongest in the model store)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from tqdm import tqdm

    from eval.judge import JudgeSample, default_judge_preset, load_judge

    name = args.judge or default_judge_preset()
    cases = build_cases(args.n, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache_path = RESULTS / "judge_cases.jsonl"
    cache = {}
    if cache_path.is_file():
        for line in cache_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                cache[(r["judge"], r["id"], r["answer"])] = r
    todo = [c for c in cases if (name, c["id"], c["answer"]) not in cache]
    if todo:
        judge = load_judge(name)
        with open(cache_path, "a") as f:
            for c in tqdm(todo, desc=f"judge {name}", unit="case"):
                sc = judge.score(JudgeSample(c["question"], c["answer"], [c["context"]]))
                row = {"judge": name, **c, **sc.as_dict()}
                row.pop("context")
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
                cache[(name, c["id"], c["answer"])] = row
    rows = [cache[(name, c["id"], c["answer"])] for c in cases]
    summary = summarize(rows)

    print(f"judge {name}: {args.n} questions x {len(KINDS)} kinds, seed {args.seed}")
    print(f"{'metric':<13} {'span':>6} {'sentence':>9} {'swap':>6} {'AUC':>6} {'acc@0.5':>8} {'failed':>7}")
    for metric in ("faithfulness", "relevancy"):
        m = summary[metric]
        cells = [m[f"mean_{k}"] for k in KINDS] + [m["auc"], m["accuracy_at_0.5"]]
        print(
            f"{metric:<13} "
            + " ".join(f"{'-' if v is None else v:>{w}}" for v, w in zip(cells, (6, 9, 6, 6, 8)))
            + f" {m['failed']:>7}"
        )
    print(f"{summary['seconds_per_case']} s per case")
    out = {
        "judge": name,
        "n_questions": args.n,
        "seed": args.seed,
        "summary": summary,
        "cases": [
            {
                k: r[k]
                for k in (
                    "id",
                    "kind",
                    "answer",
                    "faithfulness",
                    "relevancy",
                    "faithfulness_error",
                    "relevancy_error",
                )
            }
            for r in rows
        ],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_judge.py " + " ".join(sys.argv[1:]),
    }
    tmp = RESULTS / "judge.json.tmp"
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(RESULTS / "judge.json")
    print(f"wrote {RESULTS / 'judge.json'}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.0f} s")
