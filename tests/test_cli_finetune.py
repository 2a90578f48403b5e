"""`rag finetune` takes its defaults from the config dataclasses: one source of truth."""

from __future__ import annotations

from dataclasses import fields

import typer.main

from finetune.data import DataConfig
from finetune.train import TrainConfig
from rag.cli import app
from rag.config import ReaderConfig


def test_finetune_flag_defaults_are_the_config_defaults():
    cmd = typer.main.get_command(app).commands["finetune"]
    flags = {p.name: p.default for p in cmd.params}
    train = {f.name: f.default for f in fields(TrainConfig)}
    shared = [name for name in flags if name in train]
    assert len(shared) >= 18, shared  # every training flag is a TrainConfig field
    for name in shared:
        assert flags[name] == train[name], name
    assert flags["data"] == DataConfig.source
    for name in ("distractors", "min_distractors", "p_gold"):
        assert flags[name] == getattr(DataConfig, name), name
    assert flags["base"] == TrainConfig.base == ReaderConfig.model  # tune the reader `rag ask` uses
