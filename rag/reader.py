"""Readers: turn a question and retrieved passages into a short answer with checked citations.

Two readers behind one protocol (rag.types.Reader), chosen by name through `make_reader`:

    llm         a causal LM from the model store (bf16, loaded once per process), optionally with a LoRA
                adapter merged into a copy of its weights; greedy decoding with a KV cache, streamed.
    extractive  the plain-retrieval baseline, no LLM: the sentence of the top passage that best matches
                the question (IDF-weighted word overlap), citing [1].

Both build their final Answer the same way (`finish`): parse the raw output with rag.prompt (citations
to passages that were not given are dropped there), attach each citation's source and offsets from the
hits, and check support: an answer whose content words are absent from the passages it cites is flagged
`supported=False`. What "supported" means (content words, plural folding, the share found) is
rag.text.support, the same function the eval's grounding column uses.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assets import adapters
from rag.errors import BadInput
from rag.prompt import (
    ABSTAIN,
    Passage,
    find_stop,
    format_passage,
    held_back,
    parse_output,
    render_prompt,
    reserved_tokens,
    shown_text,
)
from rag.span import SpanGrammar
from rag.text import content_words, missing_names, stem, support, words
from rag.types import Answer, Citation, Hit

log = logging.getLogger(__name__)

READERS = ("llm", "extractive")

# An answer is supported when at least this share of its content words occur in its cited passages
# (1-4 content words: all of them; 5: one may be missing).
SUPPORT_THRESHOLD = 0.8
# A single citation is supported when its passage holds at least this share of the content words.
CITATION_THRESHOLD = 0.5
# Span-faithful decoding tries the model's top choices in this order until one keeps the answer a copy.
SPAN_CANDIDATES = 40

# ---------------------------------------------------------------- support


def check_citations(answer: str, cited: list[int], hits: list[Hit]) -> tuple[list[Citation], bool]:
    """Citations (1-based passage numbers, already valid) with per-citation support, and overall support.

    Overall: the union of the cited passages holds at least SUPPORT_THRESHOLD of the answer's content
    words; an answer that cites nothing is not supported.
    """
    cites = []
    for n in cited:
        c = hits[n - 1].chunk
        ok = support(answer, c.text) >= CITATION_THRESHOLD
        cites.append(Citation(n=n, source=c.doc, start=c.start, end=c.end, supported=ok))
    if not cites:
        return cites, False
    union = " ".join(hits[n - 1].chunk.text for n in cited)
    return cites, support(answer, union) >= SUPPORT_THRESHOLD


def finish(raw: str, hits: list[Hit], reader: dict[str, Any]) -> Answer:
    """The final Answer from a reader's raw output: parsed, citations resolved to sources and checked."""
    parsed = parse_output(raw.lstrip(), n_passages=len(hits))
    if parsed.dropped:
        log.info("dropped citations to passages that were not given: %s", parsed.dropped)
    if parsed.abstained:
        return Answer(
            text=ABSTAIN, abstained=True, citations=[], reader=dict(reader), raw=raw, supported=True
        )
    cites, ok = check_citations(parsed.text, parsed.citations, hits)
    return Answer(
        text=parsed.text, abstained=False, citations=cites, reader=dict(reader), raw=raw, supported=ok
    )


def passages(hits: list[Hit]) -> list[Passage]:
    return [Passage(source=h.chunk.doc, text=h.chunk.text) for h in hits]


# ---------------------------------------------------------------- stopping


