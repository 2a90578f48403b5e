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


# ---------------------------------------------------------------- segments: --init-adapter, --layers
PARENT_BASE = {"name": "tiny", "sha256": "a" * 64}


def _lora_params(model) -> dict:
    """The model's LoRA tensors under the names peft saves them with (no adapter name, peft prefix)."""
    return {
        "base_model.model." + n.replace(".default", ""): p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" in n
    }


@pytest.fixture(scope="module")
def parent(tiny, tmp_path_factory):
    """A finished 6-step adapter on data "h"; its weights are those of the last step (only it is scored)."""
    from dataclasses import replace

    cfg, tok = tiny
    out = tmp_path_factory.mktemp("parent") / "ad"
    train(
        replace(CFG, eval_every=0),
        word_examples(24)[:20],
        word_examples(24)[20:],
        out,
        model=tiny_train_model(cfg),
        tokenizer=tok,
        base_info=PARENT_BASE,
        data_info={"hash": "h"},
        command="rag finetune --out parent",
    )
    return out


def _record_batches(monkeypatch) -> list:
    import finetune.train as ft

    seen, step = [], ft._optimizer_step

    def recording(run, batch):
        seen.append(list(batch))
        return step(run, batch)

    monkeypatch.setattr(ft, "_optimizer_step", recording)
    return seen


def _stream_batch(tok, exs, index: int) -> list[int]:
    """Batch number `index` of the data stream of CFG (seed 0) over `exs`, as the step loop draws it."""
    from finetune.train import length_grouped_batches

    lengths = [len(encode(tok, e)[0]) for e in exs]
    epoch, pos = divmod(index, len(length_grouped_batches(lengths, CFG.batch_size, 0)))
    return length_grouped_batches(lengths, CFG.batch_size, epoch)[pos]


def test_init_adapter_starts_from_the_parent_and_the_chain_has_both_segments(
    tiny, parent, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    cfg, tok = tiny
    exs = word_examples(24)
    want = {k: v.float() for k, v in load_file(parent / "adapter_model.safetensors").items()}
    model = tiny_train_model(cfg)
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    at_start: dict = {}

    def watch(ev):
        if ev["event"] == "start":
            at_start.update(_lora_params(model))

    batches = _record_batches(monkeypatch)
    res = train(
        CFG,
        exs[:20],
        exs[20:],
        tmp_path / "child",
        model=model,
        tokenizer=tok,
        base_info=PARENT_BASE,
        data_info={"hash": "h"},
        init_adapter=parent,
        progress=watch,
        command="rag finetune --init-adapter parent",
    )
    assert at_start.keys() == want.keys() and want
    for k in want:  # the first step starts from the parent's (bf16-saved) weights, exactly
        assert torch.equal(at_start[k], want[k]), k
    after = _lora_params(model)
    assert any(not torch.allclose(after[k], want[k]) for k in want)  # training moved them
    for name, p in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base_before[name.replace(".base_layer", "")]), name
    assert not any("lm_head" in n for n in want)

    pman, man = read_manifest(parent), res.manifest
    assert man["parent"]["adapter_sha256"] == pman["adapter"]["sha256"]
    assert man["parent"]["path"].endswith("/ad") and man["parent"]["steps"] == 6
    assert man["parent"]["examples_seen"] == 24 and man["parent"]["stream"] == "continued"
    seg = man["segments"]
    assert [s["adapter_sha256"] for s in seg] == [pman["adapter"]["sha256"], man["adapter"]["sha256"]]
    assert [s["command"] for s in seg] == ["rag finetune --out parent", "rag finetune --init-adapter parent"]
    assert [s["data_hash"] for s in seg] == ["h", "h"] and all(s["wall_time_s"] > 0 for s in seg)
    assert seg[0]["examples_seen_total"] == 24
    assert seg[1]["examples_seen_total"] == 24 + man["final"]["step"] * CFG.batch_size
    # The same data stream: the 6 batches behind the parent's weights are skipped, the 7th comes first.
    assert man["training"]["stream_start"] == 24 and seg[1]["stream_start"] == 24
    assert batches[0] == _stream_batch(tok, exs[:20], 6) != _stream_batch(tok, exs[:20], 0)
    assert man["untuned"] is None and man["initial"]["step"] == 0  # step 0 scored the parent, not the base


def test_init_adapter_on_other_data_starts_the_stream_fresh(tiny, parent, tmp_path, monkeypatch):
    from dataclasses import replace

    cfg, tok = tiny
    exs = word_examples(24)
    batches = _record_batches(monkeypatch)
    res = train(
        replace(CFG, max_steps=1, eval_every=0, eval_at_start=False),
        exs[:20],
        exs[20:],
        tmp_path / "child",
        model=tiny_train_model(cfg),
        tokenizer=tok,
        base_info=PARENT_BASE,
        data_info={"hash": "h2"},
        init_adapter=parent,
    )
    p = res.manifest["parent"]
    assert p["stream"] == "fresh" and "other data" in p["stream_note"] and p["data_hash"] == "h"
    assert res.manifest["training"]["stream_start"] == 0 and batches[0] == _stream_batch(tok, exs[:20], 0)
    assert [s["data_hash"] for s in res.manifest["segments"]] == ["h", "h2"]


