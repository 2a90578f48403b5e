"""Retrieval quality and speed on SQuAD v1.1 dev over corpus/.

A question's gold is its paragraph (source file + character span); a retrieved chunk is a hit when
it is from the same file and overlaps that span. Prints a table and writes benchmarks/results/retrieval.json.

    python benchmarks/bench_retrieval.py [--limit N] [--index DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def overlaps(chunk, row) -> bool:
    return chunk.doc == row["source"] and chunk.start < row["end"] and chunk.end > row["start"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, default=Path("/tmp/rag-bench/index"))
    ap.add_argument("--limit", type=int, default=0, help="questions to use (0 = all)")
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    args = ap.parse_args()

    from indexing.build import build_index
    from indexing.retrieve import open_retriever
    from rag.config import IndexConfig

    stats = build_index([ROOT / "corpus"], args.index, IndexConfig())
    print(
        f"index: {stats.chunks} chunks ({stats.files_indexed} files embedded now, {stats.files_unchanged} unchanged)"
    )
    rows = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    if args.limit:
        rows = random.Random(0).sample(rows, args.limit)
    queries = [r["question"] for r in rows]
    results: dict = {"questions": len(rows), "chunks": stats.chunks, "modes": {}}
    for mode in ("dense", "bm25", "hybrid"):
        r = open_retriever(args.index, mode=mode)
        t = time.perf_counter()
        ranked = r.search_batch(queries, 10)
        batch_s = time.perf_counter() - t
        first = [
            next((i for i, h in enumerate(hits, 1) if overlaps(h.chunk, row)), None)
            for hits, row in zip(ranked, rows)
        ]
        rec = {k: sum(1 for f in first if f is not None and f <= k) / len(rows) for k in (1, 5, 10)}
        mrr = sum(1 / f for f in first if f is not None) / len(rows)
        lat = []
        for q in queries[: args.latency_queries]:
            t = time.perf_counter()
            r.search(q, 5)
            lat.append(time.perf_counter() - t)
        lat.sort()
        results["modes"][mode] = {
            "recall@1": round(rec[1], 4),
            "recall@5": round(rec[5], 4),
            "recall@10": round(rec[10], 4),
            "mrr@10": round(mrr, 4),
            "batch_queries_per_s": round(len(rows) / batch_s, 1),
            "latency_p50_ms": round(1000 * statistics.median(lat), 2),
            "latency_p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 2),
        }
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    results["machine"] = {
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "python": platform.python_version(),
        "load_avg_1m": round(__import__("os").getloadavg()[0], 2),
    }
    results["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["command"] = "python benchmarks/bench_retrieval.py" + (
        f" --limit {args.limit}" if args.limit else ""
    )

    print(
        f"\nSQuAD v1.1 dev, {len(rows)} questions, {stats.chunks} chunks (hit = chunk overlaps the gold paragraph)"
    )
    print(f"{'mode':8} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR@10':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for mode, m in results["modes"].items():
        print(
            f"{mode:8} {m['recall@1']:6.3f} {m['recall@5']:6.3f} {m['recall@10']:6.3f} {m['mrr@10']:7.3f} "
            f"{m['latency_p50_ms']:7.1f} {m['latency_p95_ms']:7.1f}"
        )
    print(
        f"peak RSS {results['peak_rss_mb']} MB; load average at the end {results['machine']['load_avg_1m']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
