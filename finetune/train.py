"""LoRA training of the reader on CPU: a plain torch loop, because the CPU budget needs control.

What makes it fast on a 2-core CPU (see benchmarks/bench_train.py for the measured gain):
- base weights in bf16 where the CPU has native bf16 (AVX512-BF16/AMX), fp32 elsewhere (rag.hardware),
  fp32 LoRA weights and optimizer;
- length-grouped batches, split into micro-batches capped at `micro_tokens` padded tokens, so little
  compute goes to padding and memory stays flat;
- the vocabulary projection runs only where a label is (answer tokens), not over the whole prompt;
- freed memory is handed back to the OS after every step (glibc malloc_trim): without it the process
  grew to 18 GB from fragmentation.

Each example is trained exactly as it is served: `render_prompt(...)` tokens, then the target
`format_target(...)` + EOS; only target tokens carry a label.

The library never prints: progress goes to `progress(event: dict)` with event["event"] in
{"start", "step", "eval", "checkpoint", "done"}. Ctrl-C (KeyboardInterrupt, even from the callback)
saves a checkpoint of the last completed step and re-raises; `resume=True` continues from it.

A checkpoint's trainer state holds only tensors and plain data and is read with torch's weights-only
unpickler: a full unpickle would run whatever code a crafted trainer_state.pt names. A fresh run never
replaces an adapter or checkpoints already in `out` unless `overwrite=True`.

Segments across sessions: `init_adapter=` starts the LoRA weights from a finished adapter (same base
build, rank, alpha, target modules and layers, else BadInput) with a fresh optimizer and schedule on the
current data. When the parent was trained on the same data stream (data hash, seed, batch size, max_len),
the batches behind its weights are skipped; otherwise the stream starts fresh, and the manifest says
which. The manifest's "parent" names the adapter started from, and "segments" lists every segment of the
chain (command, steps, examples, time, data hash), carried over from the parent's manifest.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assets import adapters
from finetune.data import Example
from rag.errors import BadInput
from rag.files import sha256_file
from rag.hardware import cpu_threads, torch_dtype
from rag.prompt import parse_output, render_prompt
from rag.text import em_f1

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainConfig:
    base: str = "qwen2.5-0.5b"  # model-store preset (or local folder) of the base reader (the default reader)
    rank: int = 16  # LoRA rank
    alpha: int = 32  # LoRA alpha (scaling = alpha / rank)
    dropout: float = (
        0.0  # LoRA dropout; 0 because on CPU its bernoulli draws were 40% of a step (and <1 epoch)
    )
    target_modules: str = "all-linear"  # "all-linear" or a comma list, e.g. "q_proj,v_proj"
    layers: str = ""  # decoder layers given LoRA, "N-M" (0-based, inclusive); "" = every layer
    lr: float = 5e-4  # peak learning rate (2e-4 plateaued early for SmolLM2 in the probe)
    weight_decay: float = 0.0  # AdamW weight decay on LoRA weights
    warmup_steps: int = 10  # linear warmup, then cosine to zero at max_steps
    batch_size: int = 8  # examples per optimizer step
    micro_tokens: int = 2048  # padded tokens per micro-batch (gradient accumulation inside a step)
    max_len: int = 1536  # longer examples (prompt + target) are dropped, never truncated
    max_steps: int = 300  # optimizer steps
    eval_every: int = 25  # steps between validation loss + EM/F1
    eval_examples: int = 40  # held-out examples scored by greedy EM/F1
    val_loss_examples: int = 64  # held-out examples for validation loss
    eval_at_start: bool = True  # score the untuned base on the same slice first
    patience: int = 4  # evaluations without val-loss improvement before stopping early
    save_every: int = 25  # steps between checkpoints
    keep_checkpoints: int = 2  # newest checkpoints kept
    max_new_tokens: int = 32  # generation bound when scoring EM/F1
    seed: int = 0  # model init of LoRA, dropout and batch order
    threads: int = 0  # torch threads; 0 = rag.hardware.cpu_threads()
    save_dtype: str = "bfloat16"  # dtype of the shipped adapter weights (halves size; training stays fp32)


@dataclass
class TrainResult:
    out: Path  # the adapter folder
    manifest: dict  # what was written to rag_adapter.json
    step: int  # optimizer steps done
    stopped: str  # "max_steps" | "early_stop"
    model: object = None  # the trained PeftModel (best adapter loaded), for callers that go on scoring


@dataclass
class _State:
    step: int = 0
    tokens: int = 0  # real (non-pad) tokens trained on
    padded_tokens: int = 0
    train_time: float = 0.0  # seconds spent in training steps (no eval, no checkpoint)
    elapsed: float = 0.0  # wall seconds in train() across resumes
    train_curve: list = field(default_factory=list)  # [step, loss]
    val_curve: list = field(default_factory=list)  # [step, val_loss]
    evals: list = field(default_factory=list)  # [{step, val_loss, em, f1, ...}]
    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    segments: list = field(default_factory=list)  # one {start_step, max_steps, command} per run or resume
    parent: dict | None = None  # the adapter this run started from (init_adapter) and the data-stream choice
    chain: list = field(default_factory=list)  # the parent's "segments": every earlier segment of the chain
    stream_start: int = 0  # batches of the data stream skipped at the start (behind the parent's weights)


# ---------------------------------------------------------------- encoding
def encode(tokenizer, ex: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels for one example: prompt tokens are labelled -100, target + EOS are kept.

    The prompt is tokenized on its own, exactly as rag.reader.encode_prompt does when serving (a chat
    template already holds its special tokens), so the boundary tokens match.
    """
    prompt = render_prompt(tokenizer, ex.question, ex.passages)
    add_special = not getattr(tokenizer, "chat_template", None)
    p_ids = list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
    t_ids = list(tokenizer(ex.target, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is None:
        raise BadInput("the tokenizer has no EOS token: the reader could not learn to stop")
    t_ids.append(tokenizer.eos_token_id)
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffle, sort by length within windows of 32 batches, cut into batches, shuffle the batches.

    >>> sorted(len(b) for b in length_grouped_batches([5, 1, 9, 3, 7], 2, seed=0))
    [1, 2, 2]
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * 32
    batches: list[list[int]] = []
    for s in range(0, len(idx), window):
        chunk = sorted(idx[s : s + window], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches(batch: list[int], lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Split one step's examples into micro-batches whose padded size (rows x longest) <= max_tokens.

    >>> micro_batches([0, 1, 2], [100, 300, 200], 500)
    [[0, 2], [1]]
    """
    out: list[list[int]] = []
    cur: list[int] = []
    for i in sorted(batch, key=lambda i: lengths[i]):
        if cur and (len(cur) + 1) * lengths[i] > max_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for j, (x, y) in enumerate(rows):
        ids[j, : len(x)] = torch.tensor(x)
        labels[j, : len(y)] = torch.tensor(y)
        mask[j, : len(x)] = 1
    return ids, labels, mask


def _loss_sum(model, ids, labels, mask):
    """Summed cross-entropy over labelled tokens; logits are computed only where a label is."""
    import torch
    import torch.nn.functional as F

    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100  # position p predicts token p+1
    targets = labels[:, 1:][keep[:, :-1]]
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1]).float()
    return F.cross_entropy(logits, targets, reduction="sum"), int(targets.numel())


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------- scoring
def score_prediction(raw: str, ex: Example) -> dict:
    """Score one generation: gold-less examples count as right only when the reader abstains."""
    parsed = parse_output(raw, n_passages=len(ex.passages))
    if ex.gold is None:
        ok = float(parsed.abstained)
        return {"em": ok, "f1": ok, "abstain_ok": ok}
    if parsed.abstained:
        return {"em": 0.0, "f1": 0.0, "false_abstain": 1.0, "cite_ok": 0.0}
    em, f1 = em_f1(parsed.text, ex.answers)
    return {"em": em, "f1": f1, "false_abstain": 0.0, "cite_ok": float(ex.gold in parsed.citations)}


def _stop_ids(model, tokenizer) -> list[int]:
    """EOS plus the end-of-turn ids the model store put into generation_config (as the reader stops)."""
    ids = [tokenizer.eos_token_id]
    gc = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gc if isinstance(gc, list) else [gc]
    return [int(i) for i in dict.fromkeys(ids) if i is not None]


def evaluate(model, tokenizer, examples: list[Example], max_new_tokens: int = 32) -> dict:
    """Greedy generation on `examples`; returns EM/F1 x100 over all, answerable F1, abstention and citation rates.

    Keys: em, f1 (all examples; a gold-less example is right when the reader abstains), f1_answerable,
    abstain_acc (abstained when the gold passage was absent), false_abstain (abstained when present),
    cite_acc (cited the gold passage), n, mean_new_tokens, s_per_example, samples (first 5 raw outputs).
    """
    import torch

    was_training = model.training
    model.eval()
    rows, samples, new_tokens = [], [], []
    t0 = time.perf_counter()
    eos = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    with torch.inference_mode():
        for ex in examples:
            ids, labels = encode(tokenizer, ex)
            n_prompt = sum(1 for y in labels if y == -100)
            x = torch.tensor([ids[:n_prompt]])
            out = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            gen = out[0, n_prompt:].tolist()
            new_tokens.append(len(gen))
            raw = tokenizer.decode([t for t in gen if t not in eos], skip_special_tokens=True)
            s = score_prediction(raw, ex)
            rows.append(s)
            if len(samples) < 5:
                samples.append({"question": ex.question, "target": ex.target, "output": raw})
    if was_training:
        model.train()

    def mean(key: str, subset: list[dict]) -> float | None:
        vals = [r[key] for r in subset if key in r]
        return round(100 * sum(vals) / len(vals), 2) if vals else None

    answerable = [r for r in rows if "cite_ok" in r]
    return {
        "n": len(rows),
        "em": mean("em", rows),
        "f1": mean("f1", rows),
        "f1_answerable": mean("f1", answerable),
        "em_answerable": mean("em", answerable),
        "abstain_acc": mean("abstain_ok", rows),
        "false_abstain": mean("false_abstain", rows),
        "cite_acc": mean("cite_ok", rows),
        "mean_new_tokens": round(sum(new_tokens) / max(1, len(new_tokens)), 2),
        "s_per_example": round((time.perf_counter() - t0) / max(1, len(rows)), 3),
        "samples": samples,
    }


def validation_loss(
    model, encoded: list[tuple[list[int], list[int]]], pad_id: int, micro_tokens: int
) -> float:
    """Mean per-token loss on answer tokens of `encoded` (no dropout, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    lengths = [len(x) for x, _ in encoded]
    total, count = 0.0, 0
    with torch.inference_mode():
        for mb in micro_batches(list(range(len(encoded))), lengths, micro_tokens):
            loss, n = _loss_sum(model, *_collate([encoded[i] for i in mb], pad_id))
            total += float(loss)
            count += n
    if was_training:
        model.train()
    return total / max(1, count)


# ---------------------------------------------------------------- model + checkpoints
def parse_layers(spec: str, n_layers: int) -> list[int] | None:
    """The decoder layer indices of a --layers value "N-M" (inclusive) or "N"; None for "" (every layer).

    >>> parse_layers("20-23", 24)
    [20, 21, 22, 23]
    >>> parse_layers("", 24) is None
    True
    """
    spec = spec.strip()
    if not spec:
        return None
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", spec)
    lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
    if lo > hi or hi >= n_layers:
        raise BadInput(
            f"--layers {spec!r} does not name decoder layers of this model ({n_layers} layers): "
            f"pass N-M with 0 <= N <= M <= {n_layers - 1}, e.g. --layers {n_layers // 2}-{n_layers - 1}"
        )
    return list(range(lo, hi + 1))


def _linear_names(model) -> list[str]:
    """Short names of the model's Linear layers except the output projection (peft's "all-linear" set)."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted(
        {
            n.rsplit(".", 1)[-1]
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head
        }
    )


def lora_layers(model) -> list[int]:
    """Indices of the decoder layers that hold LoRA weights in a peft model (from parameter names)."""
    found = {re.search(r"\.layers\.(\d+)\.", n) for n, _ in model.named_parameters() if "lora_" in n}
    return sorted({int(m.group(1)) for m in found if m})


def _peft_model(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    modules = (
        "all-linear" if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    )
    layers = None
    if cfg.layers.strip():
        n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not n_layers:
            raise BadInput("--layers: this model's config names no num_hidden_layers: drop --layers")
        layers = parse_layers(cfg.layers, n_layers)
        if modules == "all-linear":  # peft takes layers_to_transform only with a list of module names
            modules = _linear_names(model)
    lcfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=modules,
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lcfg)
    except ValueError as e:
        raise BadInput(
            f"LoRA target modules {targets!r} do not fit this model ({e}): use --target-modules all-linear"
        ) from e


def _lora_state(model) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _rng_state() -> dict:
    import torch

    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    import torch

    random.setstate(s["python"])
    torch.set_rng_state(s["torch"])


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder under a temporary name, then rename it into place (never half-written)."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _save_checkpoint(
    out: Path,
    model,
    optimizer,
    scheduler,
    state: _State,
    cfg: TrainConfig,
    data_hash: str,
    best_lora: dict | None,
) -> Path:
    import torch

    ckdir = out / CKPT_DIR
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{state.step:06d}"

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)  # fp32 adapter: resuming must not lose precision
        torch.save(
            {
                "step": state.step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "state": asdict(state),
                "config": asdict(cfg),
                "data_hash": data_hash,
                "best_lora": best_lora,
            },
            tmp / "trainer_state.pt",
        )

    _atomic_dir(final, write)
    olds = sorted(p for p in ckdir.glob("step-*") if p.is_dir())
    for p in olds[: -cfg.keep_checkpoints]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def check_out_dir(out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a fresh run over saved work in `out` (an adapter, or an unfinished run's checkpoints).

    Cheap and model-free, so the CLI calls it before building data as well as train() itself.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file: pass a folder for the adapter")
    if resume or overwrite:
        return
    if (out / adapters.ADAPTER_MANIFEST).exists() or (out / "adapter_model.safetensors").exists():
        raise BadInput(
            f"{out} already holds an adapter: pass --overwrite to replace it, --resume to continue "
            "its training, or another --out"
        )
    if latest_checkpoint(out) is not None:
        raise BadInput(
            f"{out} holds checkpoints of an unfinished run: pass --resume to continue it, "
            "--overwrite to start over, or another --out"
        )


def _restart_hint(out: Path) -> str:
    saved = (
        f", or keep using the adapter already saved in {out}"
        if (out / adapters.ADAPTER_MANIFEST).exists()
        else ""
    )
    return f"start over without --resume (add --overwrite){saved}"


_TRAINER_KEYS = ("optimizer", "scheduler", "rng", "state", "config")


def load_trainer_state(ck: Path, out: Path) -> dict:
    """A checkpoint's trainer_state.pt, read with the weights-only unpickler (never a full unpickle)."""
    import pickle

    import torch

    path = Path(ck) / "trainer_state.pt"
    try:
        with warnings.catch_warnings():  # a crafted file's pickle-protocol warning would add a stderr line
            warnings.simplefilter("ignore")
            saved = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise BadInput(
            f"--resume: {path} holds more than tensors and plain data (an older or tampered "
            f"checkpoint), so it was not loaded: {_restart_hint(out)}"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise BadInput(f"--resume: {path} is unreadable ({type(e).__name__}): {_restart_hint(out)}") from e
    if not isinstance(saved, dict) or any(k not in saved for k in _TRAINER_KEYS):
        raise BadInput(
            f"--resume: {path} is not a trainer state written by `rag finetune`: {_restart_hint(out)}"
        )
    return saved


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder under out/checkpoints, or None."""
    ckdir = Path(out) / CKPT_DIR
    done = sorted(p for p in ckdir.glob("step-*") if (p / "trainer_state.pt").exists())
    return done[-1] if done else None


def _save_adapter(model, out: Path, dtype: str, base_name: str | None = None) -> None:
    """peft's files (weights cast to `dtype`) into `out`, atomically per file."""
    import torch
    from safetensors.torch import load_file, save_file

    tmp = out / f".tmp-adapter-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    wfile = tmp / "adapter_model.safetensors"
    if dtype != "float32" and wfile.exists():
        tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in load_file(wfile).items()}
        save_file(tensors, wfile, metadata={"format": "pt"})
    (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model card names this machine's model path
    acfg = tmp / "adapter_config.json"
    if (
        base_name and acfg.exists()
    ):  # a preset name, not this machine's cache path; rag_adapter.json has the rest
        conf = json.loads(acfg.read_text())
        conf["base_model_name_or_path"] = base_name
        acfg.write_text(json.dumps(conf, indent=2, sort_keys=True))
    for f in tmp.iterdir():
        f.replace(out / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- continuing an adapter (segments)
_SHAPE_FLAGS = {
    "rank": "--rank",
    "alpha": "--alpha",
    "target_modules": "--target-modules",
    "layers": "--layers",
}
_STREAM_KEYS = ("seed", "batch_size", "max_len")  # with the data hash, these fix the batch order


def check_init_adapter(folder: Path, cfg: TrainConfig) -> dict:
    """The manifest of the adapter to start from, after checking its LoRA shape matches `cfg` (else BadInput).

    Model-free, so the CLI calls it before building data; train() also checks the base model build.
    """
    folder = Path(folder)
    man = adapters.manifest_or_none(folder)
    wfile = folder / "adapter_model.safetensors"
    if man is None or not wfile.is_file() or not (folder / adapters.PEFT_CONFIG).is_file():
        raise BadInput(
            f"--init-adapter {folder} is not an adapter folder written by `rag finetune` (it needs "
            f"{adapters.ADAPTER_MANIFEST}, {adapters.PEFT_CONFIG} and {wfile.name}): pass such a folder"
        )
    hp = man.get("hyperparameters") or {}
    for key, flag in _SHAPE_FLAGS.items():
        have, want = hp.get(key, getattr(TrainConfig, key)), getattr(cfg, key)  # no "layers": every layer
        if have != want:
            fix = f"pass {flag} {have}" if have != "" else f"drop {flag}"
            raise BadInput(
                f"--init-adapter {folder} has {key}={have!r}, not {want!r}: {fix} to continue it, "
                "or start without --init-adapter"
            )
    recorded = (man.get("adapter") or {}).get("sha256")
    if recorded and recorded != sha256_file(wfile):
        raise BadInput(
            f"--init-adapter {folder}: {wfile.name} is not the file its manifest describes (sha256 differs): "
            "restore the adapter's own weights or start without --init-adapter"
        )
    return man


def _check_parent_base(folder: Path, man: dict, base_info: dict) -> None:
    name, sha = base_info.get("name"), base_info.get("sha256")
    pname, psha = man.get("base"), man.get("base_sha256")
    if pname != name or (psha and sha and psha != sha):
        raise BadInput(
            f"--init-adapter {folder} was trained on base {pname!r} (sha256 {str(psha)[:12]}), not on "
            f"{name!r} (sha256 {str(sha)[:12]}): pass --base {pname} (the same build) or start without "
            "--init-adapter"
        )


def _weights_step(man: dict) -> int:
    """The step whose LoRA weights an adapter folder holds: the best by validation loss, else the last."""
    step = (man.get("final") or {}).get("step")
    return int(step if step is not None else (man.get("training") or {}).get("steps") or 0)


def _segment_entry(man: dict, total_before: int) -> dict:
    """One adapter's entry in the "segments" chain, from its manifest (also one written before chains)."""
    tr, hp = man.get("training") or {}, man.get("hyperparameters") or {}
    bs, ws = int(hp.get("batch_size") or 0), _weights_step(man)
    return {
        "adapter_sha256": (man.get("adapter") or {}).get("sha256"),
        "command": man.get("command"),
        "runs": tr.get("segments", []),  # the invocations: the first run and each --resume
        "steps": tr.get("steps"),
        "weights_step": ws,  # the step the adapter's weights are from (best validation loss)
        "examples_seen": tr.get("examples_seen"),
        "weights_examples_seen": ws * bs,
        "examples_seen_total": total_before + ws * bs,  # behind the weights, over the whole chain
        "stream_start": tr.get("stream_start", 0),  # examples of the data stream skipped first
        "data_hash": (man.get("data") or {}).get("hash"),
        "lr": hp.get("lr"),
        "layers": hp.get("layers", ""),
        "train_time_s": tr.get("train_time_s"),
        "wall_time_s": tr.get("wall_time_s"),
        "tokens_per_s": tr.get("tokens_per_s"),
        "created": man.get("created"),
    }


def _chain_of(man: dict) -> list[dict]:
    """The segments behind an adapter: its manifest's list, or one entry made from an older manifest."""
    chain = man.get("segments")
    return [dict(s) for s in chain] if isinstance(chain, list) and chain else [_segment_entry(man, 0)]


def _stream_choice(man: dict, cfg: TrainConfig, data_hash: str) -> tuple[int, str]:
    """(batches to skip, why): continue the parent's data stream only when it is the same stream."""
    hp = man.get("hyperparameters") or {}
    theirs = (man.get("data") or {}).get("hash") or ""
    if theirs != data_hash:
        return 0, (
            f"fresh: the parent was trained on other data (hash {theirs[:12] or 'unknown'}, "
            f"now {data_hash[:12] or 'unknown'})"
        )
    other = {k: hp.get(k) for k in _STREAM_KEYS if hp.get(k) != getattr(cfg, k)}
    if other:
        return (
            0,
            f"fresh: the parent's batch order differs ({', '.join(f'{k}={v}' for k, v in other.items())})",
        )
    start = int((man.get("training") or {}).get("stream_start", 0)) // cfg.batch_size + _weights_step(man)
    return (
        start,
        f"continued: the first {start * cfg.batch_size} examples of this stream (the parent's) are skipped",
    )


def _adapter_label(folder: Path) -> str:
    """How a manifest names another adapter folder: rag/adapters/<name> for a shipped one, else ~/..."""
    try:
        return "rag/adapters/" + Path(folder).resolve().relative_to(adapters.SHIPPED_ADAPTERS).as_posix()
    except ValueError:
        return str(_home_relative(str(Path(folder).resolve())))


def _init_from_adapter(run: _Run, folder: Path, base_info: dict) -> None:
    """Load the parent's LoRA weights into run.model and record the parent, its chain and the stream choice."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    man = check_init_adapter(folder, run.cfg)
    _check_parent_base(folder, man, base_info)
    tensors = load_file(folder / "adapter_model.safetensors")
    if set(tensors) != set(get_peft_model_state_dict(run.model)):
        raise BadInput(
            f"--init-adapter {folder}: its LoRA tensors name other modules than this model's: "
            "pass the --base it was trained on, or start without --init-adapter"
        )
    try:
        set_peft_model_state_dict(run.model, tensors)  # bf16 on disk, copied into the fp32 LoRA weights
    except RuntimeError as e:
        raise BadInput(
            f"--init-adapter {folder}: its LoRA shapes do not fit this model: pass the --base it was "
            "trained on, or start without --init-adapter"
        ) from e
    chain = _chain_of(man)
    start, why = _stream_choice(man, run.cfg, run.data_hash)
    tr = man.get("training") or {}
    st = run.state
    st.chain, st.stream_start = chain, start
    st.parent = {
        "path": _adapter_label(folder),
        "adapter_sha256": sha256_file(folder / "adapter_model.safetensors"),
        "base_sha256": man.get("base_sha256"),
        "data_hash": (man.get("data") or {}).get("hash"),
        "steps": tr.get("steps"),
        "examples_seen": tr.get("examples_seen"),
        "weights_step": _weights_step(man),
        "examples_seen_total": chain[-1].get("examples_seen_total"),
        "stream": why.split(":", 1)[0],  # "continued" | "fresh"
        "stream_note": why,
    }
    log.info("starting from adapter %s; data stream %s", folder, why)


def _check_resumed_parent(run: _Run, folder: Path) -> None:
    """With --resume and --init-adapter: the checkpoint must have started from that very adapter."""
    parent, folder = run.state.parent, Path(folder)
    if parent is None:
        raise BadInput(
            f"--init-adapter {folder}: the run checkpointed in {run.out} did not start from an adapter: "
            "resume it without --init-adapter, or start a new --out"
        )
    check_init_adapter(folder, run.cfg)
    if sha256_file(folder / "adapter_model.safetensors") != parent["adapter_sha256"]:
        raise BadInput(
            f"--init-adapter {folder} is not the adapter the run in {run.out} started from "
            f"({parent['path']}): resume without --init-adapter (the checkpoint keeps its parent)"
        )


# ---------------------------------------------------------------- the loop
@dataclass
class _Data:
    """A run's examples, encoded once; an example longer than max_len is dropped, never truncated."""

    train: list[tuple[list[int], list[int]]]  # (ids, labels) of the training examples that fit
    lengths: list[int]  # token length of each of them
    too_long: int  # training examples dropped for length
    val_loss: list[tuple[list[int], list[int]]]  # held-out examples for the validation loss
    eval_set: list[Example]  # held-out examples scored by greedy EM/F1
    pad_id: int


@dataclass
class _Run:
    """What the step loop, the evaluations and the checkpoints of one train() call share."""

    cfg: TrainConfig
    model: object  # the PeftModel being trained
    tokenizer: object
    data: _Data
    optimizer: object
    scheduler: object
    params: list  # the trainable (LoRA) parameters
    out: Path
    data_hash: str
    emit: Callable[[dict], None]  # the progress callback
    t_start: float  # perf_counter() when this train() call began
    state: _State = field(default_factory=_State)
    best_lora: dict | None = None  # LoRA weights at the best validation loss so far
    elapsed_before: float = 0.0  # wall seconds of the run's earlier segments (before a resume)
    n_batches: int = 0  # batches per epoch
    _epoch_batches: dict = field(default_factory=dict)

    @property
    def lora_params(self) -> int:
        return sum(p.numel() for p in self.params)

    def batches_of(self, epoch: int) -> list[list[int]]:
        """The batches of `epoch`: a pure function of (seed, epoch), so a resume needs no data state."""
        if epoch not in self._epoch_batches:
            self._epoch_batches.clear()
            seed = self.cfg.seed * 1000 + epoch
            self._epoch_batches[epoch] = length_grouped_batches(self.data.lengths, self.cfg.batch_size, seed)
        return self._epoch_batches[epoch]

    def evaluate_now(self) -> dict:
        """Validation loss and greedy EM/F1 at the current step, recorded in the state and emitted."""
        cfg, data, state = self.cfg, self.data, self.state
        vl = (
            validation_loss(self.model, data.val_loss, data.pad_id, cfg.micro_tokens)
            if data.val_loss
            else float("nan")
        )
        m = evaluate(self.model, self.tokenizer, data.eval_set, cfg.max_new_tokens) if data.eval_set else {}
        row = {"step": state.step, "val_loss": round(vl, 5), **{k: v for k, v in m.items() if k != "samples"}}
        state.evals.append(row)
        state.val_curve.append([state.step, round(vl, 5)])
        self.emit({"event": "eval", **row, "samples": m.get("samples", [])})
        _malloc_trim()
        return row

    def checkpoint(self) -> None:
        self.state.elapsed = self.elapsed_before + time.perf_counter() - self.t_start
        path = _save_checkpoint(
            self.out,
            self.model,
            self.optimizer,
            self.scheduler,
            self.state,
            self.cfg,
            self.data_hash,
            self.best_lora,
        )
        self.emit({"event": "checkpoint", "step": self.state.step, "path": str(path)})


def train(
    cfg: TrainConfig,
    train_examples: list[Example],
    val_examples: list[Example],
    out: Path,
    *,
    model=None,
    tokenizer=None,
    base_info: dict | None = None,
    data_info: dict | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_adapter: Path | None = None,
    progress: Callable[[dict], None] | None = None,
    command: str = "",
) -> TrainResult:
    """Train a LoRA adapter on `train_examples`, write it with its manifest to `out`, return the result.

    `model`/`tokenizer` default to `assets.models.load_causal_lm(cfg.base)` in the CPU's dtype. `data_info` goes into
    the manifest as is (source, hash, counts). With `resume`, the newest checkpoint in out/checkpoints
    restores adapter, optimizer, scheduler, RNG and step. Without `resume`, an adapter or checkpoints
    already in `out` are a BadInput unless `overwrite`; then the old checkpoints go once training starts
    (a later --resume must not pick up the replaced run), the old adapter when the new one is written.
    Ctrl-C saves a checkpoint and re-raises. `progress` receives the events named in the module docstring.
    `init_adapter` (a finished adapter folder) starts the LoRA weights from it, with a fresh optimizer and
    schedule; a resumed run keeps the parent its checkpoint records (`init_adapter` must then be it or None).
    """
    import torch

    t_start = time.perf_counter()
    out = Path(out)
    check_out_dir(out, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or cpu_threads())
    if not train_examples:
        raise BadInput("no training examples: check --data")
    model, tokenizer, base_info = _load_base(cfg, model, tokenizer, base_info)
    data_info = dict(data_info or {})
    data = _encode_data(tokenizer, cfg, train_examples, val_examples)
    emit = progress or (lambda event: None)
    run = _start_run(cfg, model, tokenizer, data, out, str(data_info.get("hash", "")), emit, t_start)
    if resume:
        _resume(run)
        if init_adapter is not None:
            _check_resumed_parent(run, init_adapter)
    elif init_adapter is not None:
        _init_from_adapter(run, init_adapter, base_info)
    run.elapsed_before = run.state.elapsed
    run.state.segments.append({"start_step": run.state.step, "max_steps": cfg.max_steps, "command": command})
    run.n_batches = len(run.batches_of(0))
    if overwrite and not resume:  # only now that the new run is set up: a setup error keeps the old run
        shutil.rmtree(out / CKPT_DIR, ignore_errors=True)
    emit(
        {
            "event": "start",
            "step": run.state.step,
            "max_steps": cfg.max_steps,
            "train_examples": len(data.train),
            "dropped_too_long": data.too_long,
            "lora_params": run.lora_params,
            "batches_per_epoch": run.n_batches,
            "lora_layers": lora_layers(run.model),
            "parent": run.state.parent,
            "stream_start": run.state.stream_start * cfg.batch_size,
            "_optimizer": run.optimizer,
        }
    )  # the live optimizer, for tools and tests that inspect a resume
    stopped = _step_loop(run)
    return _finish(run, stopped, base_info, data_info, command)


def _load_base(cfg: TrainConfig, model, tokenizer, base_info: dict | None):
    """(model, tokenizer, base_info): the given model or cfg.base from the model store, in the CPU's dtype."""
    if model is None:
        from assets.models import load_causal_lm

        # A private copy: peft injects LoRA layers into this model, which must not reach the process cache.
        model, tokenizer, base_info = load_causal_lm(cfg.base, cache=False)
    base_info = dict(base_info or {"name": cfg.base})
    # Base weights in the dtype this CPU computes fast (bf16 only with native bf16; emulated bf16 on an
    # AVX2-only CPU made a LoRA step of the 0.5B reader 105-147 s); LoRA weights and optimizer stay fp32.
    base_dtype = torch_dtype()
    if next(model.parameters()).dtype != base_dtype:
        model = model.to(base_dtype)
    return model, tokenizer, base_info


def _encode_data(
    tokenizer, cfg: TrainConfig, train_examples: list[Example], val_examples: list[Example]
) -> _Data:
    """Encode once; drop (never truncate) examples that do not fit; pick the validation slices."""
    enc_train = [encode(tokenizer, ex) for ex in train_examples]
    too_long = sum(len(x) > cfg.max_len for x, _ in enc_train)
    enc_train = [e for e in enc_train if len(e[0]) <= cfg.max_len]
    if not enc_train:
        raise BadInput(f"every training example is longer than max_len={cfg.max_len}: raise --max-len")
    val_pool = list(val_examples)
    random.Random(cfg.seed).shuffle(val_pool)  # a slice across articles, not the first article's questions
    val_loss_set = [encode(tokenizer, ex) for ex in val_pool[: cfg.val_loss_examples]]
    val_loss_set = [e for e in val_loss_set if len(e[0]) <= cfg.max_len]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return _Data(
        train=enc_train,
        lengths=[len(x) for x, _ in enc_train],
        too_long=too_long,
        val_loss=val_loss_set,
        eval_set=val_pool[: cfg.eval_examples],
        pad_id=pad_id,
    )


def _start_run(
    cfg: TrainConfig, model, tokenizer, data: _Data, out: Path, data_hash: str, emit, t_start: float
) -> _Run:
    """Seeded LoRA layers on the base, AdamW over them, and the warmup + cosine schedule."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = _peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, min(cfg.warmup_steps, cfg.max_steps), cfg.max_steps
    )
    return _Run(
        cfg=cfg,
        model=model,
        tokenizer=tokenizer,
        data=data,
        optimizer=optimizer,
        scheduler=scheduler,
        params=params,
        out=out,
        data_hash=data_hash,
        emit=emit,
        t_start=t_start,
    )


def _resume(run: _Run) -> None:
    """Restore adapter, optimizer, scheduler, RNG and progress from the newest checkpoint in run.out."""
    cfg, out = run.cfg, run.out
    ck = latest_checkpoint(out)
    if ck is None:
        raise BadInput(f"--resume: no checkpoint under {out / CKPT_DIR}: start without --resume")
    saved = load_trainer_state(ck, out)
    if saved.get("data_hash", "") != run.data_hash:
        raise BadInput(
            f"--resume: {ck} was trained on other data (hash differs): use the same --data and settings"
        )
    for key in ("rank", "alpha", "target_modules", "layers", "base", "batch_size"):
        have = saved["config"].get(key, getattr(TrainConfig, key))  # a key newer than the checkpoint: default
        if have != getattr(cfg, key):
            raise BadInput(
                f"--resume: checkpoint has {key}={have!r}, not "
                f"{getattr(cfg, key)!r}: pass the same setting or start a new --out"
            )
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        set_peft_model_state_dict(run.model, load_file(ck / "adapter_model.safetensors"))
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        run.state = _State(**saved["state"])
        run.best_lora = saved.get("best_lora")
        _set_rng_state(saved["rng"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise BadInput(
            f"--resume: {ck} does not match this run ({type(e).__name__}): {_restart_hint(out)}"
        ) from e
    log.info("resumed from %s at step %d", ck, run.state.step)


def _step_loop(run: _Run) -> str:
    """Train to max_steps, evaluating and checkpointing on schedule; "max_steps" or "early_stop".

    Ctrl-C (KeyboardInterrupt, also from the progress callback) drops the half-accumulated step, saves a
    checkpoint of the last completed one and re-raises.
    """
    cfg, state = run.cfg, run.state
    stopped = "max_steps"
    try:
        if cfg.eval_at_start and state.step == 0 and not state.evals and run.data.eval_set:
            run.evaluate_now()
        t_window, steps_window = time.perf_counter(), 0
        while state.step < cfg.max_steps:
            epoch, pos = divmod(state.stream_start + state.step, run.n_batches)
            loss, tokens, dt = _optimizer_step(run, run.batches_of(epoch)[pos])
            steps_window += 1
            sec_per_step = (time.perf_counter() - t_window) / steps_window  # includes evals: honest ETA
            run.emit(
                {
                    "event": "step",
                    "step": state.step,
                    "max_steps": cfg.max_steps,
                    "loss": loss,
                    "lr": run.scheduler.get_last_lr()[0],
                    "tokens_per_s": tokens / dt,
                    "avg_tokens_per_s": state.tokens / state.train_time,
                    "step_s": dt,
                    "eta_s": sec_per_step * (cfg.max_steps - state.step),
                    "epoch": epoch,
                }
            )
            last = state.step == cfg.max_steps
            # The last step is always scored: with --eval-every 0 the step-0 (untuned) score was reported
            # as the final validation.
            due = last or (cfg.eval_every and state.step % cfg.eval_every == 0)
            if due and (run.data.val_loss or run.data.eval_set) and _out_of_patience(run, run.evaluate_now()):
                stopped = "early_stop"
            if (cfg.save_every and state.step % cfg.save_every == 0) or last or stopped == "early_stop":
                run.checkpoint()
            if stopped == "early_stop":
                break
    except KeyboardInterrupt:
        run.optimizer.zero_grad(set_to_none=True)  # a half-accumulated step is dropped, not saved
        if state.step > 0:
            run.checkpoint()
        raise
    return stopped


def _optimizer_step(run: _Run, batch: list[int]) -> tuple[float, int, float]:
    """One optimizer step over `batch` in micro-batches; updates the state. (mean loss, real tokens, seconds)"""
    import torch

    data, state = run.data, run.state
    t0 = time.perf_counter()
    n_target = sum(sum(1 for y in data.train[i][1] if y != -100) for i in batch)
    step_loss, step_tokens, step_padded = 0.0, 0, 0
    run.optimizer.zero_grad(set_to_none=True)
    for mb in micro_batches(batch, data.lengths, run.cfg.micro_tokens):
        ids, labels, mask = _collate([data.train[i] for i in mb], data.pad_id)
        loss, _ = _loss_sum(run.model, ids, labels, mask)
        (loss / n_target).backward()
        step_loss += float(loss.detach())
        step_tokens += int(mask.sum())
        step_padded += ids.numel()
        del loss, ids, labels, mask
    torch.nn.utils.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    _malloc_trim()
    dt = time.perf_counter() - t0
    state.step += 1
    state.tokens += step_tokens
    state.padded_tokens += step_padded
    state.train_time += dt
    state.train_curve.append([state.step, round(step_loss / n_target, 5)])
    return step_loss / n_target, step_tokens, dt


def _out_of_patience(run: _Run, row: dict) -> bool:
    """Keep the LoRA weights of the best validation loss; True once `patience` evaluations gained nothing."""
    state = run.state
    if row["val_loss"] < state.best_val - 1e-4:
        state.best_val, state.best_step, state.bad_evals = row["val_loss"], state.step, 0
        run.best_lora = _lora_state(run.model)
        return False
    state.bad_evals += 1
    if run.cfg.patience and state.bad_evals >= run.cfg.patience:
        log.info("early stop at step %d: no val-loss gain in %d evals", state.step, state.bad_evals)
        return True
    return False


def _finish(run: _Run, stopped: str, base_info: dict, data_info: dict, command: str) -> TrainResult:
    """Ship the best adapter by validation loss (the last one when there was no evaluation) and its manifest."""
    cfg, out, state, model = run.cfg, run.out, run.state, run.model
    if run.best_lora is not None and state.best_step != state.step:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, run.best_lora)
    _save_adapter(model, out, cfg.save_dtype, base_info.get("name") or cfg.base)
    state.elapsed = run.elapsed_before + time.perf_counter() - run.t_start
    manifest = _manifest(run, stopped, base_info, data_info, command)
    adapters.write_manifest(out, manifest)
    run.emit(
        {"event": "done", "step": state.step, "stopped": stopped, "out": str(out), "final": manifest["final"]}
    )
    return TrainResult(out=out, manifest=manifest, step=state.step, stopped=stopped, model=model)


def _manifest(run: _Run, stopped: str, base_info: dict, data_info: dict, command: str) -> dict:
    """The rag_adapter.json of a finished run: what it was trained on, how, and how well it scored."""
    cfg, out, state = run.cfg, run.out, run.state
    # Never the untuned step-0 row as "final" after training: the newest row only if it scored the last step.
    latest = state.evals[-1] if state.evals and state.evals[-1]["step"] == state.step else {}
    chosen = next((e for e in state.evals if e["step"] == state.best_step), latest)
    first = state.evals[0] if state.evals and state.evals[0]["step"] == 0 else None
    wfile = out / "adapter_model.safetensors"
    man = {
        "format_version": adapters.MANIFEST_VERSION,
        "kind": "rag-reader-lora",
        # assets.adapters.check_base reads "base" (the reader's model name) and "base_sha256".
        "base": base_info.get("name") or cfg.base,
        "base_sha256": base_info.get("sha256"),
        "base_info": {
            k: _home_relative(base_info.get(k)) if k == "path" else base_info.get(k)
            for k in ("name", "params", "quantization", "sha256", "path")
        },
        "data": {
            k: _home_relative(v) if k == "cache" else _spec_home_relative(v) if k == "source" else v
            for k, v in data_info.items()
        },
        "hyperparameters": asdict(cfg),
        "seed": cfg.seed,
        "parent": state.parent,  # the adapter this one started from (--init-adapter), or None
        "training": _training_summary(run, stopped),
        "final": {
            "step": chosen.get("step"),
            "val_loss": chosen.get("val_loss"),
            "em": chosen.get("em"),
            "f1": chosen.get("f1"),
            "f1_answerable": chosen.get("f1_answerable"),
            "abstain_acc": chosen.get("abstain_acc"),
            "cite_acc": chosen.get("cite_acc"),
            "eval_examples": chosen.get("n"),
        },
        # Step 0 scores the base model, or the parent adapter when the run started from one.
        "untuned": None if state.parent else first,
        "initial": first if state.parent else None,
        "evals": state.evals,
        "curves": {"train_loss": state.train_curve, "val_loss": state.val_curve},
        "adapter": {
            "file": wfile.name,
            "sha256": sha256_file(wfile) if wfile.exists() else None,
            "bytes": wfile.stat().st_size if wfile.exists() else None,
            "dtype": cfg.save_dtype,
        },
        "command": command,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    total_before = (state.chain[-1].get("examples_seen_total") or 0) if state.chain else 0
    # Every segment of the chain, this one last: what a chain of runs across sessions did, in order.
    man["segments"] = [*state.chain, _segment_entry(man, total_before)]
    return man


def _training_summary(run: _Run, stopped: str) -> dict:
    """The manifest's "training" block: steps, examples, time, throughput, padding."""
    import torch

    cfg, state, n_train = run.cfg, run.state, len(run.data.train)
    return {
        "steps": state.step,
        "stopped": stopped,
        "best_step": state.best_step,
        "train_examples": n_train,
        "dropped_too_long": run.data.too_long,
        "examples_seen": state.step * cfg.batch_size,
        "epochs": round(state.step * cfg.batch_size / n_train, 3),
        "train_time_s": round(state.train_time, 1),
        "wall_time_s": round(state.elapsed, 1),
        "tokens": state.tokens,
        "padded_tokens": state.padded_tokens,
        "tokens_per_s": round(state.tokens / max(state.train_time, 1e-9), 1),
        "padding_fraction": round(1 - state.tokens / max(1, state.padded_tokens), 4),
        "threads": torch.get_num_threads(),
        "lora_params": run.lora_params,
        "lora_layers": lora_layers(run.model),
        "stream_start": state.stream_start * cfg.batch_size,  # examples of the data stream skipped first
        "segments": state.segments,  # a resume with another --max-steps changes the schedule from there
    }


def _home_relative(path: object) -> object:
    """A path under the user's home as "~/..." (a shipped manifest should not carry the build user's home).

    >>> _home_relative(str(Path.home() / ".cache" / "x"))
    '~/.cache/x'
    >>> _home_relative("/opt/models/x"), _home_relative(None)
    ('/opt/models/x', None)
    """
    if not isinstance(path, (str, Path)):
        return path
    try:
        return "~/" + Path(path).expanduser().resolve().relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return str(path)


def _spec_home_relative(spec: object) -> object:
    """A --data spec with each file part under the user's home as "~/..." ("a+b", "src@N" kept).

    >>> _spec_home_relative("squadshifts@2400+" + str(Path.home() / "data" / "qa.jsonl"))
    'squadshifts@2400+~/data/qa.jsonl'
    """
    if not isinstance(spec, str):
        return spec
    parts = []
    for part in spec.split("+"):
        path, at, n = part.rpartition("@") if "@" in part else (part, "", "")
        parts.append(f"{_home_relative(path) if '/' in path else path}{at}{n}")
    return "+".join(parts)


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }
