"""`rag serve` under load: N concurrent clients asking seeded questions from the bundled test set.

Starts `rag serve` on a free 127.0.0.1 port (the default reader unless flags say otherwise) and, for
each level of --clients, sends that level's --requests streamed questions (server-sent events) from
that many threads, cycling through --n seeded SQuAD dev questions. Before the server starts, the same
questions are answered warm in this process with the same reader: the reference for speed (the API's
overhead) and for correctness (greedy decoding, so an answer that differs was mixed up or lost).

Per level: answers/s, latency p50/p95 (request -> final event), time to first streamed piece p50/p95,
errors (anything but an answer; must be 0 while clients <= --queue), refused (503), answers that differ
from the in-process one, and the server's RSS before and after. Also the seconds until /health answers.
Run it on an otherwise idle machine:

    python benchmarks/bench_serve.py [--clients 1 4 16] [--requests 20 40 200] [--n 20] [--index DIR]
    python benchmarks/bench_serve.py --fake-reader [--requests 8 16 32]   # smoke run: no model, tiny index

Writes benchmarks/results/serve.json; a --fake-reader run writes only where --out says.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, write_result  # noqa: E402

FAKE_DELAY, FAKE_PREFILL = 0.02, 0.1  # the fake reader: seconds per piece, seconds before the first


def questions(n: int, seed: int = 0) -> list[str]:
    rows = [json.loads(line) for line in open(ROOT / "eval" / "data" / "squad_dev.jsonl")]
    return [r["question"] for r in random.Random(seed).sample(rows, n)]


def p(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method), None without values."""
    if len(values) < 2:
        return round(values[0], 3) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


def ask(host: str, port: int, question: str, timeout: float) -> dict:
    """One streamed question: status, final object, seconds to the first piece and to the end."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/api/ask",
            json.dumps({"question": question}),
            {"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        r = conn.getresponse()
        if r.status != 200:
            return {"status": r.status, "error": json.loads(r.read()).get("error")}
        first, kind, final = None, None, None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                if kind == "piece" and first is None:
                    first = time.perf_counter() - t0
                elif kind in ("answer", "error"):
                    final = (kind, json.loads(line[6:]))
                    break
        if final is None or final[0] != "answer":
            return {"status": 200, "error": "lost" if final is None else final[1]["error"]}
        return {"status": 200, "answer": final[1], "first_s": first, "total_s": time.perf_counter() - t0}
    except OSError as e:
        return {"status": None, "error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def in_process(qs: list[str], args) -> tuple[dict, dict[str, str]]:
    """Warm answers in this process with the server's reader: the speed and answer reference."""
    from rag.config import load_config
    from rag.pipeline import ask_stream

    k = load_config().retrieval.k  # what `rag serve` hands the reader when a request names no k
    retriever, reader = open_parts(args)
    for _ in ask_stream(qs[0], retriever, reader, k):  # warm-up
        pass
    totals, firsts, answers = [], [], {}
    for q in qs:
        s = ask_stream(q, retriever, reader, k)
        for _ in s:
            pass
        totals.append(s.answer.timings["total_s"])
        firsts.append(s.answer.timings["first_token_s"])
        answers[q] = s.answer.text
    return {"latency_p50_s": p(totals, 50), "ttft_p50_s": p(firsts, 50), "n": len(qs)}, answers


def open_parts(args):
    """The retriever and reader `rag serve` builds with no flags (or the fakes, with --fake-reader)."""
    from indexing.retrieve import open_retriever
    from rag.config import load_config

    cfg = load_config()
    retriever = open_retriever(args.index, cfg=cfg.retrieval)
    if args.fake_reader:
        from fakes import SlowEchoReader

        return retriever, SlowEchoReader(delay=FAKE_DELAY, prefill=FAKE_PREFILL)
    from rag.cli import _reader_from

    return retriever, _reader_from(cfg.reader, None, None, None, None)  # exactly what `rag serve` loads


def start_server(args) -> tuple[subprocess.Popen, str, int, float]:
    """`rag serve` on a free port: (process, host, port, seconds until /health answered)."""
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "rag"]
    if args.fake_reader:
        env.update(PYTHONPATH=str(ROOT / "tests"), RAG_FAKE_READER="echo")
        env.update(RAG_FAKE_DELAY=str(FAKE_DELAY), RAG_FAKE_PREFILL=str(FAKE_PREFILL))
        cmd = [sys.executable, "-c", "import fakes; fakes.rag_main_with_fakes()"]
    cmd += ["serve", "--index", str(args.index), "--port", "0", "--queue", str(args.queue)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"serving on http://([\d.]+):(\d+)/", line)
        if m:
            break
    else:
        raise SystemExit(f"rag serve did not start (exit {proc.wait()})")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    host, port = m[1], int(m[2])
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    return proc, host, port, time.perf_counter() - t0


