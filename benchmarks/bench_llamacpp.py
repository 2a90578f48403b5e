"""llama.cpp as the speed anchor for the reader: prefill tokens/s and decode ms/token of a GGUF.

Not a project dependency: run it with a Python that has llama-cpp-python (built from its sdist), e.g.

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install --no-binary llama-cpp-python llama-cpp-python
    PYTHONPATH=. /tmp/llvenv/bin/python benchmarks/bench_llamacpp.py --model PATH.gguf --threads 2 1

The prompt is the reader's real one: rag.prompt.build_messages (the instruction, then five numbered
passages and a question) in Qwen's ChatML turns, the passages being consecutive word windows of
corpus/Super_Bowl_50.txt sized so the prompt is --prompt-tokens long (as the GGUF's tokenizer counts).

Per thread count, after one untimed warm-up: --reps times (reset the context; eval the whole prompt,
timed = prefill; then --decode-tokens single-token evals, each timed = decode). Medians over the reps.
`answer_s` projects one answer: prefill + --new-tokens decode steps (the reader's answers are ~6 tokens).
The JSON records the llama-cpp-python version, llama.cpp's system info (the SIMD it was compiled
with: an AVX2-only build on an AVX-512 machine emulates an AVX2-only CPU's kernels, not its clock or
memory) and --build, a free-text label for how it was built. Writes benchmarks/results/llamacpp.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, write_result  # noqa: E402

from rag.hardware import describe  # noqa: E402
from rag.prompt import Passage, build_messages  # noqa: E402

CORPUS_DOC = ROOT / "corpus" / "Super_Bowl_50.txt"
QUESTION = "Which team won Super Bowl 50?"
N_PASSAGES = 5


def chatml(messages: list[dict]) -> str:
    """Qwen2.5's chat template for a system + user turn, ending where the assistant's answer starts."""
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def build_prompt(tokenize, target: int) -> tuple[str, list[int]]:
    """The reader's prompt with N_PASSAGES word windows of the corpus doc, as close to `target` tokens
    as whole words allow without going over (one window size for all five)."""
    words = CORPUS_DOC.read_text().split()

    def render(n: int) -> tuple[str, list[int]]:
        passages = [
            Passage(source=CORPUS_DOC.name, text=" ".join(words[i * n : (i + 1) * n]))
            for i in range(N_PASSAGES)
        ]
        text = chatml(build_messages(QUESTION, passages))
        return text, tokenize(text)

    lo, hi = 1, len(words) // N_PASSAGES
    while lo < hi:  # the largest window whose prompt fits in `target`
        mid = (lo + hi + 1) // 2
        if len(render(mid)[1]) <= target:
            lo = mid
        else:
            hi = mid - 1
    return render(lo)


def measure(
    llama_cpp, model: Path, threads: int, prompt_tokens: int, reps: int, decode: int, new: int
) -> dict:
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    load_s = time.perf_counter() - t0
    text, ids = build_prompt(lambda s: llm.tokenize(s.encode(), add_bos=False, special=True), prompt_tokens)
    next_id = ids[-1]  # decode speed does not depend on which token is fed; greedy choice is not needed
    prefill, per_token = [], []
    for rep in range(reps + 1):  # rep 0 warms up (page cache, first-call allocations), not counted
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        p = time.perf_counter() - t
        steps = []
        for _ in range(decode):
            t = time.perf_counter()
            llm.eval([next_id])
            steps.append(time.perf_counter() - t)
        if rep:
            prefill.append(p)
            per_token.append(statistics.mean(steps))
    pre = statistics.median(prefill)
    dec = statistics.median(per_token)
    return {
        "threads": threads,
        "prompt_tokens": len(ids),
        "load_s": load_s,
        "prefill_s": pre,
        "prefill_tok_s": len(ids) / pre,
        "decode_ms_per_token": 1000 * dec,
        "answer_s": pre + new * dec,
        "prefill_s_runs": prefill,
        "decode_ms_runs": [1000 * d for d in per_token],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, nargs="+", required=True, help="one or more GGUF files")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--prompt-tokens", type=int, default=950)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=6, help="answer length the projection assumes")
    ap.add_argument("--quant", nargs="+", default=[], help="a quantization label per --model (recorded)")
    ap.add_argument("--build", default=None, help="how llama-cpp-python was built, e.g. its CMAKE_ARGS")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llamacpp.json")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        raise SystemExit(
            "bench_llamacpp: llama_cpp is not installed (pip install llama-cpp-python; not a project dependency)"
        ) from None
    system_info = llama_cpp.llama_print_system_info().decode().strip()
    hw = describe()
    rows = []
    quants = args.quant + [None] * (len(args.model) - len(args.quant))
    for model, quant in zip(args.model, quants, strict=True):
        for n in args.threads:
            print(f"[bench_llamacpp] {model.name}, {n} threads ...", file=sys.stderr, flush=True)
            row = measure(
                llama_cpp, model, n, args.prompt_tokens, args.reps, args.decode_tokens, args.new_tokens
            )
            rows.append({"model": model.name, "quant": quant, **row})
    print(
        f"\nllama-cpp-python {llama_cpp.__version__}, {rows[0]['prompt_tokens']}-token reader prompt, {args.decode_tokens} decode steps, "
        f"median of {args.reps}"
    )
    print(cpu_line(hw))
    print(f"llama.cpp: {system_info}")
    head = (
        f"{'model':<36} {'quant':<8} {'threads':>7} {'prefill s':>9} {'prefill tok/s':>13} {'decode ms/tok':>13} "
        f"{f'answer s (+{args.new_tokens} tok)':>20} {'load s':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['model']:<36} {r['quant'] or '-':<8} {r['threads']:>7} {r['prefill_s']:>9.2f} {r['prefill_tok_s']:>13.0f} "
            f"{r['decode_ms_per_token']:>13.1f} {r['answer_s']:>20.2f} {r['load_s']:>6.1f}"
        )
    settings = {
        "models": [str(m) for m in args.model],
        "quants": args.quant,
        "prompt_tokens": args.prompt_tokens,
        "reps": args.reps,
        "decode_tokens": args.decode_tokens,
        "new_tokens": args.new_tokens,
        "n_ctx": 2048,
    }
    write_result(
        args.out,
        "llamacpp",
        hw,
        settings,
        rows,
        llama_cpp_python=llama_cpp.__version__,
        llama_cpp_system_info=system_info,
        build=args.build,
    )


if __name__ == "__main__":
    main()
