"""Reading: every system answers its questions through rag.pipeline, the path `rag ask` serves.

The reader is handed a retriever that serves the hits already chosen for the question (the saved
retrieval's top k, or the gold paragraph for an @gold system), so the parsing, the citation checks, the
prompt cap (passages that did not fit are dropped, and are then neither citable nor read) and the
timings are exactly those of `rag ask`.

Predictions are appended to the run folder as they are made, one JSONL per system, each line keyed by
question id + a hash of the question + a hash of the passages given; the file name carries the system's
hash (eval.systems.system_hash). An interrupted run resumes where it stopped, and a rerun only computes
what changed. Systems that share a reader (a preset and its @gold run) are answered with one load.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from eval.memory import PeakRSS, release_models
from eval.retrieval import Contexts, Progress
from eval.runfiles import Appender, ctx_hash, read_jsonl, safe_name, short_hash
from eval.systems import SystemSpec, min_rerank_of
from eval.testset import Question
from rag.pipeline import ask_stream
from rag.reader import best_rerank_score
from rag.types import Hit

Todo = list[tuple[Question, list[Hit]]]  # questions still to answer, with the passages to read


class ServedHits:
    """A retriever that serves hits already in hand (rag.types.Retriever): the top k of them."""

    def __init__(self, hits: Sequence[Hit]):
        self.hits = list(hits)

    def search(self, query: str, k: int) -> list[Hit]:
        return self.hits[:k]


def answer_row(reader: Any, q: Question, ctx: list[Hit], k: int, system: str) -> dict:
    """One saved prediction: `reader` answers `q` from `ctx` through rag.pipeline, as `rag ask` would.

    seconds is the reading time (the pipeline's generate_s); passages is how many of `ctx` the reader
    really read (fewer when the prompt cap dropped some).
    """
    stream = ask_stream(q.question, ServedHits(ctx), reader, k)
    for _ in stream:
        pass
    ans = stream.answer
    if ans is None:  # set once the stream is exhausted; checked so that -O cannot hide a broken reader
        raise RuntimeError(f"{system}: the answer stream ended without an answer")
    return {
        "id": q.id,
        "qhash": short_hash(q.question),
        "ctx": ctx_hash(ctx),
        "system": system,
        "text": ans.text,
        "abstained": bool(ans.abstained),
        "citations": [asdict(c) for c in ans.citations],
        "supported": bool(ans.supported),
        "raw": ans.raw,
        "seconds": ans.timings["generate_s"],
        "timings": dict(ans.timings),
        "passages": len(stream.hits),
        "decision": dict(ans.decision),  # span decoding: the two log-probabilities, the best span
    }


def pred_path(run_dir: Path, spec: SystemSpec, system_hash: str) -> Path:
    return run_dir / f"pred-{safe_name(spec.name)}-{system_hash}.jsonl"


def same_cut(row: dict, ctx: list[Hit], cut: float) -> bool:
    """Whether the reranker cut ([reader] min_rerank_score) would decide for `ctx` as it did for the saved
    row: the cache key holds the passages, not their scores, and the same passages can score differently
    (for example read after their document's name: [retrieval] rerank_names)."""
    best = best_rerank_score(ctx[: row.get("passages") or len(ctx)])
    declined_by_cut = "rerank_score" in (row.get("decision") or {})
    return declined_by_cut == (best is not None and best < cut)


def saved_predictions(
    spec: SystemSpec, path: Path, qs: Sequence[Question], contexts: Contexts, fresh: bool
) -> tuple[dict[str, dict], Todo]:
    """(saved predictions still valid, by question id; what is left to answer)."""
    have = {} if fresh else {r["id"]: r for r in read_jsonl(path)}
    cut = min_rerank_of(spec)
    keep: dict[str, dict] = {}
    todo: Todo = []
    for q in qs:
        ctx = contexts(spec, q)
        if ctx is None:
            continue  # oracle without a gold paragraph for this question
        r = have.get(q.id)
        if (
            r
            and r.get("qhash") == short_hash(q.question)
            and r.get("ctx") == ctx_hash(ctx)
            and same_cut(r, ctx, cut)
        ):
            keep[q.id] = r
        else:
            todo.append((q, ctx))
    return keep, todo


def predict(
    qs: Sequence[Question],
    systems: Sequence[SystemSpec],
    shash: dict[str, str],
    contexts: Contexts,
    run_dir: Path,
    reader_factory: Callable[[SystemSpec], Any],
    fresh: bool = False,
    progress: Progress | None = None,
) -> dict[str, dict[str, dict]]:
    """System name -> question id -> prediction, answering only what is not saved yet."""
    preds: dict[str, dict[str, dict]] = {}
    groups: dict[tuple, list[SystemSpec]] = {}
    for s in systems:
        groups.setdefault(s.reader_key, []).append(s)
    for group in groups.values():
        todo: dict[str, Todo] = {}
        for s in group:
            preds[s.name], todo[s.name] = saved_predictions(
                s, pred_path(run_dir, s, shash[s.name]), qs, contexts, fresh
            )
        if any(todo.values()):
            _answer_group(group, todo, preds, shash, contexts.k, run_dir, reader_factory, progress)
    return preds


def _answer_group(group, todo, preds, shash, k, run_dir, reader_factory, progress) -> None:
    """Load the group's reader once, answer each system's todo, then release it (RAM is per group)."""
    gc.collect()
    with PeakRSS() as mem:
        reader = reader_factory(group[0])
        for s in group:
            if not todo[s.name]:
                continue
            with Appender(pred_path(run_dir, s, shash[s.name])) as out:
                for i, (q, ctx) in enumerate(todo[s.name], 1):
                    row = answer_row(reader, q, ctx, k, s.name)
                    row["rss_mb"] = round(mem.peak_mb, 1)
                    out.write(row)
                    preds[s.name][q.id] = row
                    if progress:
                        progress(f"answer {s.name}", i, len(todo[s.name]))
        del reader
        release_models()
