"""A weighted average of two LoRA adapters of the same base model, written as one exact adapter.

Two adapters trained from the same start drift apart in what they are good at (the chain's segment 2
reads Wikipedia better than the shipped adapter and documentation worse). Averaging their weight
deltas, (1 - w) * B1 A1 + w * B2 A2, is the usual cheap middle ground (a "model soup" / WiSE-FT). Averaging
the A and B matrices separately would not give that average, so the soup is written exactly, as one
LoRA of rank r1 + r2: A = [A1; A2] stacked, B = [(1 - w) s1 / s * B1, w s2 / s * B2], with s = alpha / r
of the soup, so that peft's merge adds exactly the averaged delta.

    python -m finetune.soup finetune/segments/qwen2.5-0.5b-seg0 finetune/segments/qwen2.5-0.5b-seg2 \
        --weight 0.5 --out ~/runs/qwen-soup50
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

from assets import adapters
from rag.errors import BadInput
from rag.files import sha256_file, write_atomic

WEIGHTS = "adapter_model.safetensors"


def _chain(man: dict) -> list[dict]:
    """The training segments behind an adapter, oldest first (one entry made from its own manifest when it
    was trained before chains were recorded)."""
    if man.get("segments"):
        return list(man["segments"])
    if man.get("soup"):
        return []
    from finetune.train import _segment_entry

    return [_segment_entry(man, 0)]


def _scale(config: dict) -> float:
    if (
        config.get("use_rslora")
        or config.get("use_dora")
        or config.get("rank_pattern")
        or config.get("alpha_pattern")
    ):
        raise BadInput("finetune.soup mixes plain LoRA adapters only (no rsLoRA, DoRA or per-module ranks)")
    return float(config["lora_alpha"]) / float(config["r"])


def soup_tensors(first: dict, second: dict, s1: float, s2: float, weight: float, scale: float) -> dict:
    """The stacked LoRA tensors of (1 - weight) * first + weight * second (see the module docstring)."""
    import torch

    if set(first) != set(second):
        raise BadInput("the two adapters train different modules: they cannot be averaged")
    out = {}
    for key in sorted(first):
        a, b = first[key], second[key]
        if ".lora_A." in key:
            out[key] = torch.cat([a.float(), b.float()], dim=0).to(a.dtype)
        elif ".lora_B." in key:
            out[key] = torch.cat(
                [a.float() * ((1 - weight) * s1 / scale), b.float() * (weight * s2 / scale)], dim=1
            ).to(a.dtype)
        else:
            raise BadInput(
                f"unexpected tensor {key} in an adapter: finetune.soup mixes LoRA A/B weights only"
            )
    return out


def _weights(folder: Path, man: dict) -> dict:
    """An adapter folder's LoRA tensors, after checking the file is the one its manifest describes."""
    from safetensors.torch import load_file

    wfile = folder / WEIGHTS
    if not wfile.is_file():
        raise BadInput(f"{folder} has no {WEIGHTS}: pass a folder written by `rag finetune` or finetune.soup")
    recorded = (man.get("adapter") or {}).get("sha256")
    if recorded and recorded != sha256_file(wfile):
        raise BadInput(
            f"{wfile} is not the file its manifest describes (sha256 differs): restore the adapter"
        )
    try:
        return load_file(wfile)
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise BadInput(f"{wfile} cannot be read ({e}): restore the adapter's own weights") from e


