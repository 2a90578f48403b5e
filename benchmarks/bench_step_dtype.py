"""One LoRA forward+backward of a reader preset in bf16 vs fp32 on this CPU: tokens/s per dtype.

    python benchmarks/bench_step_dtype.py smollm2-135m bfloat16 4 512
    python benchmarks/bench_step_dtype.py smollm2-135m float32 4 512

Prints three timed steps (the first includes warm-up); the README quotes the last one.
"""

from __future__ import annotations

import sys
import time

import torch
from peft import LoraConfig, get_peft_model

from assets.models import load_causal_lm


def main() -> None:
    preset, dtype_name, batch, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dtype = getattr(torch, dtype_name)
    torch.set_num_threads(2)
    model, _, _ = load_causal_lm(preset, dtype=dtype)
    model = get_peft_model(
        model.to(dtype), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    ids = torch.randint(100, 1000, (batch, length))
    for _ in range(3):
        t = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        dt = time.perf_counter() - t
        print(
            f"{preset} {dtype_name} {batch}x{length}: {dt:.2f} s, {batch * length / dt:.0f} tokens/s",
            flush=True,
        )


if __name__ == "__main__":
    main()
