"""The LoRA loop on a 2-layer llama with a tokenizer trained in-process: fast, offline."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from fakes import tiny_train_config, tiny_train_lm, tiny_train_model, word_examples  # noqa: E402

from assets.adapters import ADAPTER_MANIFEST, check_base, read_manifest  # noqa: E402
from finetune.train import (  # noqa: E402
    TrainConfig,
    encode,
    latest_checkpoint,
    micro_batches,
    train,
)
from rag.prompt import ABSTAIN  # noqa: E402
from rag.text import em_f1  # noqa: E402

CFG = tiny_train_config()


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer llama config and a byte-level BPE tokenizer trained on the prompt vocabulary."""
    return tiny_train_lm()


def test_prompt_tokens_are_masked(tiny):
    _, tok = tiny
    ex = word_examples(2)[1]
    ids, labels = encode(tok, ex)
    n_prompt = sum(1 for y in labels if y == -100)
    assert len(ids) == len(labels) and n_prompt > 20
    assert labels[:n_prompt] == [-100] * n_prompt  # every prompt token is masked...
    assert labels[n_prompt:] == ids[n_prompt:]  # ...and every target token is kept
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == ex.target


def test_micro_batches_respect_token_cap():
    lengths = [100, 300, 200, 250, 90]
    mbs = micro_batches(list(range(5)), lengths, 500)
    assert sorted(i for mb in mbs for i in mb) == list(range(5))
    assert all(len(mb) * max(lengths[i] for i in mb) <= 500 for mb in mbs)


def test_squad_scoring_matches_reference_pairs():
    # training validation scores with rag.text.em_f1, the eval's own EM/F1
    assert em_f1("The Broncos", ["Denver Broncos", "broncos"]) == (1.0, 1.0)
    em, f1 = em_f1("Denver", ["Denver Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)


def test_adapter_changes_and_base_does_not(tiny, tmp_path):
    from peft import PeftModel

    cfg, tok = tiny
    model = tiny_train_model(cfg)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    exs = word_examples(24)
    res = train(
        CFG,
        exs[:20],
        exs[20:],
        tmp_path / "ad",
        model=model,
        tokenizer=tok,
        data_info={"source": "synthetic", "hash": "h"},
        command="pytest",
    )
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().sum() > 0 for p in lora.values())  # lora_B starts at zero: it moved
    checked = 0
    for name, p in model.named_parameters():  # peft injected its layers into this very model
        if "lora_" not in name:
            assert torch.equal(p, base_before[name.replace(".base_layer", "")]), name
            checked += 1
    assert checked == len(base_before)  # every base weight was compared
    man = json.loads((tmp_path / "ad" / ADAPTER_MANIFEST).read_text())
    assert man["training"]["steps"] == 6 and man["data"]["hash"] == "h" and man["command"] == "pytest"
    assert len(man["curves"]["train_loss"]) == 6 and man["curves"]["val_loss"][0][0] == 0
    assert man["untuned"]["step"] == 0 and man["final"]["f1"] is not None
    assert res.manifest["training"]["tokens_per_s"] > 0
    assert not (tmp_path / "ad" / "README.md").exists()  # no machine paths in a shippable folder
    assert (
        json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    )
    # Plain peft can load it, and the loaded adapter reproduces the trained model's logits.
    x = torch.tensor([encode(tok, exs[0])[0]])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=x).logits.float()
        got = PeftModel.from_pretrained(tiny_train_model(cfg), tmp_path / "ad")(input_ids=x).logits.float()
    assert torch.allclose(want, got, atol=0.15)  # adapter saved in bf16: small rounding only


