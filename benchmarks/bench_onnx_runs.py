"""How to run the int8 ONNX models on 2 cores: rows per onnxruntime call x (one session on every core, or
one one-thread session per core, each in its own thread), for the embedder over corpus/ chunks and for the
reranker over one query's fused candidates.

    python benchmarks/bench_onnx_runs.py [--texts 640] [--queries 40] [--repeats 3]

Each setting runs `--repeats` times, interleaved with the others (a slow minute hits every setting, not
one), and the table shows the median. Texts are length-sorted first, as indexing.onnx does. Prints a table
and writes benchmarks/results/onnx_runs.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, write_result  # noqa: E402


def run_all(sessions: list, calls: list[dict]) -> None:
    """Every call's inputs through the sessions: one session runs them in order, several take the next
    call from a shared list, one thread each."""
    if len(sessions) == 1:
        for c in calls:
            sessions[0].run(None, c)
        return
    todo, lock = iter(calls), threading.Lock()

    def work(s) -> None:
        while True:
            with lock:
                c = next(todo, None)
            if c is None:
                return
            s.run(None, c)

    with ThreadPoolExecutor(len(sessions)) as ex:
        for f in [ex.submit(work, s) for s in sessions]:
            f.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=640, help="corpus/ chunks for the embedder")
    ap.add_argument("--queries", type=int, default=40, help="SQuAD dev questions for the reranker")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--index", type=Path, default=None, help="an index of corpus/ (default: built in /tmp)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_runs.json")
    args = ap.parse_args()

    from indexing import store
    from indexing.build import build_index
    from indexing.embed import get_embedder
    from indexing.onnx import feed, make_session
    from indexing.rerank import load_reranker
    from rag.config import IndexConfig
    from rag.hardware import cores, describe

    hw = describe()
    print(cpu_line(hw))
    emb = get_embedder(IndexConfig().embedder)
    index = args.index or Path("/tmp/rag-bench-onnx-runs/index")
    if args.index is None:
        build_index([ROOT / "corpus"], index, IndexConfig())
    idx = store.open_index(index)
    texts = sorted((c.text for c in idx.db.get(list(range(len(idx))))[: args.texts]), key=len, reverse=True)
    reranker = load_reranker("minilm-reranker")
    retriever = fused_retriever(index)
    rows = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    questions = [r["question"] for r in random.Random(0).sample(rows, args.queries)]
    pairs = [
        reranker.encode_pairs(q, [h.chunk.text for h in retriever.search(q, args.candidates)])
        for q in questions
    ]

    models = {
        "embedder": (emb.folder / "model.onnx", emb.pad_id, emb.inputs, [emb._cut.encode(t) for t in texts]),
        "reranker": (reranker.path / "model.onnx", reranker.pad_id, reranker.inputs, None),
    }
    n = cores()
    layouts = {"one session, every core": [n], f"{n} one-thread sessions": [1] * n}
    settings = []
    for model, (path, pad, inputs, encs) in models.items():
        for layout, threads in layouts.items():
            sessions = [make_session(path, t) for t in threads]
            for rows in args.rows:
                if model == "embedder":
                    work = [[feed(encs[i : i + rows], pad, inputs) for i in range(0, len(encs), rows)]]
                else:  # one query at a time, as `rag ask` runs it: its candidates split into calls
                    work = [
                        [feed(p[i : i + rows], pad, inputs) for i in range(0, len(p), rows)] for p in pairs
                    ]
                settings.append(
                    {"model": model, "layout": layout, "rows": rows, "sessions": sessions, "work": work}
                )
    for s in settings:  # warm every session once
        run_all(s["sessions"], s["work"][0][:2])
    for rep in range(args.repeats):
        for s in settings:
            times = []
            for calls in s["work"]:
                t = time.perf_counter()
                run_all(s["sessions"], calls)
                times.append(time.perf_counter() - t)
            s.setdefault("runs", []).append(sum(times) if s["model"] == "embedder" else times)
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)

    rows_out = []
    for s in settings:
        if s["model"] == "embedder":
            med = statistics.median(s["runs"])
            row = {"seconds_median": round(med, 2), "seconds": [round(x, 2) for x in s["runs"]]}
            row["texts_per_s"] = round(len(texts) / med, 1)
        else:
            per_query = [statistics.median(q) for q in zip(*s["runs"])]  # each query's median over repeats
            row = {"p50_ms": round(statistics.median(per_query) * 1000, 1)}
            row["p95_ms"] = round(sorted(per_query)[int(0.95 * (len(per_query) - 1))] * 1000, 1)
        rows_out.append({"model": s["model"], "layout": s["layout"], "rows_per_call": s["rows"], **row})

    print(f"\nembedder: {len(texts)} corpus/ chunks, seconds (median of {args.repeats})")
    print(f"{'layout':<28}" + "".join(f"{r:>8}" for r in args.rows))
    for layout in layouts:
        cells = [r for r in rows_out if r["model"] == "embedder" and r["layout"] == layout]
        print(f"{layout:<28}" + "".join(f"{r['seconds_median']:8.2f}" for r in cells))
    print(f"\nreranker: {len(questions)} queries x {args.candidates} candidates, p50 ms per query")
    print(f"{'layout':<28}" + "".join(f"{r:>8}" for r in args.rows))
    for layout in layouts:
        cells = [r for r in rows_out if r["model"] == "reranker" and r["layout"] == layout]
        print(f"{layout:<28}" + "".join(f"{r['p50_ms']:8.1f}" for r in cells))
    write_result(
        args.out,
        "onnx_runs",
        hw,
        {k: v for k, v in vars(args).items() if k != "out"} | {"index": str(index)},
        rows_out,
    )


if __name__ == "__main__":
    main()
