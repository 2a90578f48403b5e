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


def make_scripted(tok, text: str):
    """A tiny Llama that runs its real forward pass (and KV cache) but always emits `text` greedily."""
    import torch
    from transformers import LlamaForCausalLM

    class Scripted(LlamaForCausalLM):
        def forward(self, input_ids=None, cache=None, **kw):
            out = super().forward(input_ids=input_ids, cache=cache, **kw)
            self.calls += 1
            if cache is None:
                self.prompt_len = input_ids.shape[1]
            i = out.cache.get_seq_length() - self.prompt_len
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
