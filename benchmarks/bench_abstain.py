"""Calibrating the abstain threshold of span-faithful decoding on the training sources' validation split.

The validation articles of `rag finetune`'s data (SQuADShifts new_wiki + nyt, 5% of articles held out from
training; never SQuAD dev or Disfl-QA) give answerable examples (the gold paragraph among hard negatives)
and unanswerable ones (the gold paragraph left out: only passages that BM25 ranks high for the question
but that hold no gold answer). The span reader answers each with the threshold at +inf, so each row keeps
both log-probabilities; then every threshold is scored offline:

    declined        share of unanswerable examples declined (recall of declining)
    precision       share of declines that were right (the example was unanswerable)
    wrong declines  share of answerable examples declined
    answer F1       SQuAD F1 over answerable examples (a decline scores 0)

With the reader's names rule on (`[reader] decline_missing_names`, the default; `--no-names` without it)
an example whose question names something no passage names (rag.text.missing_names) is declined whatever
its gap, and the threshold is chosen for the two together; both rules' best points are printed.
The chosen threshold maximises declined - wrong declines (Youden's J) with wrong declines <= --max-wrong.
With --rerank (the default) each example's passages are also scored by the reranker, and the pair
([reader] min_rerank_score, threshold) is chosen the same way: an example whose best passage scores
below the cut is declined unread (`rerank_rule` in the JSON; the reader's defaults come from it).
With --docs ROWS (the JSONL of `python -m finetune.manpages`) documentation-style examples join the
split (finetune.manpages.validation_examples: a manual page's question with its entry's chunk among other
chunks of the page, or with only chunks that do not hold the answer), so the rules are chosen for manuals
as well as prose; the chosen pair's rates are printed per source. The git manuals (the documentation test
set) are never among those pages.
Prints the curve and writes benchmarks/results/abstain.json (the report draws the curve from it).

    python benchmarks/bench_abstain.py [--limit 300] [--near-misses] [--model qwen2.5-0.5b] [--adapter default]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, write_result  # noqa: E402

# what the rows hold: the gap over the span's own tokens (the reader's rule since the citation's forced
# tokens were found to sink right answers), the gap with the citation, and the model's own choice; older
# rows are redone
RULE = "span-gap+cited+model"


def curve(rows: list[dict], key: str = "gap") -> list[dict]:
    """One point per distinct threshold (plus +-inf): the four rates above at that threshold, deciding by
    the row's `key` gap."""
    rows = [{**r, "gap": r[key]} for r in rows]
    ans = [r for r in rows if not r["unanswerable"]]
    un = [r for r in rows if r["unanswerable"]]
    gaps = sorted({r["gap"] for r in rows if math.isfinite(r["gap"])})
    cuts = [-math.inf] + [(a + b) / 2 for a, b in zip(gaps, gaps[1:])] + [math.inf]
    if len(gaps) == 1:
        cuts = [-math.inf, gaps[0], math.inf]
    out = []
    for t in cuts:
        declined = lambda r, t=t: r["gap"] > t or r["gap"] == math.inf  # noqa: E731 (inf: always)
        d_un = sum(map(declined, un))
        d_ans = sum(map(declined, ans))
        out.append(
            {
                "threshold": t,
                "declined": d_un / len(un) if un else None,
                "precision": d_un / (d_un + d_ans) if d_un + d_ans else None,
                "wrong_declines": d_ans / len(ans) if ans else None,
                "answer_f1": 100 * sum(0 if declined(r) else r["f1"] for r in ans) / len(ans)
                if ans
                else None,
            }
        )
    return out


def choose(points: list[dict], max_wrong: float) -> dict:
    ok = [p for p in points if p["wrong_declines"] is not None and p["wrong_declines"] <= max_wrong]
    if not ok:  # the model's own declines alone cost more than max_wrong: decline no more than they do
        return points[-1]
    return max(ok, key=lambda p: (p["declined"] - p["wrong_declines"], -abs(p["threshold"])))


