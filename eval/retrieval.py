"""What each system reads: the retrieved hits (once per question, cached on disk), or the gold paragraph.

Retrieval runs once per question for the whole run, to depth max(k, 10) (MRR@10 and recall@10 need
ten), and every system reads the same top-k of it. The hits are saved in the run folder keyed by the
index's manifest, the mode and the depth (and the fusion settings when rag.toml changes them), so a
rerun over the same index retrieves only edited questions. An "@gold" system reads the gold paragraph
as its single passage instead.

Corpus-absent questions (eval.absent) are retrieved from the held-out index (EvalConfig.absent_index),
everything else from the run's index; each index's hits are saved under its own fingerprint. They have
no gold paragraph: an @gold system is not given them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval import metrics as M
from eval.memory import release_models
from eval.runfiles import Appender, read_jsonl, short_hash
from eval.systems import SystemSpec
from eval.testset import ABSENT_ORIGIN, Question, TestSet, gold_context
from rag.config import RetrievalConfig
from rag.errors import BadInput
from rag.types import Chunk, Hit

if TYPE_CHECKING:
    from eval.run import EvalConfig

Progress = Callable[[str, int, int], None]  # (phase label, done, total)
RETRIEVE_DEPTH = 10  # hits kept per question: MRR@10 and recall@10 need ten
BATCH = 64  # questions per search_batch call (queries are embedded in batches: much faster)


def default_index_dir() -> Path:
    from rag.config import default_index_dir

    return default_index_dir()


def index_fingerprint(index_dir: Path | str) -> str | None:
    """Hash of the index's current manifest (chunks, embedder, file hashes); None without an index.
    `index_dir` is a folder or a postgresql:// URL."""
    from indexing.backends import manifest_text

    text = manifest_text(index_dir)
    return None if text is None else short_hash(text)


def retrieval_config(cfg: EvalConfig) -> RetrievalConfig:
    """The run's retrieval settings as the retriever takes them."""
    return RetrievalConfig(
        mode=cfg.mode,
        k=cfg.k,
        rrf_k=cfg.rrf_k,
        candidates=cfg.candidates,
        rerank=cfg.rerank,
        rerank_candidates=cfg.rerank_candidates,
        reranker=cfg.reranker,
        rerank_tokens=cfg.rerank_tokens,
        rerank_names=cfg.rerank_names,
    )


def open_default_retriever(cfg: EvalConfig):
    """The retriever over the run's index (the default index unless cfg.index_dir), as `rag ask` opens it."""
    from indexing.retrieve import open_retriever

    return open_retriever(cfg.index_dir, mode=cfg.mode, cfg=retrieval_config(cfg))


def hits_key(index_key: str | None, cfg: EvalConfig, depth: int) -> str:
    """Key of a saved retrieval: index, mode and depth, plus the fusion settings when not the defaults
    (hits saved before rag.toml reached `rag eval` keep their key), and how the ONNX models were run."""
    from indexing.onnx import RUNS

    parts: list[Any] = [index_key, cfg.mode, depth]
    default = RetrievalConfig()
    if cfg.mode == "hybrid" and (cfg.rrf_k, cfg.candidates) != (default.rrf_k, default.candidates):
        parts += [cfg.rrf_k, cfg.candidates]
    if cfg.rerank:  # unreranked runs keep their old keys
        parts += ["rerank", cfg.reranker, cfg.rerank_candidates, cfg.rerank_tokens]
        if cfg.rerank_names:  # runs without names keep their keys
            parts.append("names")
    parts.append(RUNS)  # query vectors and reranker scores from batched runs differ a little: not reused
    return short_hash(json.dumps(parts))


def hit_to_row(h: Hit) -> dict:
    c = h.chunk
    row = {"id": c.id, "doc": c.doc, "text": c.text, "start": c.start, "end": c.end, "score": h.score}
    if h.rerank_score is not None:
        row["rerank_score"] = h.rerank_score
    return row


def row_to_hit(r: dict) -> Hit:
    return Hit(Chunk(r["id"], r["doc"], r["text"], r["start"], r["end"]), r["score"], r.get("rerank_score"))


def is_gold_hit(chunk: Chunk, q: Question) -> bool:
    """A retrieved chunk is relevant when it overlaps the gold paragraph: same source file and
    overlapping character spans; for questions that only carry the paragraph text (SQuAD JSON),
    when chunk and paragraph share a run of text of at least 50 characters (or all of the shorter)."""
    if q.has_gold_span:
        return M.same_source(chunk.doc, q.source) and M.spans_overlap(chunk.start, chunk.end, q.start, q.end)  # type: ignore[arg-type]
    if q.context:
        a, b = " ".join(chunk.text.split()), " ".join(q.context.split())
        m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
        return m.size >= min(50, len(a), len(b))
    return False


# ---------------------------------------------------------------- the retrieval step
@dataclass
class Retrieved:
    hits: dict[str, list[Hit]] = field(default_factory=dict)  # question id -> top max(k, 10) hits
    seconds: list[float] = field(default_factory=list)  # search time per question (amortized in batches)
    opened: bool = False  # True: the run opened the index itself (no retriever was passed in)


