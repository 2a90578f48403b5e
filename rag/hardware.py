"""What this CPU does fast, and how much of it is free: the compute dtype and the thread count.

Machines differ in ways that change the right choice by 4x:

- bf16 matmuls are 3-7x faster than fp32 for inference on CPUs with native bf16 (AVX512-BF16, AMX),
  but about 4x *slower* where bf16 is emulated (AVX2-only laptops and servers): there the default reader
  took ~30 s per answer in bf16 and ~8 s in fp32. So the dtype is chosen by the CPU the code runs on.
- OpenMP threads spin while they wait for each other. Beside another busy process they burn the core
  the other one needs: the default reader went from 1.6 s to 5.9 s per answer beside a second torch
  process, 4.5 s with one thread, and 3.2 s with all threads told to sleep while waiting
  (OMP_WAIT_POLICY=PASSIVE), which costs 1.7x on an idle machine (benchmarks/bench_busy.py). So a
  process that starts on a busy machine waits passively, one that starts on an idle one spins.

Imports nothing of ours (rag.config and indexing use it). `RAG_DTYPE` (auto | bfloat16 | float32) and
`RAG_THREADS` (a number) override the choices, e.g. to benchmark one against the other; an
OMP_WAIT_POLICY already set is left alone.

    >>> choose_dtype({"avx2", "avx512_bf16"}), choose_dtype({"avx2"}), choose_dtype({"avx2"}, "bfloat16")
    ('bfloat16', 'float32', 'bfloat16')
"""

from __future__ import annotations

import os
import platform
import sys
import time
from functools import lru_cache

DTYPES = ("auto", "bfloat16", "float32")
# flags that decide the dtype, and the ones a benchmark prints so a figure names the CPU it came from
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_fast_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True when bf16 matmuls run natively (AVX512-BF16 or AMX), i.e. faster than fp32."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def choose_dtype(flags: frozenset[str] | set[str] | None = None, wanted: str | None = None) -> str:
    """'bfloat16' or 'float32': `wanted` (or $RAG_DTYPE) unless it is 'auto', else what the CPU does fast."""
    wanted = (wanted or os.environ.get("RAG_DTYPE") or "auto").strip().lower()
    if wanted not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {wanted!r}")
    if wanted != "auto":
        return wanted
    return "bfloat16" if has_fast_bf16(flags) else "float32"


def torch_dtype(wanted: str | None = None):
    """The torch dtype for `choose_dtype(wanted=wanted)`."""
    import torch

    return getattr(torch, choose_dtype(wanted=wanted))


def cores() -> int:
    """Cores this process may run on (cgroup/affinity aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0.0)  # idle + iowait
    return sum(parts) - idle, sum(parts)


def _own_time() -> float:
    t = os.times()
    return t.user + t.system


def busy_cores(window_s: float = 0.1) -> float:
    """How many cores other processes keep busy, measured over a short window (0 when unknown)."""
    a, own_a = _cpu_times(), _own_time()
    if a is None:
        return 0.0
    t0 = time.perf_counter()
    time.sleep(window_s)
    b, own_b = _cpu_times(), _own_time()
    if b is None or b[1] <= a[1]:
        return 0.0
    share = (b[0] - a[0]) / (b[1] - a[1])  # busy fraction of all online CPUs
    online = os.cpu_count() or 1
    others = share * online - (own_b - own_a) / max(time.perf_counter() - t0, 1e-3)
    return max(0.0, others)


_STARTED_BUSY: float | None = None  # cores others kept busy when configure_for_load() looked


def configure_for_load(window_s: float = 0.1) -> float:
    """Call before torch is imported: on a busy machine, make OpenMP threads sleep while they wait.

    Returns the busy cores it saw. Does nothing once torch is loaded (the policy is read at start-up)
    or when OMP_WAIT_POLICY is already set.
    """
    global _STARTED_BUSY
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or cores() == 1:
        return _STARTED_BUSY or 0.0
    _STARTED_BUSY = busy_cores(window_s)
    if _STARTED_BUSY >= 0.5:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return _STARTED_BUSY


@lru_cache(maxsize=1)
def cpu_threads() -> int:
    """Threads for torch/onnxruntime in this process: $RAG_THREADS, else every core we may use.

    Fewer threads than cores lost to passive waiting beside another process (4.5 s vs 3.2 s per answer,
    bench_busy), so the count stays at the cores and configure_for_load() picks the wait policy.
    Single queries still run on one thread (see indexing.embed).
    """
    env = os.environ.get("RAG_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return cores()


def describe() -> dict:
    """What a benchmark or an eval log records about the CPU it ran on."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": cores(),
        "flags": [f for f in REPORTED_FLAGS if f in flags],
        "fast_bf16": has_fast_bf16(flags),
        "dtype": choose_dtype(flags),
        "threads": cpu_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "busy_cores_at_start": None if _STARTED_BUSY is None else round(_STARTED_BUSY, 2),
        "emulated_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("ATEN_CPU_CAPABILITY"),
    }
