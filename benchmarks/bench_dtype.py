"""The reader's compute dtype per CPU kind: speed and F1 of bf16, fp32 and int8 weights, native vs AVX2.

bf16 is fast only where the CPU has native bf16 (AVX512-BF16 / AMX); elsewhere it is emulated. A machine
of the other kind is not always at hand, so besides the native run this caps the instruction set the
kernels may use to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`): same cores and memory,
AVX2-only kernels. That is an emulation of an AVX2-only CPU, labelled as such in the table; a real
AVX2-only machine also differs in clock and memory bandwidth.

Variants, each in a fresh process (the default reader: qwen2.5-0.5b + its shipped adapter, merged):
    bfloat16   weights and activations bf16
    float32    weights and activations fp32
    int8       fp32 model with its Linear layers dynamically quantized to int8 weights
               (torch.ao.quantization.quantize_dynamic; activations quantized per call), one scale per matrix
    int8-pc    the same with one scale per output channel
    int8-pc-head16  per-channel int8, but the lm_head (the vocabulary projection) left in fp32
    int8-pc-nodown  per-channel int8, lm_head and the MLPs' down_proj left in fp32

Speed: warm `ask` over N retrieved-passage prompts (hybrid top-k, ~950 tokens): answer p50, prefill
(time to first token) p50 and decode ms per token. Quality: EM/F1 on M SQuAD dev questions with the gold
paragraph as the only passage (native run only; same questions for every variant, so they pair up).
Prints a table and writes benchmarks/results/dtype.json. Run on an otherwise idle machine.

    python benchmarks/bench_dtype.py [--n 5] [--quality 50] [--variants bfloat16 float32 int8] [--no-capped]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, fused_retriever, run_worker, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))

CAPPED = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def load_reader(variant: str, model: str):
    import torch

    from rag.reader import make_reader

    reader = make_reader(
        "llm", model=model, adapter="default", dtype="bfloat16" if variant == "bfloat16" else "float32"
    )
    if variant.startswith("int8"):
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        if variant == "int8":  # one scale per weight matrix
            spec = {torch.nn.Linear}
        else:  # int8-pc: one scale per output channel; int8-pc-head16: and the lm_head left in fp32
            names = {n for n, m in reader.model.named_modules() if isinstance(m, torch.nn.Linear)}
            if variant in ("int8-pc-head16", "int8-pc-nodown"):
                names.discard("lm_head")
            if variant == "int8-pc-nodown":  # down_proj reads the MLP's outlier-heavy activations
                names = {n for n in names if not n.endswith("down_proj")}
            spec = {n: per_channel_dynamic_qconfig for n in names}
        reader.model = quantize_dynamic(reader.model, spec, dtype=torch.qint8)
    return reader


def worker(args) -> None:
    import torch
    from bench_ask import gold_hit, load_questions

    from eval.metrics import em_f1
    from rag.config import default_index_dir
    from rag.hardware import describe
    from rag.pipeline import ask

    t0 = time.perf_counter()
    reader = load_reader(args.variant, args.model)
    load_s = time.perf_counter() - t0
    retriever = fused_retriever(args.index or default_index_dir())
    qs = load_questions(args.n + 1, seed=1)
    ask(qs[0]["question"], retriever, reader, k=args.k)  # warm-up
    total, first, per_tok = [], [], []
    for q in qs[1:]:
        a = ask(q["question"], retriever, reader, k=args.k)
        t = a.timings
        total.append(t["total_s"])
        first.append(t["first_token_s"])
        if t.get("new_tokens", 0) > 1:
            per_tok.append((t["total_s"] - t["first_token_s"]) / (t["new_tokens"] - 1))
    row = {
        "variant": args.variant,
        "load_s": load_s,
        "answer_p50_s": statistics.median(total),
        "prefill_p50_s": statistics.median(first),
        "decode_ms_per_token": 1000 * statistics.median(per_tok) if per_tok else None,
        "threads": torch.get_num_threads(),
        "hardware": describe(),
    }
    if args.quality:
        ems, f1s = [], []
        for q in load_questions(args.quality, seed=0):
            a = reader.answer(q["question"], [gold_hit(q)])
            e, f = (0.0, 0.0) if a.abstained else em_f1(a.text, q["answers"])
            ems.append(100 * e)
            f1s.append(100 * f)
        row.update(em=statistics.mean(ems), f1=statistics.mean(f1s), f1_per_question=f1s, quality_n=len(f1s))
    print(json.dumps(row), flush=True)


def run(variant: str, capped: bool, quality: int, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CAPPED}
    if capped:
        env.update(CAPPED)
    flags = ["--variant", variant, "--n", str(args.n), "--k", str(args.k), "--quality", str(quality)]
    flags += ["--model", args.model] + (["--index", str(args.index)] if args.index else [])
    row = run_worker(__file__, flags, env, f"{variant} ({'AVX2-capped' if capped else 'native'})")
    row["isa"] = "AVX2 (capped)" if capped else "native"
    return row


def dtype_summary(rows: list[dict]) -> dict:
    """answer p50 per ISA and variant, e.g. {"native bfloat16 answer s": 1.73, ...} (the report shows these)."""
    return {
        f"{r['isa'].split()[0]} {r['variant']} answer s": round(r["answer_p50_s"], 2)
        for r in rows
        if r["variant"] in ("bfloat16", "float32")
    }


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="bfloat16")
    ap.add_argument("--variants", nargs="+", default=["bfloat16", "float32", "int8"])
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--index", type=Path, default=None)
    ap.add_argument("--n", type=int, default=5, help="retrieved-passage questions timed per variant")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--quality", type=int, default=50, help="gold-paragraph questions scored (native run)")
    ap.add_argument("--no-capped", action="store_true", help="skip the AVX2-capped runs")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dtype.json")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for capped in [False] if args.no_capped else [False, True]:
        for v in args.variants:
            print(
                f"[bench_dtype] {v} {'AVX2-capped' if capped else 'native'} ...", file=sys.stderr, flush=True
            )
            rows.append(run(v, capped, 0 if capped else args.quality, args))
    hw = rows[0]["hardware"]
    print(
        f"\nreader {args.model} + adapter, warm ask over {args.n} retrieved-passage prompts (k={args.k}); "
        f"F1 on {args.quality} gold-paragraph SQuAD dev questions"
    )
    print(cpu_line(hw, f", {rows[0]['threads']} threads"))
    head = (
        f"{'ISA':<14} {'variant':<9} {'answer p50 s':>12} {'prefill p50 s':>13} {'decode ms/tok':>13} "
        f"{'EM':>5} {'F1':>5} {'load s':>6} {'thr':>3}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['isa']:<14} {r['variant']:<9} {fmt(r['answer_p50_s']):>12} {fmt(r['prefill_p50_s']):>13} "
            f"{fmt(r['decode_ms_per_token'], '.0f'):>13} {fmt(r.get('em'), '.1f'):>5} {fmt(r.get('f1'), '.1f'):>5} "
            f"{fmt(r['load_s'], '.1f'):>6} {r['threads']:>3}"
        )
    settings = {"n": args.n, "k": args.k, "quality": args.quality, "model": args.model}
    write_result(args.out, "dtype", hw, settings, rows, summary=dtype_summary(rows))


if __name__ == "__main__":
    main()