def test_resume_continues_from_saved_step_with_same_optimizer_state(tiny, tmp_path):
    cfg, tok = tiny
    exs = word_examples(24)
    out = tmp_path / "ad"
    steps: list[int] = []

    def stop_at_4(ev):
        if ev["event"] == "step":
            steps.append(ev["step"])
            if ev["step"] == 4:
                raise KeyboardInterrupt  # as a Ctrl-C would, from inside the loop

    with pytest.raises(KeyboardInterrupt):
        train(
            CFG,
            exs[:20],
            exs[20:],
            out,
            model=tiny_train_model(cfg),
            tokenizer=tok,
            data_info={"hash": "h"},
            progress=stop_at_4,
        )
    ck = latest_checkpoint(out)
    assert ck is not None and ck.name == "step-000004" and not (out / ADAPTER_MANIFEST).exists()
    saved = torch.load(ck / "trainer_state.pt", weights_only=False)
    assert saved["step"] == 4 and saved["optimizer"]["state"]

    resumed_first: list[dict] = []
    model = tiny_train_model(cfg)

    def watch(ev):
        if ev["event"] == "start":
            # At "start" the checkpoint is loaded: the optimizer state must equal the saved one.
            opt_state = ev["_optimizer"].state_dict()["state"]
            for k, v in saved["optimizer"]["state"].items():
                assert torch.equal(opt_state[k]["exp_avg"], v["exp_avg"])
                assert torch.equal(opt_state[k]["step"], v["step"])
        if ev["event"] == "step":
            resumed_first.append(ev["step"])

    res = train(
        CFG,
        exs[:20],
        exs[20:],
        out,
        model=model,
        tokenizer=tok,
        data_info={"hash": "h"},
        resume=True,
        progress=watch,
    )
    assert resumed_first == [5, 6] and res.step == 6
    assert [seg["start_step"] for seg in res.manifest["training"]["segments"]] == [0, 4]

    # The interrupted + resumed run ends with the same adapter as one uninterrupted run.
    straight = tiny_train_model(cfg)
    train(
        CFG, exs[:20], exs[20:], tmp_path / "straight", model=straight, tokenizer=tok, data_info={"hash": "h"}
    )
    a = {n: p for n, p in model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in straight.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6), n


def test_resume_refuses_other_data(tiny, tmp_path):
    from rag.errors import BadInput

    cfg, tok = tiny
    exs = word_examples(12)
    c = TrainConfig(**{**CFG.__dict__, "max_steps": 2, "eval_every": 0})
    train(
        c,
        exs[:10],
        exs[10:],
        tmp_path / "ad",
        model=tiny_train_model(cfg),
        tokenizer=tok,
        data_info={"hash": "h1"},
    )
    with pytest.raises(BadInput, match="other data"):
        train(
            c,
            exs[:10],
            exs[10:],
            tmp_path / "ad",
            model=tiny_train_model(cfg),
            tokenizer=tok,
            data_info={"hash": "h2"},
            resume=True,
        )


def test_abstention_target_is_trained(tiny):
    _, tok = tiny
    ex = word_examples(1)[0]  # i % 5 == 0: gold-less
    assert ex.gold is None and ex.target == ABSTAIN
    ids, labels = encode(tok, ex)
    assert tok.decode([y for y in labels if y != -100][:-1]) == ABSTAIN


def test_cli_trains_a_local_model_and_the_reader_accepts_the_adapter(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rag.cli import app

    cfg, tok = tiny
    base = tmp_path / "tiny-llama"
    tiny_train_model(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    rows = [
        {"title": e.article, "question": e.question, "context": p.text, "answers": e.answers}
        for e in word_examples(40)
        if e.gold
        for p in [e.passages[e.gold - 1]]
    ]
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.setattr("assets.bigbench.eval_passage_hashes", lambda: set())
    out = tmp_path / "adapter"
    args = [
        "finetune",
        "--base",
        str(base),
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--eval-examples",
        "2",
        "--val-loss-examples",
        "2",
        "--batch-size",
        "2",
        "--threads",
        "1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "adapter:" in res.output and "validation:" in res.output
    man = read_manifest(out)
    assert man["command"].startswith("rag ") and man["data"]["source"] == str(data)
    assert man["data"]["counts"]["train_examples"] > 0 and man["training"]["steps"] == 2
    check_base(man, {"name": man["base"], "sha256": man["base_sha256"]}, out)  # the reader's own check

    # Missing data: one line naming the fix, exit 1, no traceback.
    res = CliRunner().invoke(app, ["finetune", "--base", str(base), "--data", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and "--data squadshifts" in res.output and "Traceback" not in res.output