DOC_KEYS = {"id": str, "title": str, "question": str, "answers": list, "context": str}


def doc_rows(path: Path) -> list[dict]:
    """The rows of `python -m finetune.manpages`; a missing file or a bad line exits with one line."""
    fix = f"python -m finetune.manpages --out {path} writes it"
    if not path.is_file():
        sys.exit(f"error: no file {path}: {fix}")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        sys.exit(f"error: cannot read {path} ({e.strerror}): {fix} again")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            sys.exit(f"error: {path} line {n} is not JSON ({e.msg}): {fix} again")
        bad = [k for k, t in DOC_KEYS.items() if not isinstance(row, dict) or not isinstance(row.get(k), t)]
        if bad:
            sys.exit(f"error: {path} line {n} lacks {', '.join(bad)}: {fix} again")
        rows.append(row)
    if not rows:
        sys.exit(f"error: {path} has no rows: {fix} again")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=300, help="validation examples (seeded, both kinds)")
    ap.add_argument("--model", default="qwen2.5-0.5b")
    ap.add_argument("--adapter", default="default")
    ap.add_argument(
        "--near-misses", action="store_true", help="include the rule-built near-miss validation examples"
    )
    ap.add_argument(
        "--names",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the reader also declines when a name in the question is in no passage (default: rag.toml)",
    )
    ap.add_argument(
        "--rerank",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also choose [reader] min_rerank_score: decline when the best passage's reranker score is below it",
    )
    ap.add_argument(
        "--rerank-names",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the reranker reads each passage after its document's name (default: rag.toml's rerank_names)",
    )
    ap.add_argument(
        "--docs", type=Path, default=None, help="manual-page rows (python -m finetune.manpages) to add"
    )
    ap.add_argument("--docs-limit", type=int, default=150, help="documentation-style examples from --docs")
    ap.add_argument("--max-wrong", type=float, default=0.08, help="most wrong declines the choice may cost")
    ap.add_argument(
        "--rows", type=Path, default=Path("/tmp/rag-bench/abstain-rows.jsonl"), help="resume file"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "abstain.json")
    args = ap.parse_args()

    from finetune.data import DataConfig, build_dataset
    from rag.hardware import describe
    from rag.reader import make_reader
    from rag.text import em_f1, missing_names
    from rag.types import Chunk, Hit

    if args.names is None:
        from rag.config import load_config

        args.names = load_config().reader.decline_missing_names
    hw = describe()
    print(cpu_line(hw, f", load {os.getloadavg()[0]:.2f}"))
    # the validation split as calibrated so far: gold-less RAFT examples only; --near-misses adds the
    # rule-built entity swaps and disfluent questions (finetune.data) to both kinds
    near = {} if args.near_misses else {"swap_rate": 0.0, "disfluent_rate": 0.0}
    ds = build_dataset(DataConfig(**near))
    val = random.Random(0).sample(ds.val, min(args.limit, len(ds.val)))
    print(f"{len(val)} validation examples ({sum(e.gold is None for e in val)} without the gold paragraph)")
    if args.docs:
        from finetune.manpages import validation_examples

        docs = validation_examples(doc_rows(args.docs), args.docs_limit)
        print(
            f"{len(docs)} documentation-style examples from {args.docs} "
            f"({sum(e.gold is None for e in docs)} whose passages do not hold the answer)"
        )
        val = val + docs
    reader = make_reader("llm", model=args.model, adapter=args.adapter, span=True, abstain_threshold=math.inf)
    if args.docs and _trained_on(reader.reader.get("adapter"), args.docs.name):
        print(f"warning: the adapter's manifest names {args.docs.name}: it was trained on these pages")
    done = {}
    if args.rows.is_file():
        done = {
            r["id"]: r
            for r in map(json.loads, open(args.rows))
            if r.get("reader") == reader.reader and r.get("rule") == RULE
        }
    args.rows.parent.mkdir(parents=True, exist_ok=True)
    rows, t0 = [], time.perf_counter()
    with open(args.rows, "a") as sink:
        for i, e in enumerate(val, 1):
            if e.id in done:
                rows.append(done[e.id])
                continue
            hits = [
                Hit(Chunk(f"{p.source}:{j}", p.source, p.text, 0, len(p.text)), 1.0)
                for j, p in enumerate(e.passages)
            ]
            ans = reader.answer(e.question, hits)
            d = ans.decision
            gap = cited = math.inf
            if d.get("answer_logprob") is not None:
                gap = d["abstain_logprob"] - d["answer_logprob"]
                cited = gap - d["citation_logprob"]
            span_text = (d.get("span") or "").rsplit(" [", 1)[0]
            row = {
                "id": e.id,
                "unanswerable": e.gold is None,
                "gap": gap,
                "gap_cited": cited,  # the earlier rule, which also counted the citation's tokens
                "abstain_logprob": d.get("abstain_logprob"),
                "span_token_logprobs": d.get("span_token_logprobs"),
                "span": d.get("span"),
                "model_declines": bool(d.get("model_declines")),  # its greedy choice is the sentence
                "f1": 0.0 if e.gold is None or not span_text else em_f1(span_text, e.answers)[1],
                "seconds": ans.timings["generate_s"],
                "reader": reader.reader,
                "rule": RULE,
            }
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            rows.append(row)
            if i % 25 == 0:
                el = time.perf_counter() - t0
                print(f"  {i}/{len(val)} ({el:.0f} s, ETA {el / i * (len(val) - i):.0f} s)", flush=True)

    # the names rule, offline: also decline when a name in the question (rag.text.names) is in no passage
    by_id = {e.id: e for e in val}
    for r in rows:
        e = by_id[r["id"]]
        r["missing_names"] = missing_names(e.question, [p.text for p in e.passages])
        r["gap_names"] = math.inf if r["missing_names"] else r["gap"]
    evidence = rerank_rule(rows, val, args) if args.rerank else None
    sources = None
    if args.docs:
        cut = evidence["min_rerank_score"] if evidence else -math.inf
        thr = (
            evidence["threshold"]
            if evidence
            else choose(curve(rows, "gap_names" if args.names else "gap"), args.max_wrong)["threshold"]
        )
        sources = per_source(rows, cut, thr, args.names)
        from rag.config import load_config

        now = load_config().reader
        today = per_source(rows, now.min_rerank_score, now.abstain_threshold, args.names)
        for src, v in today.items():
            print(
                f"{src} under rag.toml's rules (min_rerank_score {now.min_rerank_score}, threshold "
                f"{now.abstain_threshold}): declined {v['declined']:.3f}, wrong {v['wrong_declines']:.3f}, "
                f"answer F1 {v['answer_f1']:.1f}"
            )
        for src, v in today.items():
            gaps = [
                f"{g:.2f}" if g is not None else "-"
                for g in (v["median_gap_unanswerable"], v["median_gap_answerable"])
            ]
            print(
                f"{src}, before any rule: span F1 {v['span_f1']:.1f} if it never declined, median log P gap "
                f"{gaps[0]} unanswerable / {gaps[1]} answerable, greedy choice the abstention on "
                f"{v['model_declines_answerable']} of {v['answerable']} answerable"
            )
        for src, v in sources.items():
            print(
                f"{src}: {v['answerable']} answerable, {v['unanswerable']} unanswerable: declined "
                f"{v['declined']:.3f}, wrong {v['wrong_declines']:.3f}, answer F1 {v['answer_f1']:.1f} "
                f"(min_rerank_score {cut}, threshold {thr:.3f})"
            )
        sources = {"chosen": sources, "rag_toml": today}
    # the reader's rule decides the curve and the threshold: with [reader] decline_missing_names (the
    # default) a question naming what no passage names is declined whatever its gap
    primary = "gap_names" if args.names else "gap"
    points = curve(rows, primary)
    best = choose(points, args.max_wrong)
    other = choose(curve(rows, "gap" if args.names else "gap_names"), args.max_wrong)
    gate = [r for r in rows if r["missing_names"]]
    names_rule = {
        "in_reader": args.names,
        "alone_declined": sum(r["unanswerable"] for r in gate) / max(1, sum(r["unanswerable"] for r in rows)),
        "alone_wrong": sum(not r["unanswerable"] for r in gate)
        / max(1, sum(not r["unanswerable"] for r in rows)),
    }
    gap_only = best if not args.names else other
    with_names = best if args.names else other
    print(
        f"names rule alone: declined {names_rule['alone_declined']:.3f}, wrong {names_rule['alone_wrong']:.3f}\n"
        f"gap alone: threshold {gap_only['threshold']:.3f}, declined {gap_only['declined']:.3f}, wrong "
        f"{gap_only['wrong_declines']:.3f}, answer F1 {gap_only['answer_f1']:.1f}\n"
        f"gap or a missing name: threshold {with_names['threshold']:.3f}, declined {with_names['declined']:.3f}, "
        f"wrong {with_names['wrong_declines']:.3f}, answer F1 {with_names['answer_f1']:.1f}"
    )
    names_rule["gap_only"] = {
        k: gap_only[k] for k in ("threshold", "declined", "wrong_declines", "answer_f1")
    }
    for r in gate[:12]:
        print(
            f"  {'unanswerable' if r['unanswerable'] else 'ANSWERABLE  '} {by_id[r['id']].question!r}: {r['missing_names']}"
        )
    earlier = choose(curve(rows, "gap_cited"), args.max_wrong)
    print(
        f"the earlier rule (citation tokens counted), chosen the same way: threshold "
        f"{earlier['threshold']:.3f}, declined {earlier['declined']:.3f}, wrong {earlier['wrong_declines']:.3f}, "
        f"answer F1 {earlier['answer_f1']:.1f}"
    )
    own = [r for r in rows if r["model_declines"]]  # the alternative rule: decline when the model would
    n_un = sum(r["unanswerable"] for r in rows)
    model_rule = {
        "declined": sum(r["unanswerable"] for r in own) / max(n_un, 1),
        "wrong_declines": sum(not r["unanswerable"] for r in own) / max(len(rows) - n_un, 1),
    }
    print(
        f"the model's own greedy choice alone: declined {model_rule['declined']:.3f}, "
        f"wrong {model_rule['wrong_declines']:.3f}"
    )
    print(f"\n{'threshold':>10} {'declined':>9} {'precision':>10} {'wrong':>7} {'answer F1':>10}")
    step = max(1, len(points) // 25)
    for p in points[::step] + ([best] if best not in points[::step] else []):
        mark = "  <- chosen" if p is best else ""
        prec = "-" if p["precision"] is None else f"{p['precision']:.3f}"
        print(
            f"{p['threshold']:>10.3f} {p['declined']:>9.3f} {prec:>10} {p['wrong_declines']:>7.3f} "
            f"{p['answer_f1']:>10.1f}{mark}"
        )
    at0 = min(points, key=lambda p: abs(p["threshold"]))
    print(
        f"chosen threshold {best['threshold']:.3f} (at 0: declined {at0['declined']:.3f}, wrong {at0['wrong_declines']:.3f})"
    )
    write_result(
        args.out,
        "abstain",
        hw,
        {
            "limit": len(val),
            "seed": 0,
            "model": args.model,
            "adapter": args.adapter,
            "max_wrong": args.max_wrong,
            "near_misses": args.near_misses,
            "names": args.names,
            "docs": str(args.docs) if args.docs else None,
            "docs_limit": args.docs_limit if args.docs else None,
        },
        [{k: v for k, v in p.items()} for p in points if math.isfinite(p["threshold"])],
        # the headline figures: the (cut, threshold) pair when the reranker cut was chosen too, else the gap's
        summary={
            **({"min_rerank_score": evidence["min_rerank_score"]} if evidence else {}),
            "threshold": round((evidence or best)["threshold"], 3),
            "declined": round((evidence or best)["declined"], 3),
            "wrong_declines": round((evidence or best)["wrong_declines"], 3),
        },
        chosen=best,
        validation={
            "source": ds.source,
            "examples": len(val),
            "unanswerable": sum(r["unanswerable"] for r in rows),
        },
        reader=reader.reader,
        model_rule=model_rule,
        cited_rule={k: earlier[k] for k in ("threshold", "declined", "wrong_declines", "answer_f1")},
        names_rule=names_rule,
        rerank_rule=evidence,
        per_source=sources,
    )


def choose_pair(best_of: list[tuple[float, dict]], max_wrong: float) -> tuple[float, dict]:
    """The (score cut, best point at that cut) with the most declined - wrong declines among those within
    max_wrong; when a cut alone already costs more than that, its point breaks the budget and is not
    eligible (if none is within it, the pair with the fewest wrong declines).

    >>> p = lambda d, w: {"declined": d, "wrong_declines": w}
    >>> choose_pair([(-6.5, p(0.72, 0.047)), (0.5, p(0.88, 0.19))], 0.05)[0]
    -6.5
    >>> choose_pair([(-6.5, p(0.72, 0.06)), (0.5, p(0.88, 0.19))], 0.05)[0]
    -6.5
    """
    ok = [cp for cp in best_of if cp[1]["wrong_declines"] <= max_wrong]
    if not ok:
        return min(best_of, key=lambda cp: (cp[1]["wrong_declines"], -cp[1]["declined"]))
    return max(ok, key=lambda cp: (cp[1]["declined"] - cp[1]["wrong_declines"], -cp[0]))


def source(row: dict) -> str:
    return "docs" if row["id"].startswith("doc:") else "squadshifts"


def per_source(rows: list[dict], cut: float, threshold: float, names: bool) -> dict[str, dict]:
    """Each source's rates under one (min_rerank_score, threshold) pair."""
    out = {}
    gap = "gap_names" if names else "gap"
    for src in sorted({source(r) for r in rows}):
        rs = [r for r in rows if source(r) == src]
        dec = lambda r: r.get("rerank_best", math.inf) < cut or r[gap] > threshold or r[gap] == math.inf  # noqa: E731
        ans = [r for r in rs if not r["unanswerable"]]
        un = [r for r in rs if r["unanswerable"]]
        out[src] = {
            "answerable": len(ans),
            "unanswerable": len(un),
            "declined": sum(map(dec, un)) / max(1, len(un)),
            "wrong_declines": sum(map(dec, ans)) / max(1, len(ans)),
            "answer_f1": 100 * sum(0 if dec(r) else r["f1"] for r in ans) / max(1, len(ans)),
            **reader_profile(rs),
        }
    return out


def reader_profile(rows: list[dict]) -> dict:
    """What the reader does before any rule: span F1 on the answerable if it never declined, the median
    log P gap (abstention minus span) of each kind, and how often its greedy choice is the abstention.

    >>> rows = [{"unanswerable": False, "f1": 1.0, "gap": -3.0, "model_declines": False},
    ...         {"unanswerable": False, "f1": 0.5, "gap": -1.0, "model_declines": True},
    ...         {"unanswerable": True, "f1": 0.0, "gap": 2.0, "model_declines": True}]
    >>> reader_profile(rows)
    {'span_f1': 75.0, 'median_gap_answerable': -2.0, 'median_gap_unanswerable': 2.0, 'model_declines_answerable': 1}
    """
    ans = [r for r in rows if not r["unanswerable"]]
    un = [r for r in rows if r["unanswerable"]]
    med = lambda rs: statistics.median(r["gap"] for r in rs) if rs else None  # noqa: E731
    return {
        "span_f1": 100 * sum(r["f1"] for r in ans) / max(1, len(ans)),
        "median_gap_answerable": med(ans),
        "median_gap_unanswerable": med(un),
        "model_declines_answerable": sum(bool(r.get("model_declines")) for r in ans),
    }


def _trained_on(adapter: str | None, name: str) -> bool:
    """Whether the adapter's manifest (or any segment or parent it records) names the file `name`."""
    man = Path(adapter or "") / "rag_adapter.json"
    return bool(adapter) and man.is_file() and name in man.read_text()


def rerank_rule(rows: list[dict], val: list, args) -> dict:
    """[reader] min_rerank_score, chosen with the abstain threshold: each example's best passage score from
    the reranker (cached beside the rows), then every (score cut, gap threshold) pair scored as above. The
    names rule is in when args.names. Prints the best point per score cut; returns the chosen pair."""
    from indexing.onnx import RUNS
    from indexing.rerank import load_reranker, pair_text
    from rag.config import load_config

    rc = load_config().retrieval
    names = rc.rerank_names if args.rerank_names is None else args.rerank_names
    scorer = load_reranker(rc.reranker, max_tokens=rc.rerank_tokens)
    tag = f"{rc.reranker}/{rc.rerank_tokens}" + ("/names" if names else "") + f"/{RUNS}"
    cache = args.rows.with_name(args.rows.stem + "-rerank.jsonl")
    have = {}
    if cache.is_file():
        have = {r["id"]: r["best"] for r in map(json.loads, open(cache)) if r.get("reranker") == tag}
    by_id = {e.id: e for e in val}
    t0 = time.perf_counter()
    with open(cache, "a") as sink:
        for r in rows:
            if r["id"] not in have:
                e = by_id[r["id"]]
                texts = [pair_text(p.text, p.source if names else None) for p in e.passages]
                have[r["id"]] = max(scorer.score(e.question, texts))
                sink.write(json.dumps({"id": r["id"], "best": have[r["id"]], "reranker": tag}) + "\n")
            r["rerank_best"] = have[r["id"]]
    print(f"reranker scores of {len(rows)} examples' passages: {time.perf_counter() - t0:.0f} s ({tag})")
    base = "gap_names" if args.names else "gap"
    best_of: list[tuple[float, dict]] = []
    for cut in [-math.inf] + [x / 2 for x in range(-16, 9)]:
        for r in rows:
            r["gap_rerank"] = math.inf if r["rerank_best"] < cut else r[base]
        best_of.append((cut, choose(curve(rows, "gap_rerank"), args.max_wrong)))
    n_un = sum(r["unanswerable"] for r in rows)
    print(
        f"\n{'score cut':>10} {'gap thr':>8} {'declined':>9} {'wrong':>7} {'answer F1':>10}  (reranker cut alone)"
    )
    for cut, p in best_of:
        alone = [r for r in rows if r["rerank_best"] < cut]
        a_un = sum(r["unanswerable"] for r in alone) / max(1, n_un)
        a_wr = sum(not r["unanswerable"] for r in alone) / max(1, len(rows) - n_un)
        print(
            f"{cut:>10.1f} {p['threshold']:>8.3f} {p['declined']:>9.3f} {p['wrong_declines']:>7.3f} "
            f"{p['answer_f1']:>10.1f}  ({a_un:.3f} / {a_wr:.3f})"
        )
    cut, p = choose_pair(best_of, args.max_wrong)
    print(
        f"chosen: min_rerank_score {cut}, threshold {p['threshold']:.3f}: declined {p['declined']:.3f}, "
        f"wrong {p['wrong_declines']:.3f}, answer F1 {p['answer_f1']:.1f}"
    )
    return {
        "reranker": tag,
        "min_rerank_score": cut,
        **{k: p[k] for k in ("threshold", "declined", "wrong_declines", "answer_f1")},
        "per_cut": [
            {
                "min_rerank_score": c,
                **{k: q[k] for k in ("threshold", "declined", "wrong_declines", "answer_f1")},
            }
            for c, q in best_of
            if math.isfinite(c)
        ],
    }


if __name__ == "__main__":
    main()
