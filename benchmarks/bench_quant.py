"""Weight-only int8 for the reader (rag.quant, issue 14 item 5): decode speed, prefill, memory and F1.

Variants, each in a fresh process (RSS is per process, and torch fixes its threads at start):
    none       the default reader as `rag ask` serves it: qwen2.5-0.5b + shipped adapter, merged, in the
               CPU's dtype (rag.hardware: bf16 with AVX512-BF16/AMX, else fp32), rag.toml's [reader]
    int8       its decoder Linear layers (q/k/v/o, gate/up/down) in int8 with one scale per output row,
               multiplied by torch's aten._weight_int8pack_mm; the lm_head stays bf16
    int8-head  the same and the lm_head (151,936 x 896, the untied vocabulary projection) in int8 too

int8 needs a bf16 reader (torch's kernel is ~8x slower than an fp32 Linear in fp32): on a CPU whose
dtype is fp32 the int8 rows say so instead of timing anything.

Speed, on one fixed prompt (the first seeded SQuAD dev question with its gold paragraph and the
paragraphs of the next four questions: a k=5 prompt): prefill = the prompt's forward pass up to its
first logits; decode = tokens/s over --decode-tokens greedy steps on its KV cache (the end token
ignored, so every run decodes the same count); each after a warm-up run, median of --repeats. Memory:
RSS after loading and the process's peak. Quality: SQuAD EM/F1 on --quality seeded dev questions with
the gold paragraph as the only passage, the same questions in each variant, so they pair: F1 difference
from none with a paired bootstrap 95% CI, and the share of answers identical to none's. The issue's
rule: keep a variant whose F1 is within 0.5 point of none's. Run on an otherwise idle machine (the
"others" column is the cores other processes kept busy during the timing).

    python benchmarks/bench_quant.py [--repeats 5] [--quality 200] [--variants none int8 int8-head]
    python benchmarks/bench_quant.py --smoke    # a tiny in-process model: checks the script, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, run_worker, write_result  # noqa: E402

VARIANTS = ("none", "int8", "int8-head")
KEEP_WITHIN_F1 = 0.5  # the issue's rule, in F1 points


def proc_mb(key: str) -> float | None:
    """VmRSS / VmHWM (peak) of this process in MB, from /proc/self/status (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def fixed_prompt(reader, questions: list[dict]) -> list[int]:
    """Token ids of the timing prompt: question 0 with its gold paragraph first, then the paragraphs of
    questions 1.. that differ from it, up to five passages."""
    from bench_ask import gold_hit

    hits, seen = [], set()
    for q in questions:
        key = (q["source"], q["start"])
        if key not in seen:
            seen.add(key)
            hits.append(gold_hit(q))
        if len(hits) == 5:
            break
    return reader.prompt_ids(questions[0]["question"], hits)


def time_prompt(reader, prompt: list[int], steps: int) -> tuple[float, float]:
    """(prefill s, decode tokens/s) of one greedy run over `prompt`, the reader's own forward calls."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        out = reader.model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        nxt = int(out.logits[0, -1].argmax())
        t1 = time.perf_counter()
        for _ in range(steps):
            out = reader._step(nxt, out)
            nxt = int(out.logits[0, -1].argmax())
        t2 = time.perf_counter()
    return t1 - t0, steps / (t2 - t1)


def load_reader(args):
    from rag.config import load_config
    from rag.reader import make_reader

    rc = load_config().reader
    if args.smoke:  # a tiny bf16 Llama saved by main(): no adapter, bf16 whatever the CPU
        model, adapter, dtype = args.model, "none", "bfloat16"
    else:
        model, adapter, dtype = args.model or rc.model, args.adapter or rc.adapter, rc.dtype
    return make_reader(
        "llm",
        model=model,
        adapter=adapter,
        max_new_tokens=rc.max_new_tokens,
        dtype=dtype,
        max_prompt_tokens=rc.max_prompt_tokens,
        span=rc.span,
        abstain_threshold=rc.abstain_threshold,
        quantize=args.variant,
    )


def worker(args) -> None:
    import torch
    from bench_ask import cpu_snapshot, gold_hit, load_questions, others_share

    from eval.metrics import em_f1
    from rag.errors import RagError
    from rag.hardware import describe

    row: dict = {"variant": args.variant, "hardware": describe(), "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    try:
        reader = load_reader(args)
    except RagError as e:  # e.g. int8 on a CPU whose dtype is fp32: the row says why
        row["error"] = str(e)
        print(json.dumps(row), flush=True)
        return
    row.update(
        load_s=time.perf_counter() - t0,
        rss_mb=proc_mb("VmRSS"),
        reader=reader.reader,
        layers=reader.quantization.get("layers", 0),
        linear_mb=sum(
            t.numel() * t.element_size()
            for m in reader.model.modules()
            if type(m).__name__ in ("Linear", "Int8Linear")
            for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]
        )
        / 2**20,
        model_mb=sum(
            t.numel() * t.element_size() for t in [*reader.model.parameters(), *reader.model.buffers()]
        )
        / 2**20,
    )
    questions = load_questions(max(args.quality, 5), seed=args.seed)
    prompt = fixed_prompt(reader, questions)
    time_prompt(reader, prompt, args.decode_tokens)  # warm-up
    a = cpu_snapshot()
    runs = [time_prompt(reader, prompt, args.decode_tokens) for _ in range(args.repeats)]
    row.update(
        prompt_tokens=len(prompt),
        prefill_s=statistics.median(r[0] for r in runs),
        decode_tok_s=statistics.median(r[1] for r in runs),
        others=others_share(a, cpu_snapshot()),
    )
    ems, f1s, texts = [], [], []
    for q in questions[: args.quality]:
        ans = reader.answer(q["question"], [gold_hit(q)])
        e, f = (0.0, 0.0) if ans.abstained else em_f1(ans.text, q["answers"])
        ems.append(100 * e)
        f1s.append(100 * f)
        texts.append(ans.text)
    row.update(
        quality_n=len(f1s),
        em=statistics.mean(ems) if ems else None,
        f1=statistics.mean(f1s) if f1s else None,
        f1_per_question=f1s,
        answers=texts,
        peak_rss_mb=proc_mb("VmHWM"),
    )
    print(json.dumps(row), flush=True)


def compare(rows: list[dict]) -> None:
    """Add to each quantized row its paired F1 difference from none, the CI, the identical-answer share
    and whether it keeps F1 within KEEP_WITHIN_F1."""
    from eval.metrics import paired_bootstrap

    base = next((r for r in rows if r["variant"] == "none" and "error" not in r), None)
    for r in rows:
        if base is None or r is base or "error" in r or not r.get("quality_n"):
            continue
        b = paired_bootstrap(r["f1_per_question"], base["f1_per_question"], seed=0)
        same = sum(x == y for x, y in zip(r["answers"], base["answers"])) / r["quality_n"]
        r.update(
            f1_diff=b.diff,
            f1_diff_lo=b.lo,
            f1_diff_hi=b.hi,
            same_answers=same,
            decode_speedup=r["decode_tok_s"] / base["decode_tok_s"],
            prefill_ratio=r["prefill_s"] / base["prefill_s"],
            keeps_f1=b.diff >= -KEEP_WITHIN_F1,
        )


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: list[dict], args) -> None:
    ok = [r for r in rows if "error" not in r]
    hw = rows[0]["hardware"]
    print(
        f"\nreader {args.model or 'rag.toml [reader] model'} (adapter {args.adapter or 'as rag.toml'}), "
        f"fixed prompt of {ok[0]['prompt_tokens'] if ok else '?'} tokens, decode {args.decode_tokens} tokens, "
        f"median of {args.repeats}; F1 on {args.quality} gold-paragraph SQuAD dev questions (seed {args.seed})"
    )
    print(cpu_line(hw, f", {rows[0]['threads']} threads"))
    head = (
        f"{'variant':<10} {'dtype':<9} {'Linear MB':>9} {'RSS MB':>7} {'peak MB':>7} {'load s':>6} "
        f"{'prefill s':>9} {'decode tok/s':>12} {'x none':>6} {'EM':>5} {'F1':>5} {'dF1 [95% CI]':>20} "
        f"{'same%':>5} {'keep':>4} {'others':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<10} not run: {r['error']}")
            continue
        ci = (
            f"{r['f1_diff']:+.1f} [{r['f1_diff_lo']:+.1f}, {r['f1_diff_hi']:+.1f}]"
            if r.get("f1_diff") is not None
            else "-"
        )
        keep = "-" if "keeps_f1" not in r else ("yes" if r["keeps_f1"] else "no")
        same = fmt(100 * r["same_answers"], ".0f") if "same_answers" in r else "-"
        print(
            f"{r['variant']:<10} {r['reader'].get('dtype', '-'):<9} {fmt(r['linear_mb'], '.0f'):>9} "
            f"{fmt(r['rss_mb'], '.0f'):>7} {fmt(r['peak_rss_mb'], '.0f'):>7} {fmt(r['load_s'], '.1f'):>6} "
            f"{fmt(r['prefill_s'], '.3f'):>9} {fmt(r['decode_tok_s'], '.1f'):>12} "
            f"{fmt(r.get('decode_speedup'), '.2f'):>6} {fmt(r['em'], '.1f'):>5} {fmt(r['f1'], '.1f'):>5} "
            f"{ci:>20} {same:>5} {keep:>4} {fmt(r['others'], '.2f'):>6}"
        )


def summary(rows: list[dict]) -> dict:
    """The headline numbers per variant, e.g. {"int8 decode tok/s": 31.2, "int8 F1 diff": -0.3}."""
    out = {}
    for r in rows:
        if "error" in r:
            continue
        out[f"{r['variant']} decode tok/s"] = round(r["decode_tok_s"], 1)
        out[f"{r['variant']} F1"] = None if r["f1"] is None else round(r["f1"], 1)
        if "f1_diff" in r:
            out[f"{r['variant']} F1 diff"] = round(r["f1_diff"], 2)
    return out


def smoke_model(folder: Path) -> Path:
    """A tiny bf16 Llama with an in-process tokenizer (tests/fakes), saved as a model folder."""
    import torch
    from transformers import LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import make_tokenizer, tiny_llama_config

    tok = make_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tok)).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--model", default=None, help="reader model (default: rag.toml's [reader] model)")
    ap.add_argument("--adapter", default=None, help="adapter (default: rag.toml's [reader] adapter)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the fixed prompt (median)")
    ap.add_argument("--decode-tokens", type=int, default=32, help="greedy steps timed per run")
    ap.add_argument("--quality", type=int, default=200, help="gold-paragraph SQuAD dev questions scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--smoke", action="store_true", help="a tiny in-process model; writes nothing without --out"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: benchmarks/results/quant.json)")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory(prefix="bench_quant_smoke_")
        args.model = str(smoke_model(Path(tmp.name) / "tiny-llama"))
        args.adapter = "none"
        if "--repeats" not in sys.argv:
            args.repeats = 2
        if "--decode-tokens" not in sys.argv:
            args.decode_tokens = 4
        if "--quality" not in sys.argv:
            args.quality = 3
    flags = ["--repeats", str(args.repeats), "--decode-tokens", str(args.decode_tokens)]
    flags += ["--quality", str(args.quality), "--seed", str(args.seed)]
    flags += (["--model", args.model] if args.model else []) + (
        ["--adapter", args.adapter] if args.adapter else []
    )
    flags += ["--smoke"] if args.smoke else []
    rows = []
    try:
        for v in args.variants:
            print(f"[bench_quant] {v} ...", file=sys.stderr, flush=True)
            rows.append(run_worker(__file__, [*flags, "--variant", v], dict(os.environ), v))
    finally:
        if tmp is not None:
            tmp.cleanup()
    compare(rows)
    print_table(rows, args)
    out = args.out or (None if args.smoke else ROOT / "benchmarks" / "results" / "quant.json")
    if out is None:
        print("(smoke run: nothing written; pass --out to write the JSON)")
        return
    settings = {
        "model": args.model,
        "adapter": args.adapter,
        "repeats": args.repeats,
        "decode_tokens": args.decode_tokens,
        "quality": args.quality,
        "seed": args.seed,
        "smoke": args.smoke,
        "keep_within_f1": KEEP_WITHIN_F1,
    }
    write_result(out, "quant", rows[0]["hardware"], settings, rows, summary=summary(rows))


if __name__ == "__main__":
    main()
