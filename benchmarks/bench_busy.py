"""What a busy CPU costs `rag ask`: warm answer latency idle vs beside a CPU hog, per thread policy.

Two OpenMP threads on two cores, one of which another process keeps busy, wait on each other at every
barrier (a query went from 27 ms to 490 ms). This measures, for the default reader:

    fixed-all     torch threads = all cores (what rag did before), OpenMP's default wait policy
    free-cores    threads = the cores not busy when the process starts (1 beside a hog on 2 cores)
    fixed-passive all cores, but OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning)
    adaptive      what rag does now (rag.hardware.configure_for_load): all cores, and PASSIVE only
                  when the machine is busy at start

Each policy runs in a fresh worker process (thread settings are fixed at torch's start), first on the
idle machine, then beside a hog started before the worker: by default a second torch process doing
matmuls on every core (like a second `rag ask` or a training job). Prints a table and writes
benchmarks/results/busy.json. Needs an otherwise idle machine and an index over corpus/.

    python benchmarks/bench_busy.py [--n 6] [--hog torch|python] [--policies fixed-all adaptive ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, run_worker, write_result  # noqa: E402

ALL = str(os.cpu_count() or 1)
POLICIES = {
    "fixed-all": {"RAG_THREADS": ALL, "BENCH_NO_ADAPT": "1"},
    "free-cores": {"BENCH_FREE_CORES": "1", "BENCH_NO_ADAPT": "1"},
    "fixed-passive": {"RAG_THREADS": ALL, "OMP_WAIT_POLICY": "PASSIVE"},
    "adaptive": {},
}
HOGS = {
    # a second torch process using every core, as another rag process would
    "torch": "import torch; a = torch.randn(768, 768)\nwhile True: a = (a @ a).tanh()",
    # one pure-Python busy loop: one core taken
    "python": "while True: pass",
}


def worker(args) -> None:
    """Load the reader, answer N questions warm, print one JSON line of latencies."""
    from rag import hardware

    # before torch loads, as rag's CLI does (the older policies keep OpenMP's default wait policy)
    busy = hardware.busy_cores() if os.environ.get("BENCH_NO_ADAPT") else hardware.configure_for_load()
    if os.environ.get("BENCH_FREE_CORES"):
        # the free cores (a core counts as free when less than half of it is busy), at least one
        os.environ["RAG_THREADS"] = str(max(1, hardware.cores() - int(busy + 0.5)))
    from bench_ask import load_questions

    from rag.config import default_index_dir
    from rag.hardware import describe
    from rag.pipeline import ask
    from rag.reader import make_reader

    index = args.index or default_index_dir()
    retriever = fused_retriever(index)
    reader = make_reader("llm", model=args.model, adapter="default", max_new_tokens=32)
    questions = load_questions(args.n + 1, seed=1)
    ask(questions[0]["question"], retriever, reader, k=args.k)  # warm-up
    lat = []
    for q in questions[1:]:
        t = time.perf_counter()
        ask(q["question"], retriever, reader, k=args.k)
        lat.append(time.perf_counter() - t)
    import torch

    print(
        json.dumps(
            {
                "lat": lat,
                "threads": torch.get_num_threads(),
                "hardware": describe(),
                "dtype": reader.reader["dtype"],
            }
        ),
        flush=True,
    )


def run_policy(policy: str, args) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAG_THREADS", "OMP_WAIT_POLICY", "BENCH_FREE_CORES", "BENCH_NO_ADAPT")
    }
    env.update(POLICIES[policy])
    flags = ["--n", str(args.n), "--k", str(args.k), "--model", args.model]
    flags += ["--index", str(args.index)] if args.index else []
    return run_worker(__file__, flags, env, policy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=6, help="warm questions per run")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--index", type=Path, default=None)
    ap.add_argument("--hog", choices=sorted(HOGS), default="torch")
    ap.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "busy.json")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for policy in args.policies:
        print(f"[bench_busy] {policy}: idle ...", file=sys.stderr, flush=True)
        idle = run_policy(policy, args)
        print(f"[bench_busy] {policy}: beside a {args.hog} hog ...", file=sys.stderr, flush=True)
        hog = subprocess.Popen(
            [sys.executable, "-c", HOGS[args.hog]],
            env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)},
        )
        time.sleep(3)  # let the hog get going before the worker measures the load
        try:
            busy = run_policy(policy, args)
        finally:
            hog.kill()
            hog.wait()
        p_idle, p_busy = statistics.median(idle["lat"]), statistics.median(busy["lat"])
        rows.append(
            {
                "policy": policy,
                "idle_p50_s": p_idle,
                "busy_p50_s": p_busy,
                "ratio": p_busy / p_idle,
                "threads_idle": idle["threads"],
                "threads_busy": busy["threads"],
                "idle": idle["lat"],
                "busy": busy["lat"],
                "dtype": idle["dtype"],
                "omp_wait_policy_idle": idle["hardware"]["omp_wait_policy"],
                "omp_wait_policy_busy": busy["hardware"]["omp_wait_policy"],
            }
        )
    hw = idle["hardware"]
    print(
        f"\nwarm `rag ask` ({args.model} + adapter, k={args.k}, {args.n} questions), idle vs beside a "
        f"{args.hog} hog on every core"
    )
    print(cpu_line(hw, f"; dtype {rows[0]['dtype']}"))
    head = f"{'policy':<14} {'threads idle/busy':>17} {'idle p50 s':>10} {'busy p50 s':>10} {'busy/idle':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['policy']:<14} {str(r['threads_idle']) + ' / ' + str(r['threads_busy']):>17} "
            f"{r['idle_p50_s']:>10.2f} {r['busy_p50_s']:>10.2f} {r['ratio']:>9.2f}"
        )
    settings = {"n": args.n, "k": args.k, "model": args.model, "hog": args.hog}
    summary = {
        f"{r['policy']} busy/idle": round(r["ratio"], 2)
        for r in rows
        if r["policy"] in ("fixed-all", "adaptive")
    }
    write_result(args.out, "busy", hw, settings, rows, summary=summary)


if __name__ == "__main__":
    main()
