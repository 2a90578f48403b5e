"""Judged metrics: ragas faithfulness and answer relevancy with a local judge LLM and local embeddings.

ragas 0.4.3's own local paths fail offline (see NOTES: HuggingFacePipeline has no async generation and
the default RunConfig retries for minutes), so the judge is a small `BaseRagasLLM` subclass that calls a
plain `generate(prompt) -> str` function (greedy, chat template), and the embeddings a small
`BaseRagasEmbeddings` over a local encoder. Each sample is scored on its own so a judge output that
ragas cannot parse is counted (as a failure, with its reason) instead of being averaged away as NaN.

Nothing here reaches the network: RAGAS_DO_NOT_TRACK is forced on when a Judge is built, before ragas
is first imported (importing this module changes nothing); models come from the local model store.
(ragas still writes an anonymous id file under the user data dir when it builds its analytics events;
it sends nothing.)

For an eval run, `judge_predictions` scores a seeded subsample of answerable questions (`judge_ids`,
the same for every system) and saves the scores in the run folder, so a rerun judges only new answers.

    >>> judge = Judge(generate=lambda p: '{"statements": []}', embed=lambda ts: [[1.0] for _ in ts])
    >>> judge.score(JudgeSample("Who won?", "Denver", ["Denver won."])).faithfulness_error
    'nan'
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from eval.runfiles import Appender, read_jsonl, safe_name, short_hash
from rag.errors import ModelUnavailable

if TYPE_CHECKING:
    from eval.run import EvalConfig
    from eval.systems import SystemSpec
    from eval.testset import Question
    from rag.types import Hit

log = logging.getLogger(__name__)

# Strongest first: the default judge is the first of these the model store knows (pulled ones preferred).
JUDGE_PREFERENCE = ("qwen2.5-1.5b", "qwen2.5-0.5b", "gemma3-270m", "smollm2-135m")
EMBEDDER_PRESET = "minilm"


@dataclass(frozen=True)
class JudgeSample:
    question: str
    answer: str  # the system's answer text (abstentions are not judged)
    contexts: list[str]  # the passages the reader was given


@dataclass
class JudgeScore:
    faithfulness: float | None  # 0..1, None when the judge failed
    relevancy: float | None  # 0..1, None when the judge failed
    faithfulness_error: str | None = None  # "nan" (no statements / unparsable) or the exception class
    relevancy_error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "faithfulness": self.faithfulness,
            "relevancy": self.relevancy,
            "faithfulness_error": self.faithfulness_error,
            "relevancy_error": self.relevancy_error,
            "seconds": self.seconds,
        }


def _ragas_classes():
    """Build the two adapter classes lazily, so importing this module does not import ragas."""
    from langchain_core.outputs import Generation, LLMResult
    from ragas.embeddings.base import BaseRagasEmbeddings
    from ragas.llms.base import BaseRagasLLM

    @dataclass
    class LocalRagasLLM(BaseRagasLLM):
        """ragas LLM over a local `generate(prompt) -> str` (greedy: n>1 repeats the one output)."""

        generate_fn: Callable[[str], str] | None = None

        def generate_text(self, prompt, n=1, temperature=0.01, stop=None, callbacks=None):  # noqa: D401
            text = self.generate_fn(prompt.to_string())  # type: ignore[misc]
            return LLMResult(generations=[[Generation(text=text) for _ in range(max(1, n))]])

        async def agenerate_text(self, prompt, n=1, temperature=0.01, stop=None, callbacks=None):
            return self.generate_text(prompt, n=n, temperature=temperature, stop=stop, callbacks=callbacks)

        def is_finished(self, response) -> bool:
            return True

    class LocalRagasEmbeddings(BaseRagasEmbeddings):
        """ragas embeddings over a local `embed(texts) -> vectors`."""

        def __init__(self, embed: Callable[[list[str]], Sequence[Sequence[float]]]):
            super().__init__()
            self._embed = embed

        def embed_documents(self, texts):
            return [list(map(float, v)) for v in self._embed(list(texts))]

        def embed_query(self, text):
            return self.embed_documents([text])[0]

        async def aembed_documents(self, texts):
            return self.embed_documents(texts)

        async def aembed_query(self, text):
            return self.embed_query(text)

    return LocalRagasLLM, LocalRagasEmbeddings


@dataclass
class Judge:
    """Scores (question, answer, contexts) with ragas Faithfulness and AnswerRelevancy."""

    generate: Callable[[str], str]  # prompt -> judge LLM output
    embed: Callable[[list[str]], Sequence[Sequence[float]]]  # texts -> vectors, for answer relevancy
    name: str = "fake"  # judge preset, recorded in the log
    strictness: int = 1  # questions generated per answer for relevancy (greedy: more would repeat)
    _metrics: Any = field(default=None, repr=False)

    def __post_init__(self):
        # ragas reads this once, at its first import, which only a Judge's scoring triggers
        os.environ["RAGAS_DO_NOT_TRACK"] = "true"

    def _setup(self):
        if self._metrics is None:
            import warnings

            from ragas.run_config import RunConfig

            with warnings.catch_warnings():  # the legacy metrics are deprecated, but they run locally
                warnings.simplefilter("ignore", DeprecationWarning)
                from ragas.metrics import AnswerRelevancy, Faithfulness

            LLM, Emb = _ragas_classes()
            run_config = RunConfig(max_workers=1, max_retries=1, max_wait=1, timeout=3600)
            llm = LLM(run_config=run_config, generate_fn=self.generate)
            emb = Emb(self.embed)
            emb.set_run_config(run_config)
            faith = Faithfulness(llm=llm)
            rel = AnswerRelevancy(llm=llm, embeddings=emb, strictness=self.strictness)
            for m in (faith, rel):
                m.init(run_config)
            self._metrics = (faith, rel)
        return self._metrics

    def score(self, sample: JudgeSample) -> JudgeScore:
        """Both metrics for one sample; failures come back as None with a reason, never raised."""
        from ragas.dataset_schema import SingleTurnSample

        faith, rel = self._setup()
        row = SingleTurnSample(
            user_input=sample.question, response=sample.answer, retrieved_contexts=list(sample.contexts)
        )
        t0 = time.perf_counter()
        out: list[tuple[float | None, str | None]] = []
        for metric in (faith, rel):
            try:
                value = asyncio.run(metric.single_turn_ascore(row))
            except Exception as e:  # ragas raises on unparsable judge output after its one retry
                log.info("judge %s failed: %s: %s", metric.name, type(e).__name__, e)
                out.append((None, type(e).__name__))
                continue
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out.append((None, "nan"))
            else:
                out.append((float(value), None))
        (f, fe), (r, re_) = out
        return JudgeScore(f, r, fe, re_, time.perf_counter() - t0)


def summarize(scores: Sequence[JudgeScore | dict]) -> dict:
    """Means over the scores that parsed, with counts of those that did not.

    >>> summarize([JudgeScore(1.0, 0.5), JudgeScore(None, 0.7, "nan")])["faithfulness_failed"]
    1
    """
    rows = [s.as_dict() if isinstance(s, JudgeScore) else s for s in scores]
    out: dict = {"judge_n": len(rows)}
    for key in ("faithfulness", "relevancy"):
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
        out[f"{key}_n"] = len(vals)
        out[f"{key}_failed"] = len(rows) - len(vals)
    return out


# ---------------------------------------------------------------- the real judge
def default_judge_preset() -> str:
    """The strongest judge preset in the model store, pulled on first use if it is not yet.

    Strongest rather than already pulled: NOTES found Qwen-0.5B scores right and wrong answers alike,
    so silently falling back to a weak judge would make the judged columns meaningless.
    """
    try:
        from assets import models

        names = {r["name"] for r in models.list_presets()}
    except Exception as e:  # model store unavailable: fall back to the first preference
        log.info("model store not readable (%s); judge defaults to %s", e, JUDGE_PREFERENCE[0])
        return JUDGE_PREFERENCE[0]
    for n in JUDGE_PREFERENCE:
        if n in names:
            return n
    raise ModelUnavailable(f"no judge model among the presets {list(JUDGE_PREFERENCE)}: pass --judge PRESET")


def hf_generate_fn(model, tokenizer, max_new_tokens: int = 384) -> Callable[[str], str]:
    """Greedy generation with the tokenizer's chat template (one user turn holding the ragas prompt)."""
    import torch

    def generate(prompt: str) -> str:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def local_embed_fn(preset: str = EMBEDDER_PRESET) -> Callable[[list[str]], Sequence[Sequence[float]]]:
    """Encoder over the model store's sentence-transformers model (shared with the retriever's)."""
    from assets import models

    st = models.load_embedder(preset)

    def embed(texts: list[str]):
        return st.encode(texts, normalize_embeddings=True, convert_to_numpy=True).tolist()

    return embed


