"""Training throughput: our LoRA loop vs a naive HF Trainer baseline, same data and LoRA config.

Both train the same base model on the same examples (one pass, batch 8, loss on answer tokens only,
LoRA r=16 all-linear, dropout 0) on CPU:
- ours: finetune.train.train (bf16 weights, length-grouped token-capped micro-batches, logits only at
  answer positions, malloc_trim per step);
- baseline: transformers.Trainer, fp32 weights, random batches padded to the longest example, full logits.

Tokens/s counts real (non-padding) tokens over training-step wall time. Each system runs in its own
subprocess so its peak RSS is its own. Prints a table and writes benchmarks/results/train.json.

    python benchmarks/bench_train.py [--base smollm2-135m] [--steps 6] [--threads 2]
    python benchmarks/bench_train.py --quality rag/adapters/smollm2-135m [--n 200]   # untuned vs tuned
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _examples(n: int, seed: int):
    from finetune.data import DataConfig, build_dataset

    ds = build_dataset(DataConfig())
    exs = list(ds.train)
    random.Random(seed).shuffle(exs)
    return exs[:n], ds.hash


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args) -> dict:
    import tempfile

    import torch

    from finetune.train import TrainConfig, train

    exs, h = _examples(args.steps * 8, args.seed)
    cfg = TrainConfig(
        base=args.base,
        max_steps=args.steps,
        batch_size=8,
        eval_every=0,
        eval_at_start=False,
        save_every=0,
        threads=args.threads,
        warmup_steps=1,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, exs, [], Path(d), data_info={"hash": h})
    t = res.manifest["training"]
    return {
        "system": "ours (bf16, grouped, capped micro-batches)",
        "tokens": t["tokens"],
        "padded_tokens": t["padded_tokens"],
        "train_s": t["train_time_s"],
        "tokens_per_s": t["tokens_per_s"],
        "peak_rss_mb": round(_peak_rss_mb()),
        "threads": torch.get_num_threads(),
    }


def run_baseline(args) -> dict:
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from assets.models import load_causal_lm
    from finetune.train import encode

    torch.set_num_threads(args.threads)
    exs, _ = _examples(args.steps * 8, args.seed)
    model, tok, _ = load_causal_lm(args.base, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    rows = [encode(tok, e) for e in exs]
    rows = [{"input_ids": x, "labels": y} for x, y in rows if len(x) <= 1536]
    pad = tok.pad_token_id

    def collate(batch):  # pad to the longest in the batch: the naive default
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.tensor([b["input_ids"] + [pad] * (n - len(b["input_ids"])) for b in batch])
        labels = torch.tensor([b["labels"] + [-100] * (n - len(b["labels"])) for b in batch])
        mask = torch.tensor([[1] * len(b["input_ids"]) + [0] * (n - len(b["input_ids"])) for b in batch])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    with tempfile.TemporaryDirectory() as d:
        # Batch 8 is reached by accumulation: one padded fp32 forward of 8 x ~1,500 tokens was OOM-killed here.
        targs = TrainingArguments(
            output_dir=d,
            per_device_train_batch_size=args.baseline_micro,
            gradient_accumulation_steps=8 // args.baseline_micro,
            max_steps=args.steps,
            learning_rate=5e-4,
            warmup_steps=1,
            lr_scheduler_type="cosine",
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            seed=args.seed,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=rows, data_collator=collate)
        t = time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t
    tokens = sum(len(r["input_ids"]) for r in rows)  # one pass: steps * 8 == len(rows) examples
    padded = 0
    for b in range(0, len(rows), args.baseline_micro):  # estimate of padding under a random order
        chunk = rows[b : b + args.baseline_micro]
        padded += len(chunk) * max(len(r["input_ids"]) for r in chunk)
    return {
        "system": f"HF Trainer (fp32, pad to longest, {args.baseline_micro}x{8 // args.baseline_micro})",
        "tokens": tokens,
        "padded_tokens": padded,
        "train_s": round(dt, 1),
        "tokens_per_s": round(tokens / dt, 1),
        "peak_rss_mb": round(_peak_rss_mb()),
        "threads": torch.get_num_threads(),
    }


def run_quality(args) -> dict:
    """Greedy EM/F1 of the untuned base and base + adapter on the same held-out validation examples.

    Skips the first 64 shuffled validation examples (the slice training used for model selection).
    """
    import torch
    from peft import PeftModel

    from assets.adapters import read_manifest
    from assets.models import load_causal_lm
    from finetune.data import DataConfig, build_dataset
    from finetune.train import evaluate

    torch.set_num_threads(args.threads)
    man = read_manifest(args.quality)
    val = list(build_dataset(DataConfig()).val)
    random.Random(man["seed"]).shuffle(val)  # the order train() used
    exs = val[64 : 64 + args.n]
    model, tok, info = load_causal_lm(man["base"])
    untuned = evaluate(model, tok, exs)
    tuned = evaluate(PeftModel.from_pretrained(model, str(args.quality)), tok, exs)
    return {
        "base": man["base"],
        "adapter": str(args.quality),
        "n": len(exs),
        "untuned": untuned,
        "tuned": tuned,
        "training": man["training"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps of 8 examples each (one pass)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--baseline-micro",
        type=int,
        default=2,
        choices=[1, 2, 4, 8],
        help="baseline examples per forward (8 = no accumulation; OOM-killed at 23 GB here)",
    )
    ap.add_argument("--one", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument(
        "--quality", type=Path, help="adapter folder: score untuned vs tuned on validation instead"
    )
    ap.add_argument("--n", type=int, default=200, help="validation examples for --quality")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    args = ap.parse_args()
    if args.one:  # child process: one system, JSON on the last stdout line
        res = run_ours(args) if args.one == "ours" else run_baseline(args)
        print(json.dumps(res))
        return

    if args.quality:
        q = run_quality(args)
        keys = ("em", "f1", "f1_answerable", "abstain_acc", "false_abstain", "cite_acc", "mean_new_tokens")
        print(f"{'reader':<32} " + " ".join(f"{k:>14}" for k in keys))
        for name in ("untuned", "tuned"):
            print(f"{q['base'] + ' ' + name:<32} " + " ".join(f"{_num(q[name][k]):>14}" for k in keys))
        q["command"] = " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]])
        q["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out = args.out.with_name(f"train_quality_{q['base']}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(q, indent=1))
        print(f"wrote {out}")
        return

    rows = []
    for system in ("ours", "baseline"):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            system,
            "--base",
            args.base,
            "--steps",
            str(args.steps),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
            "--baseline-micro",
            str(args.baseline_micro),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            why = "killed (SIGKILL: out of memory?)" if p.returncode == -9 else f"exit {p.returncode}"
            print(f"{system} failed: {why}\n{p.stderr[-1500:]}", file=sys.stderr)
            sys.exit(1)
        rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(f"{system}: {rows[-1]}", flush=True)
    ours, base = rows
    speedup = ours["tokens_per_s"] / base["tokens_per_s"]
    print(f"{'system':<44} {'tokens/s':>9} {'train s':>8} {'padding':>8} {'peak RSS MB':>12}")
    for r in rows:
        padding = 1 - r["tokens"] / r["padded_tokens"]
        print(
            f"{r['system']:<44} {r['tokens_per_s']:>9.1f} {r['train_s']:>8.1f} {padding:>8.1%} {r['peak_rss_mb']:>12}"
        )
    print(f"speedup: {speedup:.2f}x ({args.base}, {args.steps} steps x 8 examples, {args.threads} threads)")
    import os

    result = {
        "base": args.base,
        "steps": args.steps,
        "batch": 8,
        "threads": args.threads,
        "seed": args.seed,
        "systems": rows,
        "speedup": round(speedup, 2),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "command": " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def _num(v) -> str:
    return "-" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    main()
