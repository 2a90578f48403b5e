"""Weight-only int8 (rag.quant) on a tiny bf16 Llama: close to the bf16 logits, every targeted Linear
replaced, int8 storage, greedy decoding through the KV cache, and the setting reaching the reader."""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path

import pytest
import torch
from fakes import SB50, hit, make_adapter, make_tokenizer, tiny_llama_config
from typer.testing import CliRunner

from rag import quant
from rag.config import ReaderConfig, load_config
from rag.errors import BadInput
from rag.quant import Int8Linear, quantize_model, quantize_weight
from rag.reader import LLMReader, make_reader

DECODER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture
def base(tok):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tok)).to(torch.bfloat16).eval()


def ids_of(tok, text: str = SB50 + " Mercury is liquid at room temperature.") -> torch.Tensor:
    return torch.tensor([tok(text)["input_ids"]])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


def linears(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Int8Linear))}


def test_quantize_weight_round_trips_within_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(48, 64) * torch.linspace(0.01, 3, 48)[:, None]  # rows of very different scale
    w[5] = 0  # an all-zero row must not divide by zero
    q, s = quantize_weight(w.bfloat16(), torch.bfloat16)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and q.shape == w.shape and s.shape == (48,)
    back = q.float() * s.float()[:, None]
    step = s.float()[:, None]
    assert ((back - w.bfloat16().float()).abs() <= step * 0.5 + 1e-6).all()
    assert q.abs().max() <= 127 and (q[5] == 0).all()
    assert (q.abs().amax(dim=1)[w.abs().amax(dim=1) > 0] >= 126).all()  # each row uses the whole range


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_matches_the_dequantized_weight_on_both_paths(bias):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48, bias=bias).to(torch.bfloat16)
    q = Int8Linear.from_linear(lin)
    ref_w = q.weight_int8.float() * q.scales.float()[:, None]
    for shape in [(1, 1, 64), (2, 3, 64), (1, 40, 64), (64,)]:  # decode (kernel), prefill (converted), 1-D
        x = torch.randn(shape).bfloat16()
        y = q(x)
        want = torch.nn.functional.linear(x.float(), ref_w, None if lin.bias is None else lin.bias.float())
        assert y.shape == (*shape[:-1], 48) and y.dtype == torch.bfloat16
        assert rel_err(y, want) < 0.01, shape
        assert rel_err(y, lin(x)) < 0.02, shape  # and close to the bf16 layer it replaced


def test_kernel_and_converted_paths_agree(monkeypatch):
    torch.manual_seed(0)
    q = Int8Linear.from_linear(torch.nn.Linear(64, 32).to(torch.bfloat16))
    x = torch.randn(quant.KERNEL_MAX_ROWS + 1, 64).bfloat16()
    calls = []
    real = quant._kernel()
    monkeypatch.setattr(quant, "_kernel", lambda: lambda *a: calls.append(a[0].shape) or real(*a))
    big = q(x)  # over the row limit: the converted weight
    small = q(x[: quant.KERNEL_MAX_ROWS])  # the int8 kernel
    assert calls == [(quant.KERNEL_MAX_ROWS, 64)]
    assert rel_err(small, big[: quant.KERNEL_MAX_ROWS]) < 0.01


