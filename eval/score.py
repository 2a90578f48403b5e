"""Scoring a run: per-question scores, per-system metrics, retrieval once for the test set, and paired
bootstrap CIs between systems that read the same passages.

Definitions are eval.metrics' (EM/F1 and grounding from rag.text). Percentages (EM, F1, correct + cited,
declined) are x100 with 2 decimals; rates and means 0..1 with 4. `declined` is over every unanswerable
question; declined_absent and declined_disfl split it by kind: corpus-absent questions (their article
is not in the index, eval.absent) and Disfl-QA near misses (None when a run has none of that kind).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eval import metrics as M
from eval.judge import summarize
from eval.retrieval import Contexts, is_gold_hit
from eval.systems import SystemSpec
from eval.testset import ABSENT_ORIGIN, DISFL_ORIGIN, Question
from rag.types import Hit


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def per_question(q: Question, p: dict, ctx: list[Hit]) -> dict:
    """Scores of one prediction (EM/F1 on answerable questions only)."""
    cited = [ctx[c["n"] - 1].chunk.text for c in p["citations"] if 1 <= c["n"] <= len(ctx)]
    out: dict[str, Any] = {
        "abstained": p["abstained"],
        "unanswerable": q.unanswerable,
        "origin": q.origin,
        "cited": bool(cited),
    }
    if not p["abstained"]:
        out["grounding"] = M.grounding_score(p["text"], cited)
    if not q.unanswerable:
        em, f1 = (0.0, 0.0) if p["abstained"] else M.em_f1(p["text"], q.answers)
        cites_gold = any(M.contains_answer(t, q.answers) for t in cited)
        out.update(
            em=em,
            f1=f1,
            cites_gold=cites_gold,
            correct_cited=M.correct_with_citation(f1, p["abstained"], cites_gold),
        )
    return out


def retrieval_scores(
    qs: Sequence[Question], hits: dict[str, list[Hit]], seconds: list[float], k: int
) -> dict:
    """Recall@1/3/5/10/k, MRR@10 and search latency, once for the test set ({} without retrieval), over
    the answerable questions with a known gold paragraph (never a corpus-absent one: none is in its index)."""
    if not hits:
        return {}
    ranks = [
        M.first_relevant_rank([is_gold_hit(h.chunk, q) for h in hits[q.id]])
        for q in qs
        if not q.unanswerable and q.origin != ABSENT_ORIGIN and (q.has_gold_span or q.context)
    ]
    return {
        "n": len(ranks),
        **{f"recall_at_{n}": _r(M.recall_at_k(ranks, n)) if ranks else None for n in (1, 3, 5, 10)},
        "recall_at_k": _r(M.recall_at_k(ranks, k)) if ranks else None,
        "mrr_at_10": _r(M.mrr_at_k(ranks, 10)) if ranks else None,
        "latency_p50_s": _r(M.percentile(seconds, 50)),
        "latency_p95_s": _r(M.percentile(seconds, 95)),
    }


def declined_share(rows: list[dict], origin: str) -> float | None:
    """Share of the unanswerable questions from `origin` that were declined; None without any.

    >>> rows = [{"unanswerable": True, "origin": "disfl_qa", "abstained": a} for a in (True, False)]
    >>> declined_share(rows, "disfl_qa"), declined_share(rows, "corpus_absent")
    (0.5, None)
    """
    return M.mean([float(v["abstained"]) for v in rows if v["unanswerable"] and v.get("origin") == origin])


def system_metrics(
    rows: list[dict], recs: list[dict], judged: list[dict], retrieval: dict, oracle: bool
) -> dict:
    """One system's metrics from its per-question scores (`rows`), its predictions (`recs`, same order)
    and its judge scores."""
    ans = [v for v in rows if not v["unanswerable"]]
    answered = [v for v in rows if not v["abstained"]]
    cited_ans = [v for v in ans if not v["abstained"] and v["cited"]]
    abst = M.abstention_scores([v["abstained"] for v in rows], [v["unanswerable"] for v in rows])
    js = summarize(judged)
    return {
        "n": len(rows),
        "n_answerable": len(ans),
        "n_unanswerable": len(rows) - len(ans),
        "em": _pct(M.mean([v["em"] for v in ans])),
        "f1": _pct(M.mean([v["f1"] for v in ans])),
        "correct_cited": _pct(M.mean([float(v["correct_cited"]) for v in ans])),
        "declined": _pct(abst["recall"]),
        "declined_absent": _pct(declined_share(rows, ABSENT_ORIGIN)),
        "declined_disfl": _pct(declined_share(rows, DISFL_ORIGIN)),
        "abstain_precision": _r(abst["precision"]),
        "abstain_recall": _r(abst["recall"]),
        "wrong_abstain_rate": _r(abst["wrong_rate"]),
        "citation_accuracy": _r(M.mean([float(v["cites_gold"]) for v in cited_ans])),
        "citation_rate": _r(M.mean([float(v["cited"]) for v in answered])),
        "grounding": _r(M.mean([v.get("grounding") for v in answered])),
        "supported_rate": _r(M.mean([float(p["supported"]) for p in recs if not p["abstained"]])),
        "faithfulness": _r(js["faithfulness"]),
        "faithfulness_n": js["faithfulness_n"],
        "faithfulness_failed": js["faithfulness_failed"],
        "relevancy": _r(js["relevancy"]),
        "relevancy_n": js["relevancy_n"],
        "relevancy_failed": js["relevancy_failed"],
        "judge_n": js["judge_n"],
        "recall_at_k": None if oracle else retrieval.get("recall_at_k"),
        "mrr_at_10": None if oracle else retrieval.get("mrr_at_10"),
        "latency_p50_s": _r(M.percentile([p["seconds"] for p in recs], 50)),
        "latency_p95_s": _r(M.percentile([p["seconds"] for p in recs], 95)),
        "peak_ram_mb": max((p.get("rss_mb") or 0 for p in recs), default=None) or None,
    }


def score_systems(
    qs: Sequence[Question],
    systems: Sequence[SystemSpec],
    preds: dict[str, dict[str, dict]],
    contexts: Contexts,
    judged: dict[str, dict[str, dict]],
    retrieval: dict,
) -> tuple[dict[str, dict[str, dict]], dict[str, dict]]:
    """(system -> question id -> per-question scores, system -> metrics), over the questions it answered."""
    per_q: dict[str, dict[str, dict]] = {}
    metrics: dict[str, dict] = {}
    for s in systems:
        mine = preds[s.name]
        rows = {q.id: per_question(q, mine[q.id], contexts(s, q)) for q in qs if q.id in mine}  # type: ignore[arg-type]
        per_q[s.name] = rows
        recs = [mine[qid] for qid in rows]
        metrics[s.name] = system_metrics(
            list(rows.values()), recs, list(judged.get(s.name, {}).values()), retrieval, s.oracle
        )
    return per_q, metrics


# ---------------------------------------------------------------- comparisons
def pairs(systems: Sequence[SystemSpec]) -> list[tuple[SystemSpec, SystemSpec]]:
    """(a, b) pairs worth a CI: every reader vs extractive on the same contexts; tuned vs untuned."""
    by_name = {s.name: s for s in systems}
    out = []
    for s in systems:
        base = "extractive@gold" if s.oracle else "extractive"
        if s.reader != "extractive" and base in by_name:
            out.append((s, by_name[base]))
        if s.adapter != "none":
            untuned = s.model + ("@gold" if s.oracle else "")  # type: ignore[operator]
            if untuned in by_name:
                out.append((s, by_name[untuned]))
    return out


def _round_bs(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def compare(
    systems: Sequence[SystemSpec],
    per_q: dict[str, dict[str, dict]],
    judged: dict[str, dict[str, dict]],
    questions: Sequence[Question],
    n_boot: int,
    seed: int,
) -> list[dict]:
    """Paired bootstrap CIs for F1 and EM (x100, answerable questions both systems answered) and for the
    judged metrics (the questions both answered and the judge scored)."""
    by_id = {q.id: q for q in questions}
    out = []
    for a, b in pairs(systems):
        common = [qid for qid in per_q[a.name] if qid in per_q[b.name] and not by_id[qid].unanswerable]
        for metric in ("f1", "em"):
            xa = [100 * per_q[a.name][q][metric] for q in common]
            xb = [100 * per_q[b.name][q][metric] for q in common]
            bs = M.paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed)
            out.append({"a": a.name, "b": b.name, "metric": metric, **_round_bs(bs.as_dict())})
        ja, jb = judged.get(a.name, {}), judged.get(b.name, {})
        for metric in ("faithfulness", "relevancy"):
            both = [
                q for q in ja if q in jb and ja[q].get(metric) is not None and jb[q].get(metric) is not None
            ]
            if both:
                bs = M.paired_bootstrap(
                    [ja[q][metric] for q in both], [jb[q][metric] for q in both], n_boot=n_boot, seed=seed
                )
                out.append({"a": a.name, "b": b.name, "metric": metric, **_round_bs(bs.as_dict())})
    return out