def _stop_criteria_class():
    from transformers import StoppingCriteria

    class AnswerStop(StoppingCriteria):
        """For transformers' generate(): stop when the decoded new text reaches the end of an answer."""

        def __init__(self, tokenizer, prompt_len: int):
            self.tokenizer, self.prompt_len = tokenizer, prompt_len

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            done = [
                find_stop(self.tokenizer.decode(row[self.prompt_len :], skip_special_tokens=True).lstrip())
                is not None
                for row in input_ids
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return AnswerStop


def answer_stop(tokenizer, prompt_len: int):
    """A transformers StoppingCriteria with the same rule as the reader's own loop (find_stop)."""
    return _stop_criteria_class()(tokenizer, prompt_len)


# ---------------------------------------------------------------- adapters


def _info(info: Any, key: str) -> Any:
    return info.get(key) if isinstance(info, dict) else getattr(info, key, None)


# LoRA settings the direct merge below handles; any other adapter goes through peft.
_SIMPLE_LORA = {"peft_type": "LORA", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False}


def _merge_lora_direct(model, path: Path) -> bool:
    """Add B @ A * alpha/r into each target Linear of `model` in place, reading the adapter's own files.

    peft's merge gives the same weights, but importing peft, wrapping a deep copy and merging cost seconds
    of every `rag ask` start. Returns False (model untouched) for any adapter outside the plain-LoRA case:
    DoRA, rsLoRA, per-module rank or alpha, extra trained modules, non-Linear targets.
    """
    import torch
    from safetensors import safe_open

    cfg_path, weights = path / "adapter_config.json", path / "adapter_model.safetensors"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return False
    if not weights.is_file() or any(cfg.get(k, v) != v for k, v in _SIMPLE_LORA.items()):
        return False
    if (
        cfg.get("rank_pattern")
        or cfg.get("alpha_pattern")
        or cfg.get("modules_to_save")
        or cfg.get("lora_bias")
    ):
        return False
    modules = dict(model.named_modules())
    pairs: dict[str, dict[str, Any]] = {}
    try:
        scaling = float(cfg["lora_alpha"]) / float(cfg["r"])
        with safe_open(str(weights), "pt") as f:
            for key in f.keys():
                m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
                if m is None:
                    return False  # some other tensor (an embedding LoRA, a saved module): let peft handle it
                pairs.setdefault(m.group(1), {})[m.group(2)] = f.get_tensor(key)
    except Exception:  # unreadable or odd files: peft's loader reports them as a clear BadInput
        return False
    deltas = []
    for name, ab in pairs.items():
        layer = modules.get(name)
        if not isinstance(layer, torch.nn.Linear) or set(ab) != {"A", "B"}:
            return False
        a, b = ab["A"].float(), ab["B"].float()
        if (b.shape[0], a.shape[1]) != tuple(layer.weight.shape) or b.shape[1] != a.shape[0]:
            return False
        deltas.append((layer, a, b))
    with torch.no_grad():
        for layer, a, b in deltas:
            layer.weight += (b @ a) * scaling  # summed in fp32, rounded once to the weight dtype (as peft)
    return True


def _load_error(e: Exception, path: Path, model_name: str | None) -> BadInput:
    """One line for a failed peft load. A wrong base shows up as a size mismatch that torch reports with
    one line per LoRA tensor (337 lines for the Qwen adapter), so only the names are kept."""
    if "size mismatch" in str(e):
        base, have = adapters.base_of(path), model_name or "the loaded model"
        if base and base != have:
            return BadInput(
                f"adapter {path} was trained for base {base}, not {have}: "
                f"pass --model {base} or --adapter none"
            )
        return BadInput(
            f"adapter {path} does not fit {have} (its weight shapes belong to another model): "
            "retrain it with `rag finetune` for this model or pass --adapter none"
        )
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return BadInput(
        f"could not load the LoRA adapter at {path} ({type(e).__name__}: {first}): "
        "retrain it for this model or pass --adapter none"
    )


def apply_adapter(model, path: Path, inplace: bool = False, model_name: str | None = None):
    """`model` with the LoRA adapter at `path` merged into its weights.

    Without `inplace` a copy is merged, which keeps a per-process cached base model untouched (a base
    reader may share the process). Merging makes the tuned model exactly as fast as the base one.
    `model_name` only names the model in an error.
    """
    target = model if inplace else copy.deepcopy(model)
    if _merge_lora_direct(target, path):
        target.eval()
        return target
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        peft_model = PeftModel.from_pretrained(target, str(path))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise _load_error(e, path, model_name) from e
    merged = peft_model.merge_and_unload()
    merged.eval()
    return merged


# ---------------------------------------------------------------- LLM reader


def _quantize(model, mode: str, owned: bool) -> dict:
    """rag.quant's summary plus "model": `model` with int8 Linear layers for `mode` (after any adapter was
    merged, so the int8 weights carry it). A model that is not `owned` (the per-process cached base) is
    copied first."""
    from rag.quant import quantize_model, resolve_mode

    if (mode := resolve_mode(mode, next(model.parameters()).dtype)) == "none":
        return {"mode": "none", "layers": 0, "model": model}
    if not owned:
        model = copy.deepcopy(model)
    return {**quantize_model(model, mode), "model": model}


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    gc = getattr(model, "generation_config", None)
    for v in (getattr(gc, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(i) for i in v)
    return ids


# Fewer shared opening tokens than this are prefilled with the rest (a cached copy would not pay)
MIN_SHARED_PREFIX = 16
# Tokens dropped from the end of the measured shared opening: a BPE merge across its boundary with the
# first passage's name could differ for other text (each prompt is checked against the ids anyway)
_PREFIX_MARGIN = 2


def shared_prompt_prefix(tokenizer) -> list[int]:
    """Token ids that open every rendered prompt: the common start of two prompts that differ in every
    question, passage and name, less a margin of _PREFIX_MARGIN tokens."""
    a = encode_prompt(tokenizer, render_prompt(tokenizer, "Who won?", [Passage("a.txt", "The Broncos won.")]))
    b = encode_prompt(tokenizer, render_prompt(tokenizer, "What year?", [Passage("Z.md", "1999: rain")]))
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[: max(0, n - _PREFIX_MARGIN)]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a rendered prompt; a chat template already holds its special tokens."""
    add = not getattr(tokenizer, "chat_template", None)
    return tokenizer(prompt, add_special_tokens=add)["input_ids"]


class LLMReader:
    """A causal LM reader: greedy, KV-cached, stops at the end of the answer, streams text pieces."""

    name = "llm"

    def __init__(
        self,
        model,
        tokenizer,
        info: Any,
        adapter: str | Path | None = None,
        max_new_tokens: int = 32,
        merge_inplace: bool = False,
        max_prompt_tokens: int | None = None,
        span: bool = False,
        abstain_threshold: float = 0.0,
        quantize: str = "none",
        decline_missing_names: bool = False,
        min_rerank_score: float = -math.inf,
    ):
        self.tokenizer = tokenizer
        self.decline_missing_names = decline_missing_names
        self.min_rerank_score = min_rerank_score
        self.span, self.abstain_threshold = span, abstain_threshold
        self.last_decision: dict = {}
        self.info = info
        self.max_new_tokens = max_new_tokens
        model_name = str(_info(info, "name") or "model")
        self.adapter = adapters.resolve_adapter(adapter, model_name)
        if self.adapter is not None:
            adapters.check_base(adapters.read_manifest(self.adapter), info, self.adapter)
            model = apply_adapter(model, self.adapter, inplace=merge_inplace, model_name=model_name)
        quant = _quantize(model, quantize, owned=merge_inplace or self.adapter is not None)
        model = quant.pop("model")
        self.model = model
        self.model.eval()
        self.eos = _eos_ids(model, tokenizer)
        # The prompt budget: the model's context, or less. Qwen's 32k positions would take minutes of
        # prefill on 2 cores, and the adapters were trained on prompts of at most 1,536 tokens.
        self.max_positions = getattr(model.config, "max_position_embeddings", None) or 4096
        if max_prompt_tokens:
            self.max_positions = min(self.max_positions, max_prompt_tokens + max_new_tokens)
        self.last_passages: int | None = None  # passages the last prompt really held (the rest were dropped)
        # the compute dtype is part of what answered: it is chosen per CPU (rag.hardware) and changes speed
        self.reader = {
            "model": model_name,
            "adapter": str(self.adapter) if self.adapter else None,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "decoding": "span" if span else "free",
        }
        if quant["mode"] != "none":  # only then, so a plain reader describes itself as before
            self.reader["quantize"] = quant["mode"]
        if decline_missing_names:  # likewise
            self.reader["names"] = "required"
        if math.isfinite(min_rerank_score):  # likewise
            self.reader["min_rerank_score"] = min_rerank_score
        self.quantization = quant  # layers replaced, Linear bytes before/after (benchmarks, logs)
        self.last_new_tokens = 0  # tokens generated by the last call (for benchmarks)
        self._lock = threading.Lock()
        self._prefix: tuple[list[int], Any] | None = None  # the opening every prompt shares, and its KV cache
        self.cache_opening = True  # False: every prompt is prefilled whole (benchmarks/bench_ask.py compares)

    def prompt_ids(self, question: str, hits: list[Hit]) -> list[int]:
        """Prompt token ids; trailing passages are dropped if the prompt would not fit the context.

        Re-rendering the whole prompt once per dropped passage was quadratic: `-k 100000` re-tokenized a
        380k-token prompt for every passage (4 GB RSS, no answer). So each passage line is tokenized once,
        in order, until the budget is spent; a few context-sized renders then settle the exact count
        (a line tokenized alone can differ by a token from the same line inside the prompt).
        """
        tok, ps = self.tokenizer, passages(hits)
        budget = self.max_positions - self.max_new_tokens
        rendered: dict[int, list[int]] = {}

        def fits(n: int) -> bool:
            if n not in rendered:
                rendered[n] = encode_prompt(tok, render_prompt(tok, question, ps[:n]))
            return len(rendered[n]) <= budget

        # The usual case (k=5, ~950 tokens): the whole prompt fits, one tokenization. Only tried when the
        # text is small enough that rendering it all cannot be the 380k-token render this avoids.
        if sum(len(p.text.encode()) for p in ps) <= 4 * budget and fits(len(ps)):
            self.last_passages = len(ps)
            return rendered[len(ps)]
        # lo fits (or is 1: a single passage is always given, as before), hi does not or is past the end.
        guess = self._passages_that_fit(question, ps, budget)
        if fits(guess):
            lo, hi, step = guess, len(ps) + 1, 1
            while lo + step < hi and fits(lo + step):  # the guess may be a little low
                lo, step = lo + step, step * 2
            hi = min(hi, lo + step)
        else:
            lo, hi = 1, guess
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        fits(lo)  # renders lo when it was only assumed to fit
        self.last_passages = lo
        if lo < len(ps):
            log.warning(
                "only %d of %d passages fit the reader's %d-token context: the rest are dropped",
                lo,
                len(ps),
                self.max_positions,
            )
        return rendered[lo]

    def _passages_that_fit(self, question: str, ps: list[Passage], budget: int) -> int:
        """How many leading passages fit `budget` tokens, estimated from each line tokenized once (>= 1)."""
        tok = self.tokenizer
        used = len(encode_prompt(tok, render_prompt(tok, question, [])))
        reserved = reserved_tokens(tok)
        for i, p in enumerate(ps, 1):
            used += len(tok(format_passage(i, p, reserved) + "\n", add_special_tokens=False)["input_ids"])
            if used > budget:
                return max(1, i - 1)
        return len(ps)

    def stream(self, question: str, hits: list[Hit]) -> Iterator[str]:
        """Answer text pieces as they are generated; they join to the raw answer (citations included).

        Two rules decline before anything is generated: the best reranked passage scores below
        `min_rerank_score` (nothing retrieved is about the question), or the question names what no
        passage names (`decline_missing_names`); `last_decision` says which."""
        if not hits:
            self.last_new_tokens = 0
            self.last_passages = 0
            yield ABSTAIN
            return
        with self._lock:  # one KV cache per model; concurrent calls would interleave
            prompt = self.prompt_ids(question, hits)
            reserved = reserved_tokens(self.tokenizer)
            best = best_rerank_score(hits[: self.last_passages])
            if best is not None and best < self.min_rerank_score:  # no passage is about the question
                self.last_new_tokens = 0
                self.last_decision = {
                    "rerank_score": round(best, 4),
                    "min_rerank_score": self.min_rerank_score,
                }
                yield ABSTAIN
                return
            shown = [shown_text(p, reserved) for p in passages(hits[: self.last_passages])]
            missing = missing_names(question, shown) if self.decline_missing_names else []
            if missing:  # a name the question asks about is in no passage: nothing here can answer it
                self.last_new_tokens = 0
                self.last_decision = {"missing_names": missing}
                yield ABSTAIN
                return
            if self.span:
                yield self._generate_span(prompt, shown)
            else:
                self.last_decision = {}
                yield from self._generate(prompt)

    @property
    def abstain_ids(self) -> list[int]:
        """The abstention sentence's token ids, tokenized once per reader (span decoding needs them twice
        per answer)."""
        if getattr(self, "_abstain_ids", None) is None:
            self._abstain_ids = self.tokenizer(ABSTAIN, add_special_tokens=False)["input_ids"]
        return self._abstain_ids

    def _abstain_logprob(self, first, out, prompt_len: int) -> tuple[float, bool]:
        """(log P(the abstention sentence | prompt), whether greedy decoding would write that sentence),
        from the prefill's logits and one forward pass over the sentence on the prompt's KV cache, which is
        then cut back to the prompt (no second prefill)."""
        import torch

        ids = self.abstain_ids
        lp = float(first[ids[0]])
        greedy = int(first.argmax()) == ids[0]
        if len(ids) > 1:
            more = self.model(input_ids=torch.tensor([ids[:-1]]), cache=out.cache, use_cache=True)
            rest = more.logits[0].float().log_softmax(-1)
            want = torch.tensor(ids[1:])
            lp += float(rest[torch.arange(len(ids) - 1), want].sum())
            greedy = greedy and bool((rest.argmax(-1) == want).all())
            out.cache.crop(-(len(ids) - 1))  # transformers 5: a negative count of tokens to drop
            assert out.cache.get_seq_length() == prompt_len
        return lp, greedy

    def _generate_span(self, prompt: list[int], shown: list[str]) -> str:
        """Greedy decoding held to rag.span's grammar (an answer copied from a passage, then the citation of
        a passage holding it), then the choice between that answer and abstaining: decline when
        log P(abstention sentence) - log P(span) > threshold.

        The answer comes out whole, after the choice: a streamed answer could not be taken back."""
        import torch

        tok = self.tokenizer
        grammar = SpanGrammar(shown, allow_abstain=False)
        # the abstention's first word ("The") is the model's way into declining, not into a span: skipped as
        # the first token, so the span is the best *answer* and the threshold makes the choice
        abstain_first = self.abstain_ids[0]
        gen: list[int] = []
        # log P of each chosen token, split at the citation: the span's tokens are the model's answer, the
        # " [n]" after them is mostly forced by the grammar and says nothing about whether to answer
        span_lps: list[float] = []
        cite_lp, text = 0.0, ""
        self.last_new_tokens = 0
        with torch.inference_mode():
            out = self._prefill(prompt)
            logp = out.logits[0, -1].float().log_softmax(-1)
            abstain_lp, model_declines = self._abstain_logprob(logp, out, len(prompt))
            while len(gen) < self.max_new_tokens:
                chosen = None
                for cand in torch.topk(logp, min(SPAN_CANDIDATES, logp.numel())).indices.tolist():
                    if cand == abstain_first and not gen:
                        continue
                    if cand in self.eos:
                        if text.strip():
                            break  # the model ends here: the span gets its citation below
                        continue
                    t = tok.decode(gen + [cand], skip_special_tokens=True).lstrip()
                    if grammar.allows(t.rstrip("\ufffd")):
                        chosen, text = cand, t
                        break
                if chosen is None:
                    break
                gen.append(chosen)
                if "[" in text:
                    cite_lp += float(logp[chosen])
                else:
                    span_lps.append(float(logp[chosen]))
                self.last_new_tokens = len(gen)
                if grammar.closed(text):
                    break
                out = self._step(chosen, out)
                logp = out.logits[0, -1].float().log_softmax(-1)
        span = grammar.complete(text.rstrip("\ufffd"))
        answer_lp = sum(span_lps)
        # Decline when the sentence beats the best span (its citation not counted) by more than the
        # threshold. Whether the model's own greedy choice is the sentence is recorded, not used: declining
        # whenever it is cost more wrong declines for the same right ones on the validation split
        # (benchmarks/bench_abstain.py).
        abstain = span is None or abstain_lp - answer_lp > self.abstain_threshold
        self.last_decision = {
            "abstain_logprob": abstain_lp,
            "answer_logprob": answer_lp if span is not None else None,
            "citation_logprob": cite_lp if span is not None else None,
            "span_token_logprobs": [round(x, 4) for x in span_lps],
            "model_declines": model_declines,
            "span": span,
            "threshold": self.abstain_threshold,
        }
        return ABSTAIN if abstain else span

    def _generate(self, prompt: list[int]) -> Iterator[str]:
        import torch

        tok = self.tokenizer
        gen: list[int] = []
        shown = 0  # characters of the (left-stripped) text already yielded
        self.last_new_tokens = 0
        with torch.inference_mode():
            out = self._prefill(prompt)
            while True:
                nxt = int(out.logits[0, -1].argmax())
                if nxt in self.eos:
                    break
                gen.append(nxt)
                self.last_new_tokens = len(gen)
                text = tok.decode(gen, skip_special_tokens=True).lstrip()
                if not text.endswith("\ufffd"):  # else half of a multi-byte character: wait for the rest
                    cut = find_stop(text)
                    if cut is not None:
                        if cut > shown:
                            yield text[shown:cut]
                        return
                    safe = len(text) - held_back(text)
                    if safe > shown:
                        yield text[shown:safe]
                        shown = safe
                if len(gen) >= self.max_new_tokens:
                    break
                out = self._step(nxt, out)
        text = tok.decode(gen, skip_special_tokens=True).lstrip().rstrip("\ufffd")
        if len(text) > shown:
            yield text[shown:]

    def _prefill(self, prompt: list[int]):
        """The prompt's forward pass, up to its last position's logits and its KV cache.

        Every prompt opens with the same tokens (the chat header and the instruction: 72 of Qwen's ~590
        for k=3), so their KV cache is computed once per reader and a copy extends it with the rest. A
        prompt that does not start with exactly those tokens is run whole: same tokens at the same
        positions give the same keys and values, so the answer is the one a full prefill gives (up to
        float rounding in the shorter matmuls)."""
        import torch

        ids, cache = self._shared_opening() if self.cache_opening else ([], None)
        n = len(ids)
        if not n or len(prompt) <= n or prompt[:n] != ids:
            return self.model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        own = copy.deepcopy(cache)  # the forward pass appends to the cache it is given
        return self.model(input_ids=torch.tensor([prompt[n:]]), cache=own, use_cache=True, logits_to_keep=1)

    def _shared_opening(self) -> tuple[list[int], Any]:
        """(token ids every prompt starts with, their KV cache), computed on first use; ([], None) when the
        prompts share too little for a cache to pay."""
        if self._prefix is None:
            import torch

            ids = shared_prompt_prefix(self.tokenizer)
            cache = None
            if len(ids) >= MIN_SHARED_PREFIX:
                with torch.inference_mode():
                    cache = self.model(input_ids=torch.tensor([ids]), use_cache=True, logits_to_keep=1).cache
            self._prefix = (ids, cache) if cache is not None else ([], None)
        return self._prefix

    def _step(self, token: int, out):
        import torch

        return self.model(input_ids=torch.tensor([[token]]), cache=out.cache, use_cache=True)

    def finish(self, question: str, hits: list[Hit], raw: str) -> Answer:
        ans = finish(raw, hits, self.reader)
        ans.decision = dict(self.last_decision)
        return ans

    def answer(self, question: str, hits: list[Hit]) -> Answer:
        t0 = time.perf_counter()
        raw = "".join(self.stream(question, hits))
        ans = self.finish(question, hits[: self.last_passages or len(hits)], raw)  # only the passages it read
        ans.timings = {"generate_s": time.perf_counter() - t0, "new_tokens": self.last_new_tokens}
        return ans


# ---------------------------------------------------------------- extractive baseline

_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences in `text`.

    >>> t = "It rained. The Broncos won 24-10! Fans cheered."
    >>> [t[a:b] for a, b in split_sentences(t)]
    ['It rained.', 'The Broncos won 24-10!', 'Fans cheered.']
    """
    spans, start = [], 0
    for m in _SENT_END.finditer(text):
        spans.append((start, m.start() + len(m.group(0).rstrip())))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def best_sentence(question: str, passage: str, corpus: list[str]) -> tuple[str, float]:
    """The passage sentence with the largest IDF-weighted overlap with the question's content words.

    IDF comes from `corpus` (the retrieved passages), so words common to all of them count little.
    Ties go to the shorter sentence, then the earlier one.

    >>> best_sentence("Who won Super Bowl 50?", "It rained. The Broncos won Super Bowl 50.", ["x"])
    ('The Broncos won Super Bowl 50.', 4.0)
    """
    q = {stem(w) for w in content_words(question)}
    docs = [{stem(w) for w in words(d)} for d in corpus]
    n = len(docs)

    def idf(w: str) -> float:
        df = sum(w in d for d in docs)
        return math.log(1 + (n + 1) / (df + 1)) / math.log(1 + (n + 1))  # 1.0 for a word in no passage

    best, best_key = "", (0.0, 0)
    for a, b in split_sentences(passage):
        sent = passage[a:b]
        have = {stem(w) for w in words(sent)}
        score = round(sum(idf(w) for w in q if w in have), 6)
        key = (score, -len(sent))
        if score > 0 and (not best or key > best_key):
            best, best_key = sent, key
    return best, best_key[0]


