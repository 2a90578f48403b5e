"""Retrieval quality and speed on SQuAD v1.1 dev over corpus/: each embedder, each mode, and reranking.

A question's gold is its paragraph (source file + character span); a retrieved chunk is a hit when it is
from the same file and overlaps that span. For each embedder an index of corpus/ is built (its build
time is the ONNX-vs-torch indexing figure), then dense, bm25 and hybrid are scored on every question.
Reranking: each question's fused hybrid top-max(N) is scored once by the cross-encoder (pairs cut to
--rerank-tokens); the row for a smaller N reranks the first N of the same list with the same scores, so
one scoring pass gives every N. Pair scores are cached by (question, chunk text) across embedders.
Latency is timed one query at a time, as `rag ask` runs it, on the first --latency-queries questions.

    python benchmarks/bench_retrieval.py [--limit N] [--embedders minilm bge-small]
        [--rerank-candidates 10 20] [--rerank-tokens 256] [--rerank-limit N]
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

KS = (1, 3, 5, 10)


def overlaps(chunk, row) -> bool:
    return chunk.doc == row["source"] and chunk.start < row["end"] and chunk.end > row["start"]


def ranks(ranked, rows) -> list[int | None]:
    """1-based rank of the first gold chunk per question (None when none was retrieved)."""
    return [
        next((i for i, h in enumerate(hits, 1) if overlaps(h.chunk, row)), None)
        for hits, row in zip(ranked, rows)
    ]


def quality(first: list[int | None]) -> dict:
    n = len(first)
    out = {f"recall@{k}": round(sum(1 for f in first if f and f <= k) / n, 4) for k in KS}
    out["mrr@10"] = round(sum(1 / f for f in first if f and f <= 10) / n, 4)
    return out


def percentiles(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {
        "latency_p50_ms": round(statistics.median(ms), 1),
        "latency_p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
    }


def timed(fn, queries) -> list[float]:
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        out.append(1000 * (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/rag-bench"), help="where the indexes are built")
    ap.add_argument("--limit", type=int, default=0, help="seeded sample of questions (0 = all 10,565)")
    ap.add_argument("--embedders", nargs="+", default=["bge-small", "minilm"])
    ap.add_argument("--rerank-limits", type=int, nargs="*", default=None, help="--rerank-limit per embedder")
    ap.add_argument("--rerank-candidates", type=int, nargs="*", default=[10, 20], help="N values (none: off)")
    ap.add_argument("--rerank-tokens", type=int, default=256)
    ap.add_argument(
        "--rerank-limit", type=int, default=0, help="rerank only N of the (seeded) questions (0 = all)"
    )
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument(
        "--score-cache", type=Path, default=None, help="JSONL of pair scores (default: in --work)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    args = ap.parse_args()

    from indexing.build import build_index
    from indexing.rerank import load_reranker, rerank
    from rag.config import IndexConfig
    from rag.hardware import describe

    hw = describe()
    print(cpu_line(hw, f", load {os.getloadavg()[0]:.2f}"))
    rows = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    # seeded order even for all questions, so that --rerank-limit takes a random sample, not the first articles
    rows = random.Random(0).sample(rows, args.limit or len(rows))
    queries = [r["question"] for r in rows]
    lat_q = queries[: args.latency_queries]
    n_max = max(args.rerank_candidates, default=0)
    scorer = load_reranker("minilm-reranker", max_tokens=args.rerank_tokens) if n_max else None
    cache: dict[tuple[int, str], float] = {}
    # Pair scores persist (keyed by the query and chunk texts), so an interrupted run resumes, and a later
    # run over more questions only scores what is new.
    from indexing.onnx import RUNS

    # scores from batched runs (before RUNS) differ a little: a cache passed with --score-cache should match
    store = args.score_cache or args.work / f"rerank-scores-t{args.rerank_tokens}-{RUNS}.jsonl"
    saved: dict[tuple[str, str], float] = {}
    if n_max and store.is_file():
        for line in open(store):
            try:
                r = json.loads(line)
                saved[(r["q"], r["c"])] = r["s"]
            except (ValueError, KeyError):
                continue  # a line cut by an interrupted run
        print(f"{len(saved)} saved pair scores from {store}")
    store.parent.mkdir(parents=True, exist_ok=True)
    sink = open(store, "a") if n_max else None
    out_rows, builds = [], {}

    limits = args.rerank_limits or [args.rerank_limit] * len(args.embedders)
    for emb, rr_limit in zip(args.embedders, limits):
        rr_rows = rows[: rr_limit or len(rows)]
        index = args.work / f"index-{emb}"
        t = time.perf_counter()
        stats = build_index([ROOT / "corpus"], index, IndexConfig(embedder=emb))
        build_s = time.perf_counter() - t
        if stats.files_indexed:  # a build that only found unchanged files measures nothing
            builds[emb] = {"seconds": round(build_s, 1), "chunks": stats.chunks}
        print(f"{emb}: {stats.chunks} chunks, {stats.files_indexed} files embedded now in {build_s:.1f} s")
        for mode in ("dense", "bm25", "hybrid") if emb == args.embedders[0] else ("dense", "hybrid"):
            r = fused_retriever(index, mode)
            fused = r.search_batch(queries, max(10, n_max))
            name = mode if mode == "bm25" else f"{mode} ({emb})"
            row = {"system": name, "embedder": None if mode == "bm25" else emb, "questions": len(rows)}
            row |= quality(ranks([h[:10] for h in fused], rows))
            row |= percentiles(timed(lambda q, r=r: r.search(q, 5), lat_q))
            out_rows.append(row)
            print(
                f"  {name:<24} @1 {row['recall@1']:.3f} @5 {row['recall@5']:.3f} p50 {row['latency_p50_ms']} ms"
            )
            if mode != "hybrid" or not n_max:
                continue
            done, t0 = 0, time.perf_counter()
            scored = []
            for qi, (q, hits) in enumerate(zip(queries[: len(rr_rows)], fused)):
                hits = hits[:n_max]
                todo = []
                for h in hits:
                    key = (qi, h.chunk.text)
                    if key not in cache and (q, h.chunk.id) in saved:
                        cache[key] = saved[(q, h.chunk.id)]
                    elif key not in cache:
                        todo.append(h)
                if todo:
                    for h, s in zip(todo, scorer.score(q, [h.chunk.text for h in todo])):
                        cache[(qi, h.chunk.text)] = s
                        saved[(q, h.chunk.id)] = s
                        sink.write(json.dumps({"q": q, "c": h.chunk.id, "s": s}) + "\n")
                    sink.flush()
                scored.append(hits)
                done += 1
                if done % 500 == 0:
                    el = time.perf_counter() - t0
                    print(
                        f"  reranked {done}/{len(rr_rows)} ({el:.0f} s, ETA {el / done * (len(rr_rows) - done):.0f} s)"
                    )
            for n in sorted(args.rerank_candidates):
                re_ranked = [
                    sorted(hits[:n], key=lambda h, qi=qi: -cache[(qi, h.chunk.text)])
                    for qi, hits in enumerate(scored)
                ]
                row = {
                    "system": f"hybrid ({emb}) + rerank N={n}",
                    "embedder": emb,
                    "rerank_candidates": n,
                    "rerank_tokens": args.rerank_tokens,
                    "questions": len(rr_rows),
                }
                row |= quality(ranks(re_ranked, rr_rows))
                row |= {
                    "hybrid_" + k: v
                    for k, v in quality(ranks([h[:10] for h in fused[: len(rr_rows)]], rr_rows)).items()
                    if k in ("recall@1", "recall@5")
                }
                scorer.score(lat_q[0], ["warm-up"])
                rr_ms = timed(lambda q, n=n, r=r: rerank(scorer, q, r.search(q, n), 5), lat_q)
                row |= {"rerank_" + k: v for k, v in percentiles(rr_ms).items()}
                out_rows.append(row)
                print(
                    f"  {row['system']:<24} @1 {row['recall@1']:.3f} @5 {row['recall@5']:.3f} "
                    f"(hybrid {row['hybrid_recall@1']:.3f}/{row['hybrid_recall@5']:.3f} on these) "
                    f"search+rerank p50 {row['rerank_latency_p50_ms']} ms"
                )

    print(f"\nSQuAD v1.1 dev, {len(rows)} questions (hit = a chunk overlapping the gold paragraph)")
    print(f"{'system':<34} {'n':>6} {'R@1':>6} {'R@3':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'p50 ms':>8}")
    for r in out_rows:
        p50 = r.get("rerank_latency_p50_ms", r.get("latency_p50_ms"))
        print(
            f"{r['system']:<34} {r['questions']:>6} {r['recall@1']:6.3f} {r['recall@3']:6.3f} "
            f"{r['recall@5']:6.3f} {r['recall@10']:6.3f} {r['mrr@10']:6.3f} {p50:8.1f}"
        )
    for emb, b in builds.items():
        print(f"index build {emb}: {b['seconds']} s for {b['chunks']} chunks")
    best = max((r for r in out_rows if "rerank_candidates" in r), key=lambda r: r["recall@5"], default=None)
    write_result(
        args.out,
        "retrieval",
        hw,
        {
            "limit": args.limit,
            "seed": 0,
            "embedders": args.embedders,
            "rerank_candidates": args.rerank_candidates,
            "rerank_tokens": args.rerank_tokens,
            "rerank_limits": dict(zip(args.embedders, limits)),
            "latency_queries": args.latency_queries,
        },
        out_rows,
        summary={r["system"]: r["recall@5"] for r in out_rows if r["system"].startswith("hybrid")}
        | ({"best_rerank_p50_ms": best["rerank_latency_p50_ms"]} if best else {}),
        builds=builds,
        load_avg_1m=round(os.getloadavg()[0], 2),
    )


if __name__ == "__main__":
    main()
