"""GGUF -> bf16 safetensors, once per model, so every later load is a plain two-second from_pretrained.

transformers can load a GGUF file directly, but it dequantizes the whole file each time (the 15-60 s a
conversion takes here). We pay that once: load the GGUF dequantized to bf16, detach the GGUF quantizer
transformers keeps on the model, and save a plain safetensors folder with its tokenizer. The cache then
holds bf16 whatever the source quantization was.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from assets import Say, tell
from assets.store import dir_size, mb
from rag.errors import ModelUnavailable
from rag.hardware import cpu_threads

log = logging.getLogger(__name__)


def convert_gguf(gguf: Path, out: Path, say: Say) -> dict[str, Any]:
    """Load a GGUF once (dequantized), save bf16 safetensors + tokenizer into `out`.

    Returns facts for the manifest: {"n_params", "convert_seconds"}.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cpu_threads())
    tell(log, say, f"converting {gguf.name} to bf16 safetensors (once; 15-60 s)...")
    t0 = time.perf_counter()
    from transformers.utils import logging as hf_logging

    # transformers warns that packed GGUF weights run slower in bf16; we never run them packed.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as e:  # transformers raises many types for unsupported/corrupt GGUF
        raise ModelUnavailable(
            f"could not load {gguf.name} with transformers ({type(e).__name__}: {e}): "
            "use another preset or a Hugging Face model folder"
        ) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    # transformers may keep GGUF weights packed behind a quantizer; without it save_pretrained
    # writes plain tensors, and the cache then loads like any model folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    secs = time.perf_counter() - t0
    tell(log, say, f"converted in {secs:.0f} s: {n_params / 1e6:.0f}M params, {mb(dir_size(out))} on disk")
    del model
    return {"n_params": n_params, "convert_seconds": round(secs, 1)}
