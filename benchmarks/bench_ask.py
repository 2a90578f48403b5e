"""`rag ask` speed and the untuned-reader floor, per reader preset.

For each preset (and the extractive baseline):
  - warm ask latency p50/p95 over N SQuAD dev questions (hybrid retrieval, k passages, <= 32 new tokens),
    first-token latency (question -> first answer piece, retrieval included), new tokens per answer;
  - the same prompts through a plain transformers text-generation pipeline (greedy, same bound, no stop
    rule: what you get off the shelf) and through model.generate with our stop rule and a
    TextIteratorStreamer (same tokens as ours: isolates the decoding loop), as ratios to our reader;
  - cold start: a fresh `rag ask --json` process (imports, index, embedder, model load, one answer),
    wall time and peak RSS;
  - the floor: EM/F1 on SQuAD dev questions with the gold paragraph as the only passage, our prompt,
    no adapter (plus abstention / citation / hit-the-limit rates).
Prints a table and writes benchmarks/results/ask.json. Run it on an otherwise idle machine.

    python benchmarks/bench_ask.py [--presets smollm2-135m qwen2.5-0.5b] [--n 20] [--squad 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, write_result  # noqa: E402

from rag.config import QUANTIZE_MODES  # noqa: E402

# Runs a command and reports its wall time and peak RSS (ru_maxrss of the only child it waited for).
RSS_WRAPPER = (
    "import json, resource, subprocess, sys, time; t = time.perf_counter(); "
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps([p.returncode, time.perf_counter() - t, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.stdout, p.stderr[-500:]]))"
)


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, whole-machine busy CPU s from /proc/stat, this process + children CPU s)."""
    import resource

    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    own = sum(
        getattr(resource.getrusage(w), a)
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for a in ("ru_utime", "ru_stime")
    )
    return time.perf_counter(), busy, own


def others_share(a: tuple, b: tuple) -> float:
    """Average number of cores other processes kept busy between two snapshots (0 = quiet machine)."""
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    i = (len(s) - 1) * q / 100
    lo, hi = int(i), min(int(i) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (i - lo)


def load_questions(n: int, seed: int = 0) -> list[dict]:
    from eval.testset import load_testset, sample

    ts = load_testset([ROOT / "eval" / "data" / "squad_dev.jsonl"], corpus_root=ROOT / "corpus")
    return [
        {
            "id": q.id,
            "question": q.question,
            "answers": list(q.answers),
            "source": q.source,
            "start": q.start,
            "end": q.end,
        }
        for q in sample(ts.questions, n, seed=seed)
    ]


def gold_hit(row: dict):
    from rag.types import Chunk, Hit

    text = (ROOT / "corpus" / row["source"]).read_text(encoding="utf-8")[row["start"] : row["end"]]
    return Hit(
        Chunk(f"{row['source']}#{row['start']}-{row['end']}", row["source"], text, row["start"], row["end"]),
        1.0,
    )


def cold_start(preset: str, question: str, index: Path, runs: int, quantize: str = "none") -> list[dict]:
    rag = str(Path(sys.executable).parent / "rag")
    cmd = [
        sys.executable,
        "-c",
        RSS_WRAPPER,
        rag,
        "ask",
        question,
        "--json",
        "--model",
        preset,
        "--adapter",
        "none",
        "--index",
        str(index),
    ]
    if preset == "extractive":
        cmd[cmd.index("--model") : cmd.index("--model") + 4] = ["--reader", "extractive"]
    elif quantize != "none":
        cmd += ["--quantize", quantize]
    out = []
    for _ in range(runs):
        rc, wall, rss_kb, stdout, stderr = json.loads(
            subprocess.run(cmd, capture_output=True, text=True).stdout
        )
        if rc != 0:
            raise SystemExit(f"cold start failed for {preset}: {stderr}")
        t = json.loads(stdout.strip().splitlines()[-1])["timings"]
        out.append(
            {"wall_s": round(wall, 3), "peak_rss_mb": round(rss_kb / 1024), "answer_total_s": t["total_s"]}
        )
    return out


def hf_pipeline_runner(model, tok, max_new_tokens: int):
    """A plain transformers text-generation pipeline: greedy, same bound, no stop rule."""
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    kw = {"max_new_tokens": max_new_tokens, "do_sample": False, "return_full_text": False}

    def run(prompt: str) -> dict:
        t0 = time.perf_counter()
        text = pipe(prompt, **kw)[0]["generated_text"]
        return {
            "s": time.perf_counter() - t0,
            "first_s": None,
            "tokens": len(tok(text, add_special_tokens=False)["input_ids"]),
        }

    return run


def hf_generate_runner(model, tok, max_new_tokens: int):
    """model.generate + our stop rule + TextIteratorStreamer in a thread: the alternative to our loop."""
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    from rag.reader import answer_stop, encode_prompt

    def run(prompt: str) -> dict:
        ids = torch.tensor([encode_prompt(tok, prompt)])
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        out = {}

        def gen():
            with torch.inference_mode():
                out["ids"] = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([answer_stop(tok, ids.shape[1])]),
                )

        t0 = time.perf_counter()
        th = threading.Thread(target=gen)
        th.start()
        first = None
        for piece in streamer:
            if first is None and piece:
                first = time.perf_counter() - t0
        th.join()
        return {"s": time.perf_counter() - t0, "first_s": first, "tokens": out["ids"].shape[1] - ids.shape[1]}

    return run


