"""`rag finetune` takes its defaults from the config dataclasses: one source of truth."""

from __future__ import annotations

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