def retrieve(
    qs: Sequence[Question],
    cfg: EvalConfig,
    run_dir: Path,
    retriever: Any = None,
    index_key: str | None = None,
    progress: Progress | None = None,
    phase: str = "retrieve",
) -> Retrieved:
    """Hits for every question, from the saved retrieval where its question is unchanged.

    Without `retriever` the index cfg.index_dir names is opened (only if something is left to retrieve)
    and then released with its embedder before any reader loads, for cleaner RAM figures. `phase` labels
    the progress.
    """
    depth = max(cfg.k, RETRIEVE_DEPTH)
    opened = retriever is None
    index_dir = cfg.index_dir or default_index_dir()
    # An injected retriever without an index_key is not cached across runs: its identity is unknown.
    ikey = index_key or (index_fingerprint(index_dir) if opened else None)
    path = run_dir / f"hits-{hits_key(ikey, cfg, depth)}.jsonl"
    saved = {} if cfg.fresh or ikey is None else {r["id"]: r for r in read_jsonl(path)}
    todo = [q for q in qs if q.id not in saved or saved[q.id].get("qhash") != short_hash(q.question)]
    if todo:
        if retriever is None:
            retriever = open_default_retriever(cfg)
            path = run_dir / f"hits-{hits_key(index_fingerprint(index_dir), cfg, depth)}.jsonl"
        with Appender(path) as out:
            for row in _search(retriever, todo, depth, progress, phase):
                out.write(row)
                saved[row["id"]] = row
    out_hits = {q.id: [row_to_hit(r) for r in saved[q.id]["hits"]] for q in qs}
    seconds = [saved[q.id].get("seconds", 0.0) for q in qs]
    if opened:
        retriever = None  # drop the index and its embedder before readers load
        release_models()
    return Retrieved(out_hits, seconds, opened)


def retrieve_absent(
    qs: Sequence[Question],
    cfg: EvalConfig,
    run_dir: Path,
    retriever: Any = None,
    index_key: str | None = None,
    progress: Progress | None = None,
) -> Retrieved:
    """Hits for the corpus-absent questions: from `retriever`, else from the held-out index
    cfg.absent_index, never from the run's index (their article is in it)."""
    if retriever is None and cfg.absent_index is None:
        raise BadInput(
            "corpus-absent questions need the held-out index: add them with eval.absent.add_absent, "
            "which builds it, or pass --absent 0"
        )
    held = replace(cfg, index_dir=cfg.absent_index)
    return retrieve(qs, held, run_dir, retriever, index_key, progress, "retrieve absent")


def _search(retriever: Any, todo: list[Question], depth: int, progress: Progress | None, phase: str):
    """Saved-hits rows for `todo`, in batches when the retriever can search several queries at once."""
    batched = hasattr(retriever, "search_batch")
    step = BATCH if batched else 1
    for b in range(0, len(todo), step):
        batch = todo[b : b + step]
        t0 = time.perf_counter()
        if batched:
            results = retriever.search_batch([q.question for q in batch], depth)
        else:
            results = [retriever.search(q.question, depth) for q in batch]
        dt = (time.perf_counter() - t0) / len(batch)  # amortized per question in a batch
        for q, hits in zip(batch, results, strict=True):
            yield {
                "id": q.id,
                "qhash": short_hash(q.question),
                "seconds": dt,
                "hits": [hit_to_row(h) for h in hits],
            }
        if progress:
            progress(phase, b + len(batch), len(todo))


# ---------------------------------------------------------------- what a system reads
def gold_paragraphs(qs: Sequence[Question], testset: TestSet, systems: Sequence[SystemSpec]) -> dict:
    """Question id -> gold paragraph text (None where unknown); BadInput when @gold systems get none."""
    cache: dict = {}
    # a corpus-absent question's paragraph is not in the corpus as indexed: no system may read it
    golds = {
        q.id: None if q.origin == ABSENT_ORIGIN else gold_context(q, testset.corpus_root, cache) for q in qs
    }
    oracle = [s for s in systems if s.oracle]
    if oracle and not any(golds[q.id] for q in qs):
        raise BadInput(
            f"{oracle[0].name}: the test set gives no gold paragraphs (no source/start/end "
            f"with the files under {testset.corpus_root}, no context): drop the @gold systems"
        )
    return golds


def gold_hit(q: Question, text: str) -> Hit:
    """The gold paragraph as a retrieved chunk, so an @gold system reads it through the served path."""
    start = q.start if q.start is not None else 0
    end = q.end if q.end is not None else len(text)
    doc = q.source or "gold"
    return Hit(Chunk(f"{doc}:{start}-{end}", doc, text, start, end), 1.0)


@dataclass(frozen=True)
class Contexts:
    """The passages a system reads for a question: the top-k retrieved hits, or for an @gold system the
    gold paragraph as the single hit (None when the question has no gold paragraph)."""

    hits: dict[str, list[Hit]]  # question id -> retrieved hits, best first
    golds: dict[str, str | None]  # question id -> gold paragraph text
    k: int  # retrieved passages a reader is given

    def __call__(self, spec: SystemSpec, q: Question) -> list[Hit] | None:
        if spec.oracle:
            text = self.golds[q.id]
            return None if text is None else [gold_hit(q, text)]
        return self.hits[q.id][: self.k]
