"""`rag finetune` takes its defaults from the config dataclasses: one source of truth."""

from __future__ import annotations

import json
from dataclasses import fields

import typer.main
from typer.testing import CliRunner

from finetune.data import DataConfig
from finetune.train import TrainConfig
from rag.cli import app
from rag.config import ReaderConfig
from rag.errors import BadInput


def test_finetune_flag_defaults_are_the_config_defaults():
    cmd = typer.main.get_command(app).commands["finetune"]
    flags = {p.name: p.default for p in cmd.params}
    train = {f.name: f.default for f in fields(TrainConfig)}
    shared = [name for name in flags if name in train]
    assert len(shared) >= 18, shared  # every training flag is a TrainConfig field
    for name in shared:
        if name in ("rank", "alpha"):  # None: the --init-adapter's shape, else TrainConfig's
            assert flags[name] is None, name
            continue
        assert flags[name] == train[name], name
    assert flags["data"] == DataConfig.source
    for name in ("distractors", "min_distractors", "p_gold", "swap_rate", "disfluent_rate"):
        assert flags[name] == getattr(DataConfig, name), name
    assert flags["base"] == TrainConfig.base == ReaderConfig.model  # tune the reader `rag ask` uses


def test_near_miss_flags_reach_the_data_config(tmp_path, monkeypatch):
    seen = []

    def build_dataset(cfg):
        seen.append(cfg)
        raise BadInput("stop before training")

    monkeypatch.setattr("finetune.data.build_dataset", build_dataset)
    args = ["finetune", "--out", str(tmp_path / "a"), "--swap-rate", "0.3", "--disfluent-rate", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "stop before training" in res.output
    assert (seen[0].swap_rate, seen[0].disfluent_rate) == (0.3, 0.0)
    assert seen[0].disfluent_answered == DataConfig.disfluent_answered  # no flag: the default


def _fake_adapter(folder, **hyperparameters):
    """A folder that passes the model-free --init-adapter check (the weights are never read here)."""
    import json

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"not read before training")
    hp = {"rank": 16, "alpha": 32, "target_modules": "all-linear", **hyperparameters}
    (folder / "rag_adapter.json").write_text(json.dumps({"base": "qwen2.5-0.5b", "hyperparameters": hp}))
    return folder


def _stub_training(monkeypatch, tmp_path) -> dict:
    """build_dataset and train stubbed: `seen` gets the data config, the TrainConfig and train()'s keywords."""
    from types import SimpleNamespace

    seen: dict = {}

    def build_dataset(cfg):
        seen["data"] = cfg
        return SimpleNamespace(train=[], val=[], hash="h", stats={}, path=tmp_path / "d.jsonl")

    def train(cfg, train_examples, val_examples, out, **kw):
        seen.update(cfg=cfg, **kw)
        raise BadInput("stop before training")

    monkeypatch.setattr("finetune.data.build_dataset", build_dataset)
    monkeypatch.setattr("finetune.train.train", train)
    return seen


def test_segment_flags_reach_the_config_and_train(tmp_path, monkeypatch):
    seen = _stub_training(monkeypatch, tmp_path)
    parent = _fake_adapter(tmp_path / "parent", layers="12-23")
    args = ["finetune", "--out", str(tmp_path / "a"), "--init-adapter", str(parent), "--layers", "12-23"]
    res = CliRunner().invoke(app, [*args, "--no-eval-at-start"])
    assert res.exit_code == 1 and "stop before training" in res.output
    assert seen["cfg"].layers == "12-23" and seen["init_adapter"] == parent
    assert seen["cfg"].eval_at_start is False

    res = CliRunner().invoke(app, ["finetune", "--out", str(tmp_path / "b"), "--init-adapter", "default"])
    assert res.exit_code == 1 and "stop before training" in res.output
    assert seen["init_adapter"].parts[-2:] == ("adapters", TrainConfig.base)  # the shipped adapter
    # it keeps the shipped adapter's own LoRA shape (a rank-32 soup) without --rank / --alpha
    shipped = json.loads((seen["init_adapter"] / "rag_adapter.json").read_text())["hyperparameters"]
    assert (seen["cfg"].rank, seen["cfg"].alpha) == (shipped["rank"], shipped["alpha"])


def test_init_adapter_mismatch_fails_before_building_data(tmp_path, monkeypatch):
    seen = _stub_training(monkeypatch, tmp_path)
    parent = _fake_adapter(tmp_path / "parent", rank=8)
    args = ["finetune", "--out", str(tmp_path / "a"), "--init-adapter", str(parent), "--rank", "16"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "rank=8, not 16: pass --rank 8" in res.output
    assert "data" not in seen and "Traceback" not in res.output
    res = CliRunner().invoke(app, args[:-2])  # without --rank the parent's rank is kept
    assert "stop before training" in res.output and seen["cfg"].rank == 8
    seen.pop("data", None)

    args = ["finetune", "--base", str(tmp_path / "my-model"), "--init-adapter", "default"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "no adapter ships for base" in res.output and "data" not in seen