def soup(
    first: Path,
    second: Path,
    weight: float,
    out: Path,
    argv: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the soup of two adapter folders into `out` (peft files + rag_adapter.json); returns `out`."""
    from safetensors.torch import save_file

    if not 0.0 <= weight <= 1.0:
        raise BadInput(f"--weight must be between 0 and 1, got {weight}")
    first, second, out = Path(first), Path(second), Path(out)
    if out.resolve() in (first.resolve(), second.resolve()):
        raise BadInput(f"--out {out} is one of the two adapters being mixed: pass another folder")
    if (
        out.exists()
        and out.is_dir()
        and any(out.iterdir())
        and not (out / adapters.ADAPTER_MANIFEST).is_file()
    ):
        raise BadInput(f"{out} exists and is not an adapter folder: pass a new or empty --out")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file: pass a folder for the adapter")
    if (out / adapters.ADAPTER_MANIFEST).is_file() and not overwrite:
        raise BadInput(f"{out} already holds an adapter: pass --overwrite to replace it, or another --out")
    man1, man2 = adapters.read_manifest(first), adapters.read_manifest(second)
    for key in ("base", "base_sha256"):
        if man1.get(key) != man2.get(key):
            raise BadInput(f"{first} and {second} have different {key}: only adapters of one base model mix")
    cfg1 = json.loads((first / adapters.PEFT_CONFIG).read_text())
    cfg2 = json.loads((second / adapters.PEFT_CONFIG).read_text())
    if sorted(cfg1["target_modules"]) != sorted(cfg2["target_modules"]) or cfg1.get(
        "layers_to_transform"
    ) != cfg2.get("layers_to_transform"):
        raise BadInput("the two adapters put LoRA on different modules or layers: they cannot be averaged")
    s1, s2 = _scale(cfg1), _scale(cfg2)
    rank = int(cfg1["r"]) + int(cfg2["r"])
    scale = s1  # the soup keeps the first adapter's alpha / r
    tensors = soup_tensors(_weights(first, man1), _weights(second, man2), s1, s2, weight, scale)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(out / WEIGHTS)
    config = dict(cfg1, r=rank, lora_alpha=scale * rank)
    write_atomic(out / adapters.PEFT_CONFIG, json.dumps(config, indent=2))
    keep = ("format_version", "kind", "base", "base_sha256", "base_info", "data", "untuned")
    manifest = {k: man1[k] for k in keep if k in man1}
    manifest["hyperparameters"] = dict(man1.get("hyperparameters", {}), rank=rank, alpha=scale * rank)
    chains = [_chain(man1), _chain(man2)]
    manifest["soup"] = {
        "weight": weight,
        "parents": [
            {
                "folder": str(folder),
                "share": share,
                "adapter_sha256": (man.get("adapter") or {}).get("sha256"),
                "data": man.get("data"),
                "segments": chain,
            }
            for folder, share, man, chain in zip(
                (first, second), (1 - weight, weight), (man1, man2), chains, strict=True
            )
        ],
    }
    # every training segment behind either parent, once (a chain shares its first segments with the other)
    seen: dict = {}
    for seg in chains[0] + chains[1]:
        seen.setdefault(seg.get("adapter_sha256") or id(seg), seg)
    segments = list(seen.values())
    manifest["segments"] = segments
    manifest["training"] = {
        "steps": 0,
        "train_time_s": round(sum(float(g.get("train_time_s") or 0) for g in segments), 1),
        "wall_time_s": round(sum(float(g.get("wall_time_s") or 0) for g in segments), 1),
        "examples_seen": sum(int(g.get("weights_examples_seen") or 0) for g in segments),
        "note": "a soup of two adapters: no training of its own; the times and examples are those of every "
        "segment behind its parents, each counted once",
    }
    manifest["adapter"] = {
        "file": WEIGHTS,
        "sha256": sha256_file(out / WEIGHTS),
        "bytes": (out / WEIGHTS).stat().st_size,
        "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch."),
    }
    manifest["command"] = shlex.join(["python", "-m", "finetune.soup", *(argv or [])])
    manifest["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    adapters.write_manifest(out, manifest)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m finetune.soup", description=__doc__.split("\n\n")[0])
    ap.add_argument("first", type=Path, help="adapter folder (share 1 - weight)")
    ap.add_argument("second", type=Path, help="adapter folder (share weight)")
    ap.add_argument("--weight", type=float, default=0.5, help="the second adapter's share (0..1)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--overwrite", action="store_true", help="replace an adapter already in --out")
    args = ap.parse_args(argv)
    try:
        out = soup(args.first, args.second, args.weight, args.out, argv, overwrite=args.overwrite)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.weight:g} of {args.second}, {1 - args.weight:g} of {args.first})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
