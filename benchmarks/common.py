"""What every benchmark shares: the CPU line it prints and the JSON it writes.

A figure is only meaningful with the CPU it came from (bf16 is 3-7x faster than fp32 on one kind and
4x slower on the other), so each table is preceded by `cpu_line()` and each JSON carries `hardware`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


def run_worker(script: str, flags: list[str], env: dict, what: str) -> dict:
    """Run `script --worker FLAGS` in a fresh process (thread and ISA settings are fixed when torch
    starts) and return the JSON object on the last line it prints."""
    p = subprocess.run([sys.executable, script, "--worker", *flags], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"worker for {what} failed: {p.stderr[-1500:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_line(hw: dict, extra: str = "") -> str:
    """'CPU: AMD EPYC, 2 cores, flags avx2 fma ...' (+ the ISA cap when one is set, + `extra`)."""
    cap = f" (ISA capped: {hw['emulated_isa']})" if hw.get("emulated_isa") else ""
    return f"CPU: {hw['cpu']}, {hw['cores']} cores, flags {' '.join(hw['flags']) or '-'}{cap}{extra}"


def write_result(
    out: Path, benchmark: str, hw: dict, settings: dict, rows: list, summary: dict | None = None, **more
) -> None:
    """Write benchmarks/results/<name>.json: what ran, on which CPU, with which settings, and the rows.

    `summary` holds the few headline numbers (taken from `rows`) that the report's benchmark slide shows.
    """
    result = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "hardware": hw,
        **more,
        "settings": settings,
        "summary": summary or {},
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def fused_retriever(index, mode: str = "hybrid"):
    """The retriever over `index` without the reranker (which is on by default), for benchmarks that
    time or add the reranking themselves."""
    from indexing.retrieve import open_retriever
    from rag.config import RetrievalConfig

    return open_retriever(index, mode=mode, cfg=RetrievalConfig(rerank=False))