def load_judge(preset: str | None = None, max_new_tokens: int = 384) -> Judge:
    """A Judge over a model-store preset (default: the strongest available) and the local MiniLM."""
    import torch

    from assets import models
    from rag.hardware import cpu_threads

    torch.set_num_threads(min(2, cpu_threads()))
    name = preset or default_judge_preset()
    model, tokenizer, _info = models.load_causal_lm(name)
    model.eval()
    return Judge(generate=hf_generate_fn(model, tokenizer, max_new_tokens), embed=local_embed_fn(), name=name)


# ---------------------------------------------------------------- the judged part of an eval run
def judge_ids(questions: Sequence[Question], limit: int, seed: int) -> list[str]:
    """The seeded subsample of answerable question ids the judge scores (same for every system)."""
    ids = [q.id for q in questions if not q.unanswerable]
    random.Random(seed).shuffle(ids)
    return ids[:limit]


def judge_name(judge: Judge | None, preset: str | None) -> str:
    """The judge a run records: the one passed in, else the preset asked for, else the default."""
    return getattr(judge, "name", None) or preset or default_judge_preset()


def judge_predictions(
    qs: Sequence[Question],
    systems: Sequence[SystemSpec],
    preds: dict[str, dict[str, dict]],
    contexts: Callable[[SystemSpec, Question], list[Hit] | None],
    shash: dict[str, str],
    cfg: EvalConfig,
    run_dir: Path,
    name: str,
    judge: Judge | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, dict]]:
    """System name -> question id -> judge scores, for the answered questions among judge_ids.

    Scores are saved in the run folder (judge-<name>.jsonl) keyed by system hash, question and a hash
    of question, answer and passages, so a rerun judges only new answers; the judge loads only then.
    """
    by_id = {q.id: q for q in qs}
    path = run_dir / f"judge-{safe_name(name)}.jsonl"
    saved = {} if cfg.fresh else {(r["system_hash"], r["id"], r["key"]): r for r in read_jsonl(path)}
    judged: dict[str, dict[str, dict]] = {s.name: {} for s in systems}
    todo = []
    for s, qid, texts in _to_judge(qs, systems, preds, contexts, cfg):
        key = short_hash(json.dumps([by_id[qid].question, preds[s.name][qid]["text"], texts]))
        row = saved.get((shash[s.name], qid, key))
        if row:
            judged[s.name][qid] = row
        else:
            todo.append((s, qid, key, texts))
    if not todo:
        return judged
    if judge is None:
        judge = load_judge(name)
    with Appender(path) as out:
        for i, (s, qid, key, texts) in enumerate(todo, 1):
            sc = judge.score(JudgeSample(by_id[qid].question, preds[s.name][qid]["text"], texts))
            row = {"system_hash": shash[s.name], "system": s.name, "id": qid, "key": key, **sc.as_dict()}
            out.write(row)
            judged[s.name][qid] = row
            if progress:
                progress(f"judge ({name})", i, len(todo))
    return judged


def _to_judge(qs, systems, preds, contexts, cfg):
    """(system, question id, passage texts) for each answer the judge should score.

    Abstentions are not judged (there is no claim to check); the passages are those the reader read.
    """
    by_id = {q.id: q for q in qs}
    ids = judge_ids(qs, cfg.judge_limit, cfg.seed)
    for s in systems:
        if cfg.judge_systems is not None and s.name not in cfg.judge_systems:
            continue
        for qid in ids:
            p = preds[s.name].get(qid)
            if p is None or p["abstained"]:
                continue
            ctx = contexts(s, by_id[qid]) or []
            yield s, qid, [h.chunk.text for h in ctx[: p.get("passages", len(ctx))]]
