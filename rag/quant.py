"""Weight-only int8 for a causal LM's Linear layers, on torch's own CPU kernel (no torchao).

Decoding one token reads every weight once, so on 2 cores it is bound by memory bandwidth: int8 weights
are half the bytes of bf16 ones. Each targeted nn.Linear becomes an Int8Linear holding its weight as
int8 [out, in] with one scale per output row (symmetric: max |w| / 127), multiplied by
`torch.ops.aten._weight_int8pack_mm` (torch 2.13 CPU schema: `(Tensor self, Tensor mat2, Tensor scales)
-> Tensor`; self 2-D [M, K] with contiguous rows in bf16/fp16/fp32, mat2 int8 [N, K], scales [N] of
self's dtype, no bias: bias and 3-D inputs are handled here).

What the kernel is good for (AVX512-BF16 EPYC, 1 thread, a busy machine; rough): in bf16 it is ~2.3x
faster than a bf16 Linear for one row (decode: 0.10 vs 0.23 ms on a 4864x896 weight), even at 16 rows
and slower beyond (2.7x slower at 1,000 rows); so a prompt's prefill converts the int8 weight to bf16
and uses F.linear instead (~0.5 ms per matrix, ~5% on a 1,000-token prefill). In fp32 the kernel is
~8x *slower* than an fp32 Linear even for one row, so int8 needs a bf16 model and refuses an fp32 one.

A torch bug found here: with AVX512 kernels (this EPYC) and bf16, an input width K that is not a multiple
of 16 gives NaN/inf or a segfault (K = 8, 24, 40, 31; fine at 16, 32, 48, ..., 896; fine at every K
with ATEN_CPU_CAPABILITY=avx2). So a layer takes the kernel only when K is a multiple of 32 (Qwen2.5's
896 and 4864 are); any other width always takes the converted weight.

Modes ([reader] quantize): "none"; "int8" (every Linear of the decoder layers: q/k/v/o, gate/up/down);
"int8-head" (those and the lm_head, the 151,936 x 896 vocabulary projection: measured separately since
a vocabulary's logits may be more sensitive to rounding than a hidden state); "auto" (AUTO_MODE for a
bf16 reader, none for an fp32 one: resolve_mode).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

from rag.config import QUANTIZE_MODES as MODES
from rag.errors import BadInput

log = logging.getLogger(__name__)

# At most this many rows (tokens) go through the int8 kernel; more (a prompt) take the converted weight.
KERNEL_MAX_ROWS = 16
# The kernel only sees input widths that are a multiple of this (the AVX512 bug in the module doc).
KERNEL_K_MULTIPLE = 32
# Rows quantized at a time: bounds the fp32 temporary (the lm_head whole would be 545 MB).
_CHUNK_ROWS = 8192


# What "auto" means for a bf16 reader (benchmarks/bench_quant.py, README "Weight-only int8")
AUTO_MODE = "int8-head"


def resolve_mode(mode: str, dtype: torch.dtype) -> str:
    """The mode a reader computing in `dtype` loads with: "auto" is AUTO_MODE in bf16 and "none" otherwise
    (the kernel is slower than fp32 there: module doc); any other mode is itself.

    >>> resolve_mode("auto", torch.bfloat16), resolve_mode("auto", torch.float32), resolve_mode("none", torch.bfloat16)
    ('int8-head', 'none', 'none')
    """
    if check_mode(mode) != "auto":
        return mode
    return AUTO_MODE if dtype == torch.bfloat16 else "none"


def check_mode(mode: str) -> str:
    """`mode` if it is a valid [reader] quantize value, else BadInput listing them.

    >>> check_mode("int8")
    'int8'
    """
    if mode not in MODES:
        raise BadInput(f"quantize must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def check_dtype(mode: str, dtype: torch.dtype) -> None:
    """BadInput unless a model of `dtype` can be quantized with `mode` (int8 needs bf16: module doc)."""
    if mode != "none" and dtype != torch.bfloat16:
        have = str(dtype).removeprefix("torch.")
        raise BadInput(
            f"quantize = {mode} needs a bfloat16 reader, this one computes in {have} (torch's int8 kernel "
            'is ~8x slower than a float32 matmul): set [reader] quantize = "none", or dtype = "bfloat16"'
        )


@functools.lru_cache(maxsize=1)
def _kernel():
    """torch's int8-weight matmul, tried once on a tiny input; BadInput naming the fix if it is unusable."""
    why = None
    try:
        op, k = torch.ops.aten._weight_int8pack_mm, KERNEL_K_MULTIPLE
        y = op(torch.ones(1, k).bfloat16(), torch.ones(4, k, dtype=torch.int8), torch.ones(4).bfloat16())
        if y.shape != (1, 4) or float(y[0, 0]) != k:
            why = f"it returned {y.tolist()} for a known product"
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        op, why = None, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else 'missing'}"
    if why is not None:
        raise BadInput(
            f"this torch ({torch.__version__}) cannot run aten._weight_int8pack_mm ({why}): "
            'set [reader] quantize = "none", or install a torch with it (2.3 or later, CPU)'
        )
    return op


