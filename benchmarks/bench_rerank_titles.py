"""Does the cross-encoder rank better when each passage is prefixed with its document's name?

A probe for a reranker option that is not built yet. The fused hybrid top-20 of each question is rescored
twice by the default reranker: on the chunk text as `rag ask` scores it today, and on "NAME. text", where
NAME is the file name without its extension, "_" and "-" read as spaces ("git-fetch.txt" -> "git fetch",
"Super_Bowl_50.txt" -> "Super Bowl 50"). Documentation chunks often leave out the command they describe,
which the page name holds. Two sets: the git documentation set (eval/data/docs, its answerable questions,
over an index of its corpus) and a seeded sample of SQuAD v1.1 dev over corpus/. A hit is a chunk that
overlaps the gold span, as in the eval.

The cut ([reader] min_rerank_score) was chosen on scores without titles, so an option built from this
needs the cut chosen again (bench_abstain) before it can be a default.

    python benchmarks/bench_rerank_titles.py [--squad 300] [--candidates 20]
Prints a table and writes benchmarks/results/rerank_titles.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, write_result  # noqa: E402

from indexing.rerank import pair_text  # noqa: E402

KS = (1, 2, 3, 5)


def overlaps(chunk, q: dict) -> bool:
    """The eval's test for a gold hit: the same source file and overlapping spans."""
    from eval.metrics import same_source, spans_overlap

    return same_source(chunk.doc, q["source"]) and spans_overlap(chunk.start, chunk.end, q["start"], q["end"])


def first_hits(retriever, scorer, qs: list[dict], candidates: int) -> dict[str, list[int | None]]:
    """Per variant, the 0-based rank of the first relevant chunk after reranking (None: not in the top N)."""
    out: dict[str, list[int | None]] = {"plain": [], "titles": []}
    for q in qs:
        hits = retriever.search(q["question"], candidates)
        gold = [overlaps(h.chunk, q) for h in hits]
        texts = {
            "plain": [h.chunk.text for h in hits],
            "titles": [pair_text(h.chunk.text, h.chunk.doc) for h in hits],
        }
        for name, t in texts.items():
            s = scorer.score(q["question"], t) if t else []
            order = sorted(range(len(hits)), key=lambda i: -s[i])
            out[name].append(next((r for r, i in enumerate(order) if gold[i]), None))
    return out


def recall(ranks: list[int | None]) -> dict:
    return {
        f"recall@{k}": round(sum(1 for r in ranks if r is not None and r < k) / len(ranks), 4) for k in KS
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--squad", type=int, default=300, help="seeded SQuAD v1.1 dev questions")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerank_titles.json")
    args = ap.parse_args()

    from indexing.build import build_index
    from indexing.rerank import load_reranker
    from rag.config import IndexConfig, default_index_dir, load_config
    from rag.hardware import describe

    hw = describe()
    print(cpu_line(hw, f", load {os.getloadavg()[0]:.2f}"))
    rc = load_config().retrieval
    scorer = load_reranker(rc.reranker, max_tokens=rc.rerank_tokens)

    docs_q = [json.loads(line) for line in open(ROOT / "eval" / "data" / "docs" / "questions.jsonl")]
    docs_q = [q for q in docs_q if q.get("answers")]
    squad_q = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    squad_q = random.Random(0).sample(squad_q, min(args.squad, len(squad_q)))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        docs_index = Path(tmp) / "docs-index"
        build_index([ROOT / "eval" / "data" / "docs" / "corpus"], docs_index, IndexConfig())
        build_index([ROOT / "corpus"], default_index_dir(), IndexConfig())  # incremental: usually a no-op
        sets = [("git docs", docs_index, docs_q), ("SQuAD dev", default_index_dir(), squad_q)]
        for name, index, qs in sets:
            ranks = first_hits(fused_retriever(index), scorer, qs, args.candidates)
            for variant, r in ranks.items():
                rows.append({"set": name, "variant": variant, "questions": len(qs), **recall(r)})

    print(f"\nreranked hybrid top-{args.candidates}, passage text with and without its document's name")
    print(f"{'set':12} {'variant':8} {'n':>4} " + " ".join(f"{'R@' + str(k):>6}" for k in KS))
    for r in rows:
        print(
            f"{r['set']:12} {r['variant']:8} {r['questions']:4d} "
            + " ".join(f"{r[f'recall@{k}']:6.3f}" for k in KS)
        )
    write_result(
        args.out,
        "rerank_titles",
        hw,
        {
            "squad": args.squad,
            "candidates": args.candidates,
            "reranker": rc.reranker,
            "tokens": rc.rerank_tokens,
        },
        rows,
        summary={f"{r['set']} {r['variant']} recall@3": r["recall@3"] for r in rows},
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


if __name__ == "__main__":
    main()
