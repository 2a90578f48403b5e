"""Reranking the fused hybrid top-N with the int8 ONNX cross-encoder: recall and cost.

The first --limit seeded SQuAD v1.1 dev questions (the sample bench_retrieval.py draws) over corpus/;
a hit is judged as there (same file, overlapping the gold paragraph's span). Rows: hybrid alone, and
hybrid + rerank of the top --candidates with pairs cut to --tokens. Rerank time is the reranker's
share per query (scoring only), timed one query at a time as `rag ask` runs it.

    python benchmarks/bench_rerank.py [--limit 300] [--candidates 20] [--tokens 256] [--index DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, write_result  # noqa: E402


def overlaps(chunk, row) -> bool:
    return chunk.doc == row["source"] and chunk.start < row["end"] and chunk.end > row["start"]


def recall(ranked, rows, ks=(1, 3, 5)) -> dict:
    first = [
        next((i for i, h in enumerate(hits, 1) if overlaps(h.chunk, row)), None)
        for hits, row in zip(ranked, rows)
    ]
    return {f"recall@{k}": round(sum(1 for f in first if f and f <= k) / len(rows), 4) for k in ks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=None, help="index over corpus/ (default: $RAG_HOME/index)")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rerank.json")
    args = ap.parse_args()

    from indexing.build import build_index
    from indexing.rerank import load_reranker, rerank
    from rag.config import IndexConfig, default_index_dir
    from rag.hardware import describe

    hw = describe()
    print(cpu_line(hw, f", load {os.getloadavg()[0]:.2f}"))
    index = args.index or default_index_dir()
    stats = build_index([ROOT / "corpus"], index, IndexConfig())
    rows = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    rows = random.Random(0).sample(rows, args.limit)
    queries = [r["question"] for r in rows]

    hybrid = fused_retriever(index)
    fused = hybrid.search_batch(queries, args.candidates)
    scorer = load_reranker("minilm-reranker", max_tokens=args.tokens)
    scorer.score(queries[0], [h.chunk.text for h in fused[0]])  # warm-up: the first run builds kernels
    reranked, ms = [], []
    for q, hits in zip(queries, fused):
        t = time.perf_counter()
        reranked.append(rerank(scorer, q, hits, 10))
        ms.append(1000 * (time.perf_counter() - t))
    ms.sort()
    out_rows = [
        {"system": "hybrid", **recall(fused, rows)},
        {
            "system": f"hybrid+rerank N={args.candidates} tokens={args.tokens}",
            **recall(reranked, rows),
            "rerank_p50_ms": round(statistics.median(ms), 1),
            "rerank_p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
        },
    ]
    print(f"{len(rows)} questions, {stats.chunks} chunks, intra-op threads {hw['threads']}")
    for r in out_rows:
        extra = (
            f"  rerank p50 {r['rerank_p50_ms']} ms  p95 {r['rerank_p95_ms']} ms"
            if "rerank_p50_ms" in r
            else ""
        )
        print(
            f"{r['system']:<36} @1 {r['recall@1']:.3f}  @3 {r['recall@3']:.3f}  @5 {r['recall@5']:.3f}{extra}"
        )
    write_result(
        args.out,
        "rerank",
        hw,
        {"limit": args.limit, "seed": 0, "candidates": args.candidates, "tokens": args.tokens},
        out_rows,
        summary={  # what the deck's benchmark table shows
            "hybrid_recall@1": out_rows[0]["recall@1"],
            "rerank_recall@1": out_rows[1]["recall@1"],
            "rerank_p50_ms": out_rows[1]["rerank_p50_ms"],
        },
        load_avg_1m=round(os.getloadavg()[0], 2),
        index=str(index),
    )


if __name__ == "__main__":
    main()
