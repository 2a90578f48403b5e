"""finetune.soup: the averaged adapter, merged by peft, adds exactly the averaged weight delta."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from fakes import tiny_train_lm, tiny_train_model  # noqa: E402

from assets.adapters import ADAPTER_MANIFEST, read_manifest  # noqa: E402
from finetune.soup import main, soup  # noqa: E402
from rag.errors import BadInput  # noqa: E402
from rag.files import sha256_file  # noqa: E402

BASE = {"base": "tiny", "base_sha256": "a" * 64, "format_version": 1, "kind": "lora"}


def _adapter(cfg, folder, seed: int, rank: int, alpha: int, modules=("q_proj", "v_proj", "down_proj")):
    """A peft LoRA on the tiny llama with random (non-zero) A and B, saved with a manifest."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_train_model(cfg), LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(modules))
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(folder)
    # both chains start with the same segment "s0", then one of their own
    segments = [
        {"adapter_sha256": "s0", "train_time_s": 10.0},
        {"adapter_sha256": f"s{seed}", "train_time_s": seed},
    ]
    (folder / ADAPTER_MANIFEST).write_text(json.dumps(dict(BASE, segments=segments)))
    return folder


def _merged(cfg, folder) -> dict:
    """Base weights plus the adapter's delta, as peft merges it (float32)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_train_model(cfg).float(), str(folder)).merge_and_unload()
    return {k: v.float().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def cfg():
    return tiny_train_lm()[0]


def test_the_soup_merges_to_the_weighted_average_of_the_deltas(cfg, tmp_path):
    one = _adapter(cfg, tmp_path / "one", seed=1, rank=4, alpha=8)
    two = _adapter(cfg, tmp_path / "two", seed=2, rank=4, alpha=16)  # another alpha / r: scales differ
    base = {k: v.float().clone() for k, v in tiny_train_model(cfg).float().state_dict().items()}
    m1, m2 = _merged(cfg, one), _merged(cfg, two)
    out = soup(one, two, 0.3, tmp_path / "soup", ["one", "two", "--weight", "0.3"])
    got = _merged(cfg, out)
    changed = 0
    for key, w in base.items():
        want = w + 0.7 * (m1[key] - w) + 0.3 * (m2[key] - w)
        # bf16 storage of the stacked factors: a few thousandths of the delta
        torch.testing.assert_close(got[key], want, atol=2e-3, rtol=1e-2)
        changed += not torch.equal(m1[key], w)
    assert changed >= 6  # q, v, down of both layers moved: the check above compared real deltas
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16  # rank 4 + 4, alpha / r of the first
    manifest = read_manifest(out)
    assert manifest["base_sha256"] == "a" * 64
    assert [p["share"] for p in manifest["soup"]["parents"]] == [pytest.approx(0.7), 0.3]
    assert [g["adapter_sha256"] for g in manifest["soup"]["parents"][1]["segments"]] == ["s0", "s2"]
    # the segments behind the soup, the shared one once: 10 + 1 + 2 s of training
    assert [g["adapter_sha256"] for g in manifest["segments"]] == ["s0", "s1", "s2"]
    assert manifest["training"]["train_time_s"] == 13.0
    assert manifest["adapter"]["sha256"] == sha256_file(out / "adapter_model.safetensors")
    assert manifest["command"] == "python -m finetune.soup one two --weight 0.3"


def test_weight_zero_is_the_first_adapter(cfg, tmp_path):
    one = _adapter(cfg, tmp_path / "one", seed=1, rank=4, alpha=8)
    two = _adapter(cfg, tmp_path / "two", seed=2, rank=4, alpha=8)
    m1, got = _merged(cfg, one), _merged(cfg, soup(one, two, 0.0, tmp_path / "soup"))
    for key in m1:
        torch.testing.assert_close(got[key], m1[key], atol=2e-3, rtol=1e-2)


def test_adapters_that_cannot_be_mixed_are_one_clear_error(cfg, tmp_path, capsys):
    one = _adapter(cfg, tmp_path / "one", seed=1, rank=4, alpha=8)
    other = _adapter(cfg, tmp_path / "other", seed=2, rank=4, alpha=8, modules=("q_proj",))
    with pytest.raises(BadInput, match="different modules"):
        soup(one, other, 0.5, tmp_path / "soup")
    (tmp_path / "other" / ADAPTER_MANIFEST).write_text(json.dumps(dict(BASE, base_sha256="b" * 64)))
    assert main([str(one), str(tmp_path / "other"), "--out", str(tmp_path / "s")]) == 1
    assert "different base_sha256" in capsys.readouterr().err
    assert main([str(one), str(one), "--weight", "2", "--out", str(tmp_path / "s")]) == 1
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main([str(one), str(one), "--out", str(keep)]) == 1
    assert (keep / "notes.txt").read_text() == "mine" and not (keep / "adapter_config.json").exists()
    # an adapter already in --out is kept unless --overwrite; a parent is never the --out
    made = tmp_path / "made"
    assert main([str(one), str(one), "--out", str(made)]) == 0
    before = (made / "adapter_model.safetensors").read_bytes()
    assert main([str(one), str(one), "--weight", "0.2", "--out", str(made)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (made / "adapter_model.safetensors").read_bytes() == before
    assert main([str(one), str(one), "--weight", "0.2", "--out", str(made), "--overwrite"]) == 0
    assert main([str(one), str(made), "--out", str(one), "--overwrite"]) == 1
    assert "one of the two adapters" in capsys.readouterr().err
    # damaged weights: one line, not a traceback
    (made / "adapter_model.safetensors").write_bytes(b"junk")
    assert main([str(one), str(made), "--out", str(tmp_path / "t")]) == 1
    assert "sha256 differs" in capsys.readouterr().err