class ExtractiveReader:
    """Plain-retrieval baseline: the best-matching sentence of the top passage, citing [1]."""

    name = "extractive"
    last_new_tokens = None  # no tokens: it generates nothing
    last_passages = None  # it reads every passage given

    def __init__(self) -> None:
        self.reader = {"model": "extractive", "adapter": None}

    def _raw(self, question: str, hits: list[Hit]) -> str:
        if not hits:
            return ABSTAIN
        sent, _ = best_sentence(question, hits[0].chunk.text, [h.chunk.text for h in hits])
        return sent if sent else ABSTAIN

    def stream(self, question: str, hits: list[Hit]) -> Iterator[str]:
        yield self._raw(question, hits)

    def finish(self, question: str, hits: list[Hit], raw: str) -> Answer:
        if not hits or raw == ABSTAIN:
            return Answer(text=ABSTAIN, abstained=True, reader=dict(self.reader), raw=raw)
        # The sentence is the answer verbatim: it is not parsed (it may contain "[3]" or "Answer:").
        cites, ok = check_citations(raw, [1], hits)
        return Answer(
            text=raw, abstained=False, citations=cites, reader=dict(self.reader), raw=raw, supported=ok
        )

    def answer(self, question: str, hits: list[Hit]) -> Answer:
        t0 = time.perf_counter()
        ans = self.finish(question, hits, self._raw(question, hits))
        ans.timings = {"generate_s": time.perf_counter() - t0}
        return ans