def ours_runner(reader):
    def run(question: str, hits) -> dict:
        t0 = time.perf_counter()
        first = None
        for _ in reader.stream(question, hits):
            if first is None:
                first = time.perf_counter() - t0
        return {"s": time.perf_counter() - t0, "first_s": first, "tokens": reader.last_new_tokens}

    return run


def summarize(runs: list[dict], base: list[dict] | None = None) -> dict:
    out = {
        "p50_s": pct([r["s"] for r in runs], 50),
        "p95_s": pct([r["s"] for r in runs], 95),
        "new_tokens_mean": statistics.mean(r["tokens"] for r in runs),
    }
    firsts = [r["first_s"] for r in runs if r["first_s"] is not None]
    if firsts:
        out["first_p50_s"] = pct(firsts, 50)
    if base is not None:  # paired: the same prompt, run back to back
        out["ratio_p50"] = out["p50_s"] / pct([r["s"] for r in base], 50)
        out["paired_ratio_median"] = statistics.median(r["s"] / b["s"] for r, b in zip(runs, base))
    return out


def bench_preset(preset: str, args, questions: list[dict], squad: list[dict], retriever) -> dict:
    import torch

    from rag.pipeline import ask
    from rag.prompt import render_prompt
    from rag.reader import make_reader, passages

    row: dict = {"preset": preset}
    if not args.skip_cold:
        quantize = args.reader_rules.get("quantize", "none")
        row["cold"] = cold_start(preset, questions[0]["question"], args.index, args.cold_runs, quantize)
    t0 = time.perf_counter()
    if preset == "extractive":
        reader = make_reader("extractive")
    else:
        reader = make_reader(
            "llm",
            model=preset,
            adapter=args.adapter,
            max_new_tokens=args.max_new_tokens,
            dtype=args.dtype,
            span=args.span,
            **args.reader_rules,
        )
        torch.set_num_threads(args.threads)
        row["adapter"] = reader.reader["adapter"]
        row["dtype"] = reader.reader["dtype"]
        row["quantize"] = reader.reader.get("quantize", "none")
        reader.cache_opening = not args.whole_prefill
    row["load_s"] = round(time.perf_counter() - t0, 3)

    if args.skip_warm:
        questions = []
    # warm ask latency (retrieval included)
    for q in questions[:2]:
        ask(q["question"], retriever, reader, k=args.k)
    lat, first, toks, ret = [], [], [], []
    row["answers"] = []  # the raw answers, citations included: runs of one setting can be compared
    for q in questions:
        a = ask(q["question"], retriever, reader, k=args.k)
        row["answers"].append(a.raw)
        lat.append(a.timings["total_s"])
        first.append(a.timings["first_token_s"])
        ret.append(a.timings["retrieve_s"])
        toks.append(a.timings.get("new_tokens", 0))
    row["warm"] = (
        {}
        if not lat
        else {
            "n": len(questions),
            "p50_s": pct(lat, 50),
            "p95_s": pct(lat, 95),
            "mean_s": statistics.mean(lat),
            "first_token_p50_s": pct(first, 50),
            "first_token_p95_s": pct(first, 95),
            "retrieve_p50_s": pct(ret, 50),
            "new_tokens_mean": statistics.mean(toks),
        }
    )
    if preset != "extractive" and questions:
        tok, model = reader.tokenizer, reader.model
        hits = [retriever.search(q["question"], args.k) for q in questions]
        prompts = [render_prompt(tok, q["question"], passages(h)) for q, h in zip(questions, hits)]
        row["prompt_tokens_mean"] = statistics.mean(
            len(reader.prompt_ids(q["question"], h)) for q, h in zip(questions, hits)
        )
        runners = {"ours": ours_runner(reader)}
        if not args.skip_hf:
            runners["hf_pipeline"] = hf_pipeline_runner(model, tok, args.max_new_tokens)
            runners["hf_generate_stream"] = hf_generate_runner(model, tok, args.max_new_tokens)
        runs: dict[str, list[dict]] = {name: [] for name in runners}
        for i, (q, h, p) in enumerate(zip([None, *questions], [hits[0], *hits], [prompts[0], *prompts])):
            names = list(runners)
            names = (
                names[i % len(names) :] + names[: i % len(names)]
            )  # rotate the order: no one always goes first
            for name in names:
                r = (
                    runners[name](questions[0]["question"] if q is None else q["question"], h)
                    if name == "ours"
                    else runners[name](p)
                )
                if q is not None:  # the first round is a warm-up
                    runs[name].append(r)
        row["read_only"] = summarize(runs["ours"])
        for name in runners:
            if name != "ours":
                row[name] = summarize(runs[name], runs["ours"])

    # the floor: gold paragraph only, our prompt
    if squad:
        from eval.metrics import em_f1

        em = f1 = absn = cited = limit = 0.0
        secs = []
        samples = []
        for q in squad:
            t = time.perf_counter()
            a = reader.answer(q["question"], [gold_hit(q)])
            secs.append(time.perf_counter() - t)
            e, f = (0.0, 0.0) if a.abstained else em_f1(a.text, q["answers"])
            em, f1 = em + e, f1 + f
            absn += a.abstained
            cited += bool(a.citations)
            limit += a.timings.get("new_tokens", 0) >= args.max_new_tokens
            if len(samples) < 5:
                samples.append({"q": q["question"], "gold": q["answers"][0], "raw": a.raw})
        n = len(squad)
        row["squad_gold"] = {
            "n": n,
            "em": 100 * em / n,
            "f1": 100 * f1 / n,
            "abstain_pct": 100 * absn / n,
            "cites_pct": 100 * cited / n,
            "hit_limit_pct": 100 * limit / n,
            "p50_s": pct(secs, 50),
            "samples": samples,
        }
    return row


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--presets", nargs="+", default=["smollm2-135m"], help="reader presets, and/or 'extractive'"
    )
    ap.add_argument("--adapter", default="none", help="adapter for the llm presets: none | default | DIR")
    ap.add_argument("--index", type=Path, default=None, help="index over corpus/ [default: $RAG_HOME/index]")
    ap.add_argument("--n", type=int, default=20, help="questions for warm latency")
    ap.add_argument(
        "--default-pipeline",
        action="store_true",
        help="k, reranking and the reader's rules as rag.toml / the defaults set them (overrides --k --rerank --span)",
    )
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--rerank", type=int, default=0, help="rerank the fused top N (0: off)")
    ap.add_argument("--span", action="store_true", help="span-faithful decoding for the llm presets")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--squad", type=int, default=50, help="questions for the gold-paragraph floor (0 = skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--dtype", default="auto", help="auto (what rag chooses for this CPU) | bfloat16 | float32"
    )
    ap.add_argument("--cold-runs", type=int, default=2)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-warm", action="store_true", help="only the cold start and the SQuAD floor")
    ap.add_argument(
        "--quantize",
        default=None,
        choices=QUANTIZE_MODES,
        help="weight-only int8 for the llm presets (rag.quant; default: rag.toml's with --default-pipeline, else none)",
    )
    ap.add_argument(
        "--whole-prefill",
        action="store_true",
        help="prefill every prompt whole, without the reader's cached shared opening (LLMReader.cache_opening)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ask.json")
    args = ap.parse_args()
    args.reader_rules = {}
    if args.default_pipeline:
        from rag.config import load_config

        cfg = load_config()
        args.k, args.span = cfg.retrieval.k, cfg.reader.span
        args.rerank = cfg.retrieval.rerank_candidates if cfg.retrieval.rerank else 0
        args.reader_rules = {
            "abstain_threshold": cfg.reader.abstain_threshold,
            "decline_missing_names": cfg.reader.decline_missing_names,
            "min_rerank_score": cfg.reader.min_rerank_score,
            "quantize": cfg.reader.quantize,
        }
    if args.quantize is not None:
        args.reader_rules["quantize"] = args.quantize

    import torch

    from rag.config import default_index_dir
    from rag.hardware import describe

    args.index = args.index or default_index_dir()
    if not (args.index / "CURRENT").exists():
        raise SystemExit(f"no index at {args.index}: run `rag index corpus/` first (or pass --index)")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    questions = load_questions(args.n, seed=1)
    squad = load_questions(args.squad, seed=0) if args.squad else []
    retriever = fused_retriever(args.index)
    if args.rerank:
        from indexing.retrieve import with_reranker
        from rag.config import RetrievalConfig

        retriever = with_reranker(retriever, RetrievalConfig(rerank=True, rerank_candidates=args.rerank))
    retriever.search("warm up", args.k)
    rows = []
    for p in args.presets:
        print(f"[bench_ask] {p} ...", file=sys.stderr, flush=True)
        snap = cpu_snapshot()
        rows.append(bench_preset(p, args, questions, squad, retriever))
        rows[-1]["other_processes_cores"] = round(others_share(snap, cpu_snapshot()), 2)
    load_after = os.getloadavg()

    hw = describe()
    print(
        f"\nask latency ({args.n} questions, k={args.k}, <= {args.max_new_tokens} new tokens, "
        f"{args.threads} threads; load avg {load_before[0]:.1f} -> {load_after[0]:.1f})"
    )
    dtypes = ", ".join(sorted({str(r.get("dtype")) for r in rows if r.get("dtype")})) or "-"
    print(cpu_line(hw, f"; dtype {dtypes}"))
    head = (
        f"{'reader':<14} {'p50 s':>6} {'p95 s':>6} {'1st tok':>7} {'tokens':>6} {'prompt':>6} {'cold s':>6} "
        f"{'RSS MB':>6} {'HF pipe x':>9} {'HF gen x':>8} {'EM':>5} {'F1':>5} {'cite%':>5} {'limit%':>6} {'others':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        w, c, s = r["warm"], r.get("cold") or [{}], r.get("squad_gold", {})
        print(
            f"{r['preset']:<14} {fmt(w.get('p50_s')):>6} {fmt(w.get('p95_s')):>6} {fmt(w.get('first_token_p50_s')):>7} "
            f"{fmt(w.get('new_tokens_mean'), '.1f'):>6} {fmt(r.get('prompt_tokens_mean'), '.0f'):>6} "
            f"{fmt(min((x['wall_s'] for x in c if x), default=None)):>6} "
            f"{fmt(max((x['peak_rss_mb'] for x in c if x), default=None), '.0f'):>6} "
            f"{fmt(r.get('hf_pipeline', {}).get('ratio_p50')):>9} {fmt(r.get('hf_generate_stream', {}).get('ratio_p50')):>8} "
            f"{fmt(s.get('em'), '.1f'):>5} {fmt(s.get('f1'), '.1f'):>5} {fmt(s.get('cites_pct'), '.0f'):>5} "
            f"{fmt(s.get('hit_limit_pct'), '.0f'):>6} {fmt(r['other_processes_cores']):>6}"
        )
    print(
        "HF pipe x / HF gen x: their p50 time over ours on the same prompts (>1 = ours faster). "
        "EM/F1: gold paragraph only, no adapter. "
        "others: cores other processes kept busy during the row (0 = quiet)."
    )
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores_visible": os.cpu_count(),
        "threads": args.threads,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "torch": torch.__version__,
    }
    settings = {
        "n": args.n,
        "k": args.k,
        "max_new_tokens": args.max_new_tokens,
        "squad": args.squad,
        "adapter": args.adapter,
        "mode": "hybrid",
        "index": str(args.index),
        "rerank": args.rerank,
        "span": args.span,
        "default_pipeline": args.default_pipeline,
        "whole_prefill": args.whole_prefill,
        **{
            k: (v if v == v and abs(v) != float("inf") else str(v)) if isinstance(v, float) else v
            for k, v in args.reader_rules.items()
        },
    }
    write_result(args.out, "ask", hw, settings, rows, machine=machine)


if __name__ == "__main__":
    main()