def test_a_width_the_kernel_mishandles_takes_the_converted_weight(monkeypatch):
    """AVX512 bf16 gives NaN or a segfault for K = 24 (rag.quant's doc): that layer never calls it."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 16).to(torch.bfloat16)
    q = Int8Linear.from_linear(lin)
    monkeypatch.setattr(quant, "_kernel", lambda: pytest.fail("called the kernel with K = 24"))
    x = torch.randn(1, 24).bfloat16()
    assert not q.kernel_ok and rel_err(q(x), lin(x)) < 0.02


@pytest.mark.parametrize("mode", ["int8", "int8-head"])
def test_every_targeted_linear_is_replaced_and_logits_stay_close(base, tok, mode):
    ref = copy.deepcopy(base)
    info = quantize_model(base, mode)
    layers = linears(base)
    decoder = {n: m for n, m in layers.items() if n.rsplit(".", 1)[-1] in DECODER}
    assert len(decoder) == 2 * len(DECODER) and all(isinstance(m, Int8Linear) for m in decoder.values())
    head = base.lm_head
    assert isinstance(head, Int8Linear) == (mode == "int8-head")
    assert isinstance(base.get_output_embeddings(), type(head))
    left = [n for n, m in layers.items() if isinstance(m, torch.nn.Linear)]
    assert left == ([] if mode == "int8-head" else ["lm_head"])
    assert info["layers"] == len(decoder) + (mode == "int8-head")
    for m in decoder.values():
        assert m.weight_int8.dtype == torch.int8 and m.scales.dtype == torch.bfloat16
        assert not list(m.parameters())  # no bf16 weight kept beside the int8 one
    assert info["linear_bytes_after"] < 0.55 * info["linear_bytes_before"]
    with torch.no_grad():
        ids = ids_of(tok)
        want, got = ref(ids).logits, base(ids).logits
        fp32 = copy.deepcopy(ref).float()(ids).logits
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 0.03
    # the int8 error is of the order of bf16's own rounding (measured: 0.6% vs 0.4% against fp32)
    assert rel_err(got, fp32) < 3 * rel_err(want, fp32) + 0.005


def test_model_memory_shrinks(base):
    def size(m):
        return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])

    shapes = [m.weight.shape for m in base.modules() if isinstance(m, torch.nn.Linear)]
    before = size(base)
    info = quantize_model(base, "int8-head")
    assert info["linear_bytes_before"] == sum(2 * o * i for o, i in shapes)  # bf16 weights, no biases
    assert info["linear_bytes_after"] == sum(o * i + 2 * o for o, i in shapes)  # int8 + a bf16 scale per row
    assert size(base) == before - info["linear_bytes_before"] + info["linear_bytes_after"]


def test_cached_decoding_matches_a_full_forward(base, tok):
    """Greedy steps go through the kernel (one row) on the KV cache; a full forward over the same tokens
    goes through the converted weights: their logits agree, and decoding runs to its token bound."""
    reader = LLMReader(
        base, tok, {"name": "tiny"}, adapter=None, max_new_tokens=6, merge_inplace=True, quantize="int8"
    )
    reader.eos = set()  # a random model may pick the end token at once: run the whole bound
    prompt = reader.prompt_ids("Who won Super Bowl 50?", [hit("nfl.txt", SB50)])
    gen = []
    with torch.inference_mode():
        out = reader.model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        steps = [out.logits[0, -1]]
        for _ in range(5):
            gen.append(int(steps[-1].argmax()))
            out = reader._step(gen[-1], out)
            steps.append(out.logits[0, -1])
        full = reader.model(input_ids=torch.tensor([prompt + gen])).logits[0, len(prompt) - 1 :]
    assert rel_err(torch.stack(steps), full) < 0.02
    ans = reader.answer("Who won Super Bowl 50?", [hit("nfl.txt", SB50)])
    assert reader.last_new_tokens == 6 and isinstance(ans.text, str)
    assert ans.reader["quantize"] == "int8" and ans.reader["dtype"] == "bfloat16"


def test_adapter_is_merged_before_quantizing(tmp_path, base, tok):
    untouched = copy.deepcopy(base)
    path = make_adapter(tmp_path, copy.deepcopy(base), {"base": "tiny"})
    plain = LLMReader(copy.deepcopy(base), tok, {"name": "tiny"}, adapter=path, merge_inplace=True)
    q = LLMReader(base, tok, {"name": "tiny"}, adapter=path, merge_inplace=True, quantize="int8")
    merged = plain.model.model.layers[0].self_attn.q_proj.weight
    want, _ = quantize_weight(merged, torch.bfloat16)
    got = q.model.model.layers[0].self_attn.q_proj.weight_int8
    assert torch.equal(got, want)
    untuned, _ = quantize_weight(untouched.model.layers[0].self_attn.q_proj.weight, torch.bfloat16)
    assert not torch.equal(got, untuned)  # the adapter's change survived the rounding
    assert q.reader["quantize"] == "int8" and "quantize" not in plain.reader


def test_a_model_the_reader_does_not_own_is_copied(base, tok):
    r = LLMReader(base, tok, {"name": "tiny"}, adapter=None, quantize="int8")
    assert isinstance(base.model.layers[0].mlp.up_proj, torch.nn.Linear)  # the caller's model is intact
    assert isinstance(r.model.model.layers[0].mlp.up_proj, Int8Linear)


def test_float32_and_bad_modes_are_one_line_errors(base, tok):
    with pytest.raises(BadInput, match=r"quantize must be one of auto, none, int8, int8-head, got 'int4'"):
        LLMReader(base, tok, {"name": "tiny"}, adapter=None, quantize="int4")
    with pytest.raises(BadInput, match=r"needs a bfloat16 reader, this one computes in float32") as e:
        quantize_model(base.float(), "int8")
    assert "\n" not in str(e.value) and 'quantize = "none"' in str(e.value)


def test_an_unusable_kernel_is_one_clear_error(monkeypatch, base):
    def broken(*a):
        raise RuntimeError("_weight_int8pack_mm: not implemented for 'CPU'")

    quant._kernel.cache_clear()
    monkeypatch.setattr(torch.ops.aten, "_weight_int8pack_mm", broken)
    try:
        with pytest.raises(
            BadInput, match=r"cannot run aten._weight_int8pack_mm \(RuntimeError: .*\): set"
        ) as e:
            quantize_model(base, "int8")
        assert "\n" not in str(e.value)
        assert isinstance(base.model.layers[0].mlp.up_proj, torch.nn.Linear)  # nothing half-replaced
    finally:
        monkeypatch.undo()
        quant._kernel.cache_clear()
    assert quant._kernel() is torch.ops.aten._weight_int8pack_mm


# ---------------------------------------------------------------- the setting reaches the reader


@pytest.fixture
def tiny_folder(tmp_path, base, tok):
    folder = tmp_path / "tiny-lm"
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_make_reader_quantizes_a_private_copy(tiny_folder):
    r = make_reader("llm", model=str(tiny_folder), adapter="none", dtype="bfloat16", quantize="int8")
    assert isinstance(r.model.model.layers[1].self_attn.o_proj, Int8Linear)
    assert r.reader["quantize"] == "int8" and r.quantization["layers"] == 14
    plain = make_reader("llm", model=str(tiny_folder), adapter="none", dtype="bfloat16")
    assert isinstance(plain.model.model.layers[1].self_attn.o_proj, torch.nn.Linear)  # cache untouched
    assert "quantize" not in plain.reader


def mapped(path) -> bool:
    """Whether this process maps `path` (/proc/self/maps: Linux)."""
    real = str(path.resolve())
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(real) for line in f)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_quantizing_lets_go_of_the_weights_file(tiny_folder):
    """transformers maps model.safetensors and its tensors point into it; while one does (the embedding,
    the norms), the replaced bf16 weights' pages stay resident. After quantizing, none points there."""
    from transformers import AutoModelForCausalLM

    weights = tiny_folder / "model.safetensors"
    m = AutoModelForCausalLM.from_pretrained(tiny_folder, dtype=torch.bfloat16)
    assert mapped(weights)  # the premise: loading maps the file
    embed = m.get_input_embeddings().weight.detach().clone()
    quantize_model(m, "int8")
    gc.collect()
    assert not mapped(weights)
    assert torch.equal(m.get_input_embeddings().weight, embed)  # copied out, not changed
    assert quant.own_storage(m) == sum(
        p.numel() * p.element_size() for n, p in m.named_parameters() if "_proj" not in n
    )  # the survivors are the embedding, the norms and the bf16 lm_head, each copied once