@pytest.mark.parametrize(
    ("change", "base_info", "needle"),
    [
        ({"rank": 8}, PARENT_BASE, "rank=4, not 8: pass --rank 4"),
        ({"alpha": 4}, PARENT_BASE, "alpha=8, not 4: pass --alpha 8"),
        ({"target_modules": "q_proj"}, PARENT_BASE, "pass --target-modules all-linear"),
        ({"layers": "1-1"}, PARENT_BASE, "layers='', not '1-1': drop --layers"),
        ({}, {"name": "tiny", "sha256": "b" * 64}, "pass --base tiny (the same build)"),
        ({}, {"name": "other"}, "trained on base 'tiny'"),
    ],
)
def test_init_adapter_mismatch_is_one_clear_error(tiny, parent, tmp_path, change, base_info, needle):
    from dataclasses import replace

    from rag.errors import BadInput

    cfg, tok = tiny
    exs = word_examples(12)
    with pytest.raises(BadInput, match="--init-adapter") as e:
        train(
            replace(CFG, **change),
            exs[:10],
            exs[10:],
            tmp_path / "child",
            model=tiny_train_model(cfg),
            tokenizer=tok,
            base_info=base_info,
            data_info={"hash": "h"},
            init_adapter=parent,
        )
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "child" / ADAPTER_MANIFEST).exists()


def test_init_adapter_refuses_a_folder_without_an_adapter(tmp_path):
    from finetune.train import check_init_adapter
    from rag.errors import BadInput

    with pytest.raises(BadInput, match="not an adapter folder written by `rag finetune`"):
        check_init_adapter(tmp_path, CFG)


def test_resume_of_a_segment_keeps_its_parent(tiny, parent, tmp_path):
    from dataclasses import replace

    from rag.errors import BadInput

    cfg, tok = tiny
    exs, out = word_examples(24), tmp_path / "child"
    c = replace(CFG, eval_every=0, eval_at_start=False)

    def stop_at_2(ev):
        if ev["event"] == "step" and ev["step"] == 2:
            raise KeyboardInterrupt

    kw = {"tokenizer": tok, "base_info": PARENT_BASE, "data_info": {"hash": "h"}}
    with pytest.raises(KeyboardInterrupt):
        train(
            c,
            exs[:20],
            exs[20:],
            out,
            model=tiny_train_model(cfg),
            init_adapter=parent,
            progress=stop_at_2,
            **kw,
        )
    other = tmp_path / "other"  # a different adapter: resuming with it would mislabel the chain
    train(replace(c, max_steps=1), exs[:20], exs[20:], other, model=tiny_train_model(cfg), **kw)
    with pytest.raises(BadInput, match="not the adapter the run .* started from"):
        train(c, exs[:20], exs[20:], out, model=tiny_train_model(cfg), resume=True, init_adapter=other, **kw)
    res = train(
        c, exs[:20], exs[20:], out, model=tiny_train_model(cfg), resume=True, **kw
    )  # no --init-adapter
    man = res.manifest
    assert man["parent"]["adapter_sha256"] == read_manifest(parent)["adapter"]["sha256"]
    assert len(man["segments"]) == 2 and man["training"]["stream_start"] == 24
    assert [r["start_step"] for r in man["segments"][1]["runs"]] == [0, 2]


def test_layers_puts_lora_only_on_the_chosen_layers_and_leaves_lm_head_frozen(tiny, tmp_path):
    from dataclasses import replace

    from finetune.train import lora_layers, parse_layers
    from rag.errors import BadInput

    cfg, tok = tiny
    exs = word_examples(12)
    model = tiny_train_model(cfg)
    head_before = model.lm_head.weight.clone()
    layer0_before = {n: p.clone() for n, p in model.named_parameters() if ".layers.0." in n}
    res = train(
        replace(CFG, layers="1-1", max_steps=2, eval_every=0, eval_at_start=False),
        exs[:10],
        exs[10:],
        tmp_path / "ad",
        model=model,
        tokenizer=tok,
        data_info={"hash": "h"},
    )
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all(".layers.1." in n for n in lora) and lora_layers(model) == [1]
    assert not any("lm_head" in n for n in lora) and not model.lm_head.weight.requires_grad
    assert torch.equal(model.lm_head.weight, head_before)  # the untied lm_head: frozen
    for n, p in model.named_parameters():
        if ".layers.0." in n:
            assert torch.equal(p, layer0_before[n.replace(".base_layer", "")]), n
    assert res.manifest["hyperparameters"]["layers"] == "1-1" and res.manifest["training"]["lora_layers"] == [
        1
    ]
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    with pytest.raises(BadInput, match=r"--layers '1-5' .*\(2 layers\): pass N-M"):
        parse_layers("1-5", 2)
    with pytest.raises(BadInput, match="pass N-M"):
        parse_layers("top", 2)