# ---------------------------------------------------------------- factory


def best_rerank_score(hits: list[Hit]) -> float | None:
    """The highest cross-encoder score among reranked `hits`; None when none was reranked.

    >>> from rag.types import Chunk
    >>> best_rerank_score([Hit(Chunk("a:0", "a", "x", 0, 1), 0.1, -4.0), Hit(Chunk("b:0", "b", "y", 0, 1), 0.2, 2.5)])
    2.5
    >>> best_rerank_score([Hit(Chunk("a:0", "a", "x", 0, 1), 0.1)]) is None
    True
    """
    scores = [h.rerank_score for h in hits if h.rerank_score is not None]
    return max(scores) if scores else None


def reader_dtype(dtype: str | None = None):
    """The torch dtype an LLM reader computes in (rag.hardware: by the CPU unless `dtype` or RAG_DTYPE
    names one); BadInput naming the fix for a value that is none of them."""
    from rag.hardware import torch_dtype

    try:
        return torch_dtype(dtype)
    except ValueError as e:
        raise BadInput(f"{e}: set [reader] dtype in rag.toml or RAG_DTYPE to one of them") from e


def make_reader(
    name: str = "llm",
    model: str | Path = "qwen2.5-0.5b",
    adapter: str | Path | None = "default",
    max_new_tokens: int = 32,
    say=None,
    dtype: str | None = None,
    max_prompt_tokens: int | None = 4096,
    span: bool = False,
    abstain_threshold: float = 0.0,
    quantize: str = "none",
    decline_missing_names: bool = False,
    min_rerank_score: float = -math.inf,
):
    """A reader by name: 'llm' (model preset or folder, adapter 'default'|'none'|folder) or 'extractive'.

    `max_prompt_tokens` caps the prompt (passages that do not fit are dropped, in rank order).
    `dtype` is the compute dtype: None/'auto' chooses by CPU (rag.hardware), or 'bfloat16' / 'float32'.
    `quantize` ("auto" | "none" | "int8" | "int8-head", rag.quant) stores the merged model's Linear weights
    in int8; "auto" does so for a bf16 reader only.
    `decline_missing_names` and `min_rerank_score` (finite: on) decline without generating (see LLMReader.stream).
    `say` gets a line when the model has to be pulled first.
    """
    if name == "extractive":
        return ExtractiveReader()
    if name != "llm":
        raise BadInput(f"unknown reader {name!r}: choose one of {', '.join(READERS)}")
    from assets.models import load_causal_lm
    from rag.quant import check_dtype, resolve_mode

    dt = reader_dtype(dtype)
    quantize = resolve_mode(quantize, dt)  # before a model is loaded: a bad mode costs no load
    check_dtype(quantize, dt)

    if adapter is None or str(adapter).lower() == "none":
        private = quantize != "none"  # quantized in place: a private copy, the cached base stays intact
        m, tok, info = load_causal_lm(model, dtype=dt, say=say, cache=not private)
        return LLMReader(
            m,
            tok,
            info,
            adapter=None,
            max_new_tokens=max_new_tokens,
            merge_inplace=private,
            max_prompt_tokens=max_prompt_tokens,
            span=span,
            abstain_threshold=abstain_threshold,
            quantize=quantize,
            decline_missing_names=decline_missing_names,
            min_rerank_score=min_rerank_score,
        )
    # A private copy of the base, so the adapter merges in place: no deep copy of the cached one.
    m, tok, info = load_causal_lm(model, dtype=dt, say=say, cache=False)
    return LLMReader(
        m,
        tok,
        info,
        adapter=adapter,
        max_new_tokens=max_new_tokens,
        merge_inplace=True,
        max_prompt_tokens=max_prompt_tokens,
        span=span,
        abstain_threshold=abstain_threshold,
        quantize=quantize,
        decline_missing_names=decline_missing_names,
        min_rerank_score=min_rerank_score,
    )