def quantize_weight(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight [out, in], scales [out] in `dtype`): symmetric, one scale per output row.

    The rows are rounded against the scale as stored in `dtype` (the kernel takes scales in the
    activations' dtype), so rounding the scale to bf16 is not a second, uncorrected error.

    >>> q, s = quantize_weight(torch.tensor([[1.0, -0.5], [0.0, 0.0]]), torch.float32)
    >>> q.tolist(), s.tolist()
    ([[127, -64], [0, 0]], [0.007874015718698502, 1.0])
    """
    out, _ = w.shape
    q = torch.empty(w.shape, dtype=torch.int8)
    scales = torch.empty(out, dtype=dtype)
    with torch.no_grad():
        for a in range(0, out, _CHUNK_ROWS):
            rows = w[a : a + _CHUNK_ROWS].float()
            amax = rows.abs().amax(dim=1)
            s = torch.where(amax > 0, amax / 127, torch.ones_like(amax)).to(dtype)  # an all-zero row: scale 1
            q[a : a + _CHUNK_ROWS] = torch.round(rows / s.float()[:, None]).clamp_(-127, 127).to(torch.int8)
            scales[a : a + _CHUNK_ROWS] = s
    return q, scales


class Int8Linear(torch.nn.Module):
    """y = x @ (int8 weight * per-row scale).T + bias, for inputs of any leading shape."""

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.kernel_ok = self.in_features % KERNEL_K_MULTIPLE == 0
        self.register_buffer("weight_int8", weight_int8)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear) -> Int8Linear:
        dtype = linear.weight.dtype
        q, s = quantize_weight(linear.weight.detach(), dtype)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, s, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.dtype != self.scales.dtype:
            x2 = x2.to(self.scales.dtype)
        if x2.shape[0] <= KERNEL_MAX_ROWS and self.kernel_ok:
            y = _kernel()(x2.contiguous(), self.weight_int8, self.scales)
        else:  # a prompt: a bf16 GEMM is faster than the kernel's int8 loop at this size
            y = F.linear(x2, self.weight_int8.to(x2.dtype)) * self.scales
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


def targets(model: torch.nn.Module, mode: str) -> list[str]:
    """Names of the nn.Linear modules `mode` replaces: all but the output projection, which "int8-head"
    adds. A Linear outside the decoder layers other than the head (none in Llama/Qwen2) is also taken."""
    check_mode(mode)
    if mode == "none":
        return []
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and (mode == "int8-head" or m is not head)
    ]


def quantize_model(model: torch.nn.Module, mode: str) -> dict:
    """Replace `model`'s targeted Linear layers by Int8Linear, in place; what changed, for the logs:
    {"mode", "layers", "linear_bytes_before", "linear_bytes_after"}.

    The model must compute in bf16: torch's kernel is slower than an fp32 Linear in fp32 (module doc).
    A head tied to the input embedding gets its own int8 copy (the embedding stays as it was).
    """
    names = targets(model, mode)
    if not names:
        return {"mode": mode, "layers": 0}
    for d in {model.get_submodule(n).weight.dtype for n in names}:
        check_dtype(mode, d)
    _kernel()
    before = after = 0
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        new = Int8Linear.from_linear(old)
        before += sum(t.numel() * t.element_size() for t in old.parameters())
        after += sum(t.numel() * t.element_size() for t in new.buffers())
        setattr(parent, child, new)
    own_storage(model)
    trim_heap()
    log.info(
        "int8 weights for %d Linear layers: %.0f MB -> %.0f MB", len(names), before / 2**20, after / 2**20
    )
    return {"mode": mode, "layers": len(names), "linear_bytes_before": before, "linear_bytes_after": after}


def own_storage(model: torch.nn.Module) -> int:
    """Give every parameter that is not an Int8Linear's its own memory; the bytes copied.

    A model loaded from safetensors shares one private mmap of the file among its tensors, and merging an
    adapter in place dirties the pages of the decoder weights (copy-on-write: anonymous memory from then
    on). Replacing those weights by int8 ones does not give the pages back while any tensor still points
    into the mapping (the embedding, the norms, a bf16 lm_head): 682 MB of dead bf16 weights stayed
    resident for Qwen2.5-0.5B. Copying the few survivors out lets the mapping go.
    """
    copied, seen = 0, set()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, Int8Linear):
                continue
            for p in m.parameters(recurse=False):
                if id(p) in seen:  # a tied weight is one Parameter in two modules: copied once
                    continue
                seen.add(id(p))
                p.data = p.data.clone()
                copied += p.numel() * p.element_size()
    return copied


def trim_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc's malloc_trim); False where there is none.

    Quantizing allocates and frees fp32 temporaries of up to 8,192 rows; glibc keeps such freed memory
    in its arenas, where RSS counts it until something trims it.
    """
    try:
        import ctypes

        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim with
        return False