def test_auto_quantizes_a_bf16_reader_only(tiny_folder):
    """ "auto" is int8 where the reader computes in bf16 and nothing in fp32, where torch's int8 kernel is
    slower than an fp32 matmul; what it became is what the reader reports."""
    bf16 = make_reader("llm", model=str(tiny_folder), adapter="none", dtype="bfloat16", quantize="auto")
    assert isinstance(bf16.model.model.layers[0].mlp.down_proj, Int8Linear)
    assert bf16.reader["quantize"] == quant.AUTO_MODE == "int8-head"
    fp32 = make_reader("llm", model=str(tiny_folder), adapter="none", dtype="float32", quantize="auto")
    assert isinstance(fp32.model.model.layers[0].mlp.down_proj, torch.nn.Linear)
    assert "quantize" not in fp32.reader and fp32.quantization["mode"] == "none"


def test_make_reader_refuses_before_loading(tmp_path):
    nowhere = str(tmp_path / "no-such-model")  # a load would fail differently
    with pytest.raises(BadInput, match="quantize must be one of auto, none, int8, int8-head"):
        make_reader("llm", model=nowhere, adapter="none", quantize="int4")
    with pytest.raises(BadInput, match="needs a bfloat16 reader"):
        make_reader("llm", model=nowhere, adapter="none", dtype="float32", quantize="int8")


