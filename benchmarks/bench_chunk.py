"""Chunking time on pathological inputs: LangChain's RecursiveCharacterTextSplitter plus text.find
to locate its pieces (the chunker before), against indexing.chunk.RecursiveSplitter (after), each
at 1x and 4x input size, with two token counters: the fake embedder's whitespace count
(tests/fakes.py) and a real fast WordPiece tokenizer (all-MiniLM-L6-v2's tokenizer.json from the
model store if pulled, else one trained in-process on corpus/). No model is loaded.

    python benchmarks/bench_chunk.py [--scale 1.0] [--budget 60]
Prints a table and writes benchmarks/results/chunk.json. A "before" run whose 1x case took longer
than --budget seconds is not repeated at 4x (it is quadratic; the table says so).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MB = 1_000_000


def corpus_text() -> str:
    return "\n\n".join(p.read_text() for p in sorted((ROOT / "corpus").glob("*.txt")))


def inputs(scale: float) -> dict[str, Callable[[float], str]]:
    """name -> size factor -> text. Sizes: 1 MB single lines, 100k tiny lines (x scale)."""
    corpus = corpus_text()
    rng = random.Random(0)
    words = [w for w in corpus.split() if w.isalpha()]

    def repeat(s: str, n: int) -> str:
        return (s * (n // len(s) + 1))[:n]

    return {
        "1 MB single line of prose": lambda f: repeat(corpus.replace("\n", " "), int(f * scale * MB)),
        "1 MB single line, no separators": lambda f: "".join(
            rng.choices(string.ascii_letters + string.digits + "+/", k=int(f * scale * MB))
        ),
        # fixed-width columns: no sentence breaks, so the splitter works word by word, and every
        # space is a zero-token piece (LangChain's window copy made this quadratic in the padding)
        "1 MB single line, words padded by 100 spaces": lambda f: repeat(
            "".join(w + " " * 100 for w in words[:5000]), int(f * scale * MB)
        ),
        "100k tiny lines": lambda f: "".join(f"line {i}\n" for i in range(int(f * scale * 100_000))),
    }


def wordpiece_counter():
    """A real fast tokenizer's untruncated count, and where it came from."""
    from tokenizers import Tokenizer

    from rag.config import models_dir

    shipped = models_dir() / "minilm" / "tokenizer.json"
    if shipped.exists():
        tok, source = Tokenizer.from_file(str(shipped)), "all-MiniLM-L6-v2 tokenizer.json (model store)"
    else:
        from tokenizers import models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(
            [corpus_text()], trainers.WordPieceTrainer(vocab_size=8000, special_tokens=["[UNK]"])
        )
        source = "WordPiece (8k vocab) trained in-process on corpus/"
    tok.no_truncation()  # the shipped file caps counts at 128: count real lengths, as the embedder does
    tok.no_padding()
    return (lambda t: len(tok.encode(t, add_special_tokens=False).ids)), source


def before(count, text: str):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from indexing.chunk import SEPARATORS, chunk_text

    lc = RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        chunk_size=200,
        chunk_overlap=32,
        length_function=count,
        keep_separator="end",
        strip_whitespace=True,
    )
    return chunk_text("doc", text, lc)  # a LangChain splitter: pieces located with text.find, as before


def after(count, text: str):
    from indexing.chunk import chunk_text, make_splitter

    return chunk_text("doc", text, make_splitter(count, 200, 32))


def timed(fn, count, text: str) -> tuple[float, int]:
    t = time.perf_counter()
    chunks = fn(count, text)
    return time.perf_counter() - t, len(chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply every input size (0.1 for a quick look)"
    )
    ap.add_argument(
        "--budget", type=float, default=60.0, help="skip a before-run at 4x if 1x took longer (s)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chunk.json")
    args = ap.parse_args()

    import langchain_text_splitters  # noqa: F401  (imports are not part of the timing)
    from fakes import HashEmbedder

    wp, wp_source = wordpiece_counter()
    counters = {"whitespace": HashEmbedder().count_tokens, "wordpiece": wp}
    rows = []
    print_header()
    for name, make in inputs(args.scale).items():
        texts = {1: make(1), 4: make(4)}
        for cname, count in counters.items():
            row = {"input": name, "counter": cname, "chars_1x": len(texts[1]), "chars_4x": len(texts[4])}
            for label, fn in (("before", before), ("after", after)):
                t1, n1 = timed(fn, count, texts[1])
                row[f"{label}_1x_s"], row["chunks_1x"] = round(t1, 3), n1
                if label == "before" and t1 > args.budget:
                    row["before_4x_s"] = None
                    continue
                t4, n4 = timed(fn, count, texts[4])
                row[f"{label}_4x_s"], row["chunks_4x"] = round(t4, 3), n4
            rows.append(row)
            print_row(row)

    res = {
        "rows": rows,
        "wordpiece": wp_source,
        "chunk_tokens": 200,
        "chunk_overlap": 32,
        "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text()
        if Path("/proc/cpuinfo").exists()
        else None,
        "cpus": len(os.sched_getaffinity(0)),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_chunk.py" + (f" --scale {args.scale}" if args.scale != 1 else ""),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwordpiece counter: {wp_source}; load average {res['load_avg_1m']}; wrote {args.out}")


def print_header() -> None:
    print(
        f"{'input':46} {'counter':10} {'before 1x':>10} {'before 4x':>10} {'after 1x':>9} {'after 4x':>9} "
        f"{'speedup 1x':>10}"
    )


def print_row(r: dict) -> None:
    def s(v):
        return f"{v:9.2f}s" if v is not None else f"{'skipped':>10}"

    speed = r["before_1x_s"] / max(r["after_1x_s"], 1e-6)
    print(
        f"{r['input']:46} {r['counter']:10} {s(r['before_1x_s'])} {s(r.get('before_4x_s'))} "
        f"{r['after_1x_s']:8.2f}s {r['after_4x_s']:8.2f}s {speed:9.0f}x"
    )


if __name__ == "__main__":
    main()
