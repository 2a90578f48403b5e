"""The compute dtype follows the CPU, the thread count follows the free cores."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import pytest
import torch

from rag import hardware


def test_doctests():
    assert doctest.testmod(hardware).failed == 0


@pytest.mark.parametrize(
    "flags, want",
    [
        ({"avx2", "fma"}, "float32"),  # AVX2-only (most laptops): bf16 is emulated and ~4x slower
        ({"avx2", "avx512f", "avx512_bf16"}, "bfloat16"),
        ({"avx2", "amx_bf16"}, "bfloat16"),
        (set(), "float32"),  # unknown CPU (no /proc/cpuinfo): the safe choice
    ],
)
def test_dtype_by_cpu_flags(flags, want, monkeypatch):
    monkeypatch.delenv("RAG_DTYPE", raising=False)
    assert hardware.choose_dtype(flags) == want


def test_dtype_override(monkeypatch):
    monkeypatch.setenv("RAG_DTYPE", "bfloat16")
    assert hardware.choose_dtype({"avx2"}) == "bfloat16"
    assert hardware.choose_dtype({"avx2"}, "float32") == "float32"  # an explicit argument wins
    monkeypatch.setenv("RAG_DTYPE", "fp8")
    with pytest.raises(ValueError, match="auto, bfloat16, float32"):
        hardware.choose_dtype()


def test_reader_loads_in_the_cpu_dtype_and_says_so(tmp_path, monkeypatch):
    """A cached bf16 model is loaded as fp32 on an AVX2-only CPU, and `rag ask --json` names the dtype."""
    from fakes import make_tokenizer, tiny_llama_config
    from transformers import LlamaForCausalLM

    from assets import models
    from rag.reader import LLMReader

    tok = make_tokenizer()
    folder = tmp_path / "tiny-lm"
    LlamaForCausalLM(tiny_llama_config(tok)).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    monkeypatch.delenv("RAG_DTYPE", raising=False)
    for flags, want in (({"avx2"}, torch.float32), ({"avx2", "avx512_bf16"}, torch.bfloat16)):
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: frozenset(flags))
        model, tk, info = models.load_causal_lm(folder, cache=False)
        assert next(model.parameters()).dtype == want
        assert info["dtype"] == str(want).removeprefix("torch.")
        assert LLMReader(model, tk, info, adapter=None).reader["dtype"] == info["dtype"]


def test_threads_are_every_core_unless_overridden(monkeypatch):
    hardware.cpu_threads.cache_clear()
    monkeypatch.delenv("RAG_THREADS", raising=False)
    try:
        assert hardware.cpu_threads() == hardware.cores()
    finally:
        hardware.cpu_threads.cache_clear()


def test_busy_cores_sees_another_process():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert hardware.busy_cores(0.5) >= 0.6
    finally:
        hog.kill()
        hog.wait()


def test_a_busy_machine_gets_passive_waiting():
    """Started beside a hog, a process sets OMP_WAIT_POLICY=PASSIVE before torch loads; never after."""
    code = (
        "import os; from rag import hardware; hardware.configure_for_load(0.5); "
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        late = subprocess.run(
            [sys.executable, "-c", "import torch; " + code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        hog.kill()
        hog.wait()
    assert out.stdout.strip() == ("PASSIVE" if hardware.cores() > 1 else "None")
    assert late.stdout.strip() == "None"  # torch already read its settings: leave them alone


def test_thread_override(monkeypatch):
    hardware.cpu_threads.cache_clear()
    monkeypatch.setenv("RAG_THREADS", "3")
    try:
        assert hardware.cpu_threads() == 3
    finally:
        hardware.cpu_threads.cache_clear()


def test_describe_names_the_cpu():
    d = hardware.describe()
    assert d["cores"] >= 1 and d["dtype"] in ("bfloat16", "float32")
    assert set(d["flags"]) <= set(hardware.REPORTED_FLAGS)