def level(
    host: str, port: int, qs: list[str], clients: int, requests: int, ref: dict, timeout: float
) -> dict:
    """`requests` questions from `clients` threads; the row of the table."""
    results: list[tuple[str, dict]] = []
    lock, counter = threading.Lock(), iter(range(requests))

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            q = qs[i % len(qs)]
            out = ask(host, port, q, timeout)
            with lock:
                results.append((q, out))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [(q, r) for q, r in results if "answer" in r]
    mixed = sum(1 for q, r in ok if r["answer"]["question"] != q or r["answer"]["answer"] != ref[q])
    return {
        "clients": clients,
        "requests": requests,
        "answered": len(ok),
        "errors": sum(1 for _, r in results if "answer" not in r and r["status"] != 503),
        "refused": sum(1 for _, r in results if r["status"] == 503),
        "mixed_or_changed": mixed,
        "answers_per_s": round(len(ok) / wall, 3),
        "latency_p50_s": p([r["total_s"] for _, r in ok], 50),
        "latency_p95_s": p([r["total_s"] for _, r in ok], 95),
        "ttft_p50_s": p([r["first_s"] for _, r in ok if r["first_s"] is not None], 50),
        "ttft_p95_s": p([r["first_s"] for _, r in ok if r["first_s"] is not None], 95),
        "wall_s": round(wall, 2),
        "first_errors": sorted({str(r.get("error")) for _, r in results if "answer" not in r})[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, nargs="+", default=[20, 40, 200], help="per level of --clients")
    ap.add_argument("--n", type=int, default=20, help="distinct seeded questions, cycled")
    ap.add_argument("--queue", type=int, default=32, help="rag serve --queue")
    ap.add_argument("--index", type=Path, default=None, help="index over corpus/ (default: $RAG_HOME/index)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one request may take")
    ap.add_argument("--fake-reader", action="store_true", help="smoke run: a model-free reader, a tiny index")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/serve.json")
    args = ap.parse_args()
    if len(args.requests) != len(args.clients):
        raise SystemExit("give one --requests count per --clients level")

    from rag.hardware import describe

    hw = describe()
    print(cpu_line(hw, f", load {os.getloadavg()[0]:.2f}"))
    tmp = None
    if args.fake_reader:
        sys.path.insert(0, str(ROOT / "tests"))  # the fakes the server tests use
        from fakes import serve_index

        tmp = tempfile.TemporaryDirectory()
        os.environ["RAG_HOME"] = tmp.name  # the fake index and anything else stay out of the real home
        args.index = serve_index(tmp.name)[1]
    elif args.index is None:
        from indexing.build import build_index
        from rag.config import IndexConfig, default_index_dir

        args.index = default_index_dir()
        build_index([ROOT / "corpus"], args.index, IndexConfig())  # re-embeds only what changed
    qs = questions(args.n)
    ref_row, ref = in_process(qs, args)
    print(
        f"in process, warm: answer p50 {ref_row['latency_p50_s']} s, first token p50 {ref_row['ttft_p50_s']} s"
    )

    proc, host, port, ready_s = start_server(args)
    rows = []
    try:
        ask(host, port, qs[0], args.timeout)  # warm-up: first-call allocations are not growth
        print(f"rag serve ready in {ready_s:.1f} s (pid {proc.pid}); RSS after warm-up {rss_mb(proc.pid)} MB")
        for clients, requests in zip(args.clients, args.requests):
            before = rss_mb(proc.pid)
            row = level(host, port, qs, clients, requests, ref, args.timeout)
            after = rss_mb(proc.pid)
            row.update(
                rss_before_mb=before, rss_after_mb=after, rss_growth_pct=round(100 * (after / before - 1), 2)
            )
            rows.append(row)
            print(
                f"{clients:>3} clients {requests:>4} req: {row['answers_per_s']:.2f} answers/s, "
                f"p50 {row['latency_p50_s']} s p95 {row['latency_p95_s']} s, first token p50 {row['ttft_p50_s']} s "
                f"p95 {row['ttft_p95_s']} s, errors {row['errors']}, refused {row['refused']}, "
                f"mixed/changed {row['mixed_or_changed']}, RSS {before} -> {after} MB ({row['rss_growth_pct']:+.1f}%)"
            )
    finally:
        proc.terminate()
        proc.wait(30)
    one = next((r for r in rows if r["clients"] == 1), None)
    summary = {
        "ready_s": round(ready_s, 2),
        "api_over_in_process": round(one["latency_p50_s"] / ref_row["latency_p50_s"], 3) if one else None,
        "ttft_p50_s_1_client": one["ttft_p50_s"] if one else None,
        "errors": sum(r["errors"] for r in rows),
        "mixed_or_changed": sum(r["mixed_or_changed"] for r in rows),
        "max_rss_growth_pct": max(r["rss_growth_pct"] for r in rows),
    }
    print("summary:", json.dumps(summary))
    out = args.out or (None if args.fake_reader else ROOT / "benchmarks" / "results" / "serve.json")
    if out is None:
        print("not written: a --fake-reader run measures the harness, not the reader (pass --out to keep it)")
        return
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)} | {"index": str(args.index)}
    write_result(out, "serve", hw, settings, rows, summary=summary, in_process=ref_row, questions=qs)


if __name__ == "__main__":
    main()