def test_config_field_and_rag_toml(tmp_path):
    assert ReaderConfig().quantize == "none"
    with pytest.raises(BadInput, match=r"^quantize must be one of auto, none, int8, int8-head, got 'int4'$"):
        ReaderConfig(quantize="int4")
    toml = tmp_path / "rag.toml"
    toml.write_text('[reader]\nquantize = "int8"\n')
    assert load_config(toml).reader.quantize == "int8"
    toml.write_text('[reader]\nquantize = "fp8"\n')
    with pytest.raises(
        BadInput, match=r"rag.toml: \[reader\] quantize must be one of auto, none, int8, int8-h"
    ):
        load_config(toml)


def test_flag_and_rag_toml_reach_the_cli_reader(tmp_path, monkeypatch):
    from rag import cli

    got = []

    def factory(name, model, adapter, max_new_tokens, **settings):
        got.append(settings)
        raise BadInput("stop here")

    monkeypatch.setattr(cli, "_ask_reader", factory)
    monkeypatch.setattr(cli, "_ask_retriever", lambda index, mode, cfg: None)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert got[-1]["quantize"] == "none"
    runner.invoke(cli.app, ["ask", "Who won?", "--quantize", "int8-head"])
    assert got[-1]["quantize"] == "int8-head"
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "int8"\n')
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert got[-1]["quantize"] == "int8"
    runner.invoke(cli.app, ["ask", "Who won?", "--quantize", "none"])
    assert got[-1]["quantize"] == "none"


def test_a_bad_flag_value_is_one_line(monkeypatch):
    from rag import cli

    monkeypatch.setattr(cli, "_ask_retriever", lambda index, mode, cfg: None)
    r = CliRunner().invoke(cli.app, ["ask", "Who won?", "--quantize", "int4"])
    assert r.exit_code == 1
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "none, int8, int8-head" in lines[0] and "int4" in lines[0]


def test_eval_system_hash_and_meta_follow_rag_toml(tmp_path, monkeypatch):
    from eval.systems import SystemSpec, system_hash, system_meta

    monkeypatch.chdir(tmp_path)
    spec = SystemSpec(name="tiny", reader="llm", model=str(tmp_path))
    plain_hash, plain_meta = system_hash(spec, 5), system_meta(spec)
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "int8"\n')
    assert system_hash(spec, 5) != plain_hash
    int8_hash = system_hash(spec, 5)
    assert int8_hash != plain_hash and system_meta(spec)["quantization"].endswith("; served int8")
    assert "served" not in str(plain_meta["quantization"])
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "int8-head"\n')
    assert system_hash(spec, 5) not in (plain_hash, int8_hash)
    extractive = SystemSpec(name="extractive", reader="extractive")
    assert system_meta(extractive)["quantization"] is None
    (tmp_path / "rag.toml").write_text("")
    assert system_hash(spec, 5) == plain_hash
    assert json.dumps(system_meta(spec)) == json.dumps(plain_meta)


def test_auto_in_rag_toml_hashes_as_what_it_resolves_to(tmp_path, monkeypatch):
    """A system's hash names the weights that really answered: "auto" on a bf16 CPU is int8-head's
    system, on an fp32 one the plain system (RAG_DTYPE stands in for the CPU)."""
    from eval.systems import SystemSpec, quantize_of, system_hash

    monkeypatch.chdir(tmp_path)
    spec = SystemSpec(name="tiny", reader="llm", model=str(tmp_path))
    monkeypatch.setenv("RAG_DTYPE", "bfloat16")
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "int8-head"\n')
    head_hash = system_hash(spec, 5)
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "none"\n')
    plain_hash = system_hash(spec, 5)
    (tmp_path / "rag.toml").write_text('[reader]\nquantize = "auto"\n')
    assert quantize_of(spec) == "int8-head" and system_hash(spec, 5) == head_hash != plain_hash
    monkeypatch.setenv("RAG_DTYPE", "float32")
    assert quantize_of(spec) == "none" and system_hash(spec, 5) == plain_hash
    monkeypatch.setenv(
        "RAG_DTYPE", "fp16"
    )  # a bad value: the one-line error make_reader gives, not a ValueError
    with pytest.raises(BadInput, match=r"not 'fp16': set \[reader\] dtype in rag.toml or RAG_DTYPE"):
        quantize_of(spec)
