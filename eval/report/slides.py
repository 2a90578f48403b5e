"""The deck's content: Facts -> a list of Slides (and the PNG figures they show).

Rule: every number on a slide is read from Facts (the log, manifests, data files); prose around it
is fixed text. A value the sources lack prints as "not measured"; one that cannot exist for that row
(the parameters of the no-model baseline, recall@k when the gold paragraph is given) prints as "–".
Prose is English passed through `t` (eval/report/i18n.py), which gives the edition's wording of it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any, Callable

from eval.report import bench
from eval.report.facts import Facts
from eval.report.i18n import EN, LANGS, Lang
from eval.report.render import FONT, Slide, Table, table_fits
from rag.config import IndexConfig, ReaderConfig

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


def verdict(c: dict | None, t: Lang = EN) -> str:
    if not c or any(_bad(c.get(k)) for k in ("lo", "hi")):
        return NM
    if c["lo"] > 0:
        return t("a real gain")
    if c["hi"] < 0:
        return t("a real loss")
    return t("no clear difference at this sample size")


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


def experiments_table(rows: list[dict], setting: dict, t: Lang = EN) -> Table:
    """The experiments slide's table: one row per log row, cells formatted by EXPERIMENT_COLUMNS."""
    header = [t(h).replace("@k", f"@{setting.get('k') or 'k'}") for h, _ in EXPERIMENT_COLUMNS]
    return Table(header, [[fn(r, setting) for _, fn in EXPERIMENT_COLUMNS] for r in rows])


# ---------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.family": FONT, "font.size": 11, "axes.spines.top": False, "axes.spines.right": False}
    )
    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=200, bbox_inches="tight", pad_inches=0.05)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _unit(unit: str, t: Lang = EN) -> str:
    """A passage-length unit: "words", or "<embedder> tokens"."""
    if unit.endswith(" tokens"):
        return t("{embedder} tokens", embedder=unit.removesuffix(" tokens"))
    return t("words") if unit == "words" else unit


def fig_lengths(lengths: dict[str, list[int]], corpus: dict, path: Path, t: Lang = EN) -> Path | None:
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
        ax.set_title(t("Gold answer length (SQuAD dev, n={n})", n=f"{len(answers):,}"), fontsize=11)
        ax.set_xlabel(t("words (first gold answer; >30 not shown)"))
    ax.set_ylabel(t("questions"))
    ax = axes[1]
    if passage_key:
        vals = lengths[passage_key]
        unit = passage_key.split(":", 1)[1]
        ax.hist(vals, bins=40, color="#27ae60", edgecolor="white")
        ax.set_title(t("Passage length (corpus/, n={n})", n=f"{len(vals):,}"), fontsize=11)
        ax.set_xlabel(_unit(unit, t))
        lim = ((corpus.get("index") or {}).get("embedder") or {}).get("max_tokens")
        if lim and "tokens" in unit:
            ax.axvline(lim, color="#c0392b", ls="--", lw=1.2)
            ax.text(
                lim,
                ax.get_ylim()[1] * 0.95,
                " " + t("embedder limit {lim}", lim=lim),
                color="#c0392b",
                fontsize=9,
                va="top",
            )
    ax.set_ylabel(t("paragraphs"))
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
    ax.set_title(t("Question length"), fontsize=11)
    ax.set_xlabel(t("words"))
    ax.set_ylabel(t("share of questions"))
    if questions:
        ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _bench_recall(f: Facts) -> dict[str, dict]:
    """recall@k curves of benchmarks/results/retrieval.json without reranking, for the deck's embedder:
    its `rows` (one per system), or the older `modes` block (mode -> measures, `questions` at the top)."""
    d = f.benchmarks.get("retrieval") or {}
    if isinstance(d.get("modes"), dict):
        return {m: {"questions": d.get("questions"), **v} for m, v in sorted(d["modes"].items())}
    emb = _embedder(f)
    return {
        r["system"]: r
        for r in d.get("rows") or []
        if isinstance(r, dict)
        and isinstance(r.get("system"), str)
        and "rerank" not in r["system"]
        and r.get("embedder") in (emb, None)
    }


def fig_quality_cost(rows: list[dict], facts: Facts, path: Path, t: Lang = EN) -> Path | None:
    plt = _plt()
    pts = [r for r in rows if not _bad(r.get("f1")) and not _bad(r.get("latency_p50_s"))]
    bench = _bench_recall(facts)
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
    a1.set_xlabel(t("answer latency p50, s (log scale)"))
    a1.set_ylabel("F1")
    a1.set_title(t("Quality against latency"), fontsize=11)
    a1.grid(alpha=0.3)
    if not pts:
        a1.text(0.5, 0.5, t.tokens(NM), ha="center", transform=a1.transAxes, color="#777777")
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
            label=t("{mode} (eval run, n={n})", mode=retr.get("mode"), n=retr.get("retrieval_n")),
        )
    for (mode, m), c in zip(bench.items(), ["#2e86c1", "#27ae60", "#8e44ad"]):
        kk = [k for k in ks if f"recall@{k}" in m]
        a2.plot(
            kk,
            [m[f"recall@{k}"] for k in kk],
            "s--",
            color=c,
            lw=1,
            ms=4,
            label=t("{mode} (benchmark, n={n})", mode=mode, n=text(m.get("questions"))),
        )
    a2.set_xlabel(t("k (passages retrieved)"))
    a2.set_ylabel(t("recall@k (gold paragraph in top k)"))
    a2.set_title(t("Retrieval recall@k"), fontsize=11)
    a2.set_xticks(ks)
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    if retr is not None or bench:
        a2.legend(fontsize=7.5, frameon=False, loc="lower right")
    else:
        a2.text(0.5, 0.5, t.tokens(NM), ha="center", transform=a2.transAxes, color="#777777")
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


def fig_training(adapters: dict[str, dict], path: Path, t: Lang = EN) -> Path | None:
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
            a1.plot(
                xs, _smooth(ys, max(1, len(ys) // 20)), color=col, lw=1.6, label=t("{name} train", name=name)
            )
        va = c.get("val_loss") or []
        if va:
            a1.plot(
                [p[0] for p in va],
                [p[1] for p in va],
                "o--",
                color=col,
                ms=4,
                lw=1.2,
                label=t("{name} val", name=name),
            )
        ev = [e for e in adapters[name].get("evals") or [] if not _bad(e.get("f1"))]
        if ev:
            a2.plot([e["step"] for e in ev], [e["f1"] for e in ev], "o-", color=col, ms=4, label=name)
    a1.set_xlabel(t("optimizer step"))
    a1.set_ylabel(t("loss (answer tokens)"))
    a1.set_title(t("Training and validation loss"), fontsize=11)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=7.5, frameon=False)
    a2.set_xlabel(t("optimizer step"))
    a2.set_ylabel(t("validation F1"))
    a2.set_title(t("Validation F1 (step 0 = untuned)"), fontsize=11)
    a2.grid(alpha=0.3)
    if a2.lines:
        a2.legend(fontsize=7.5, frameon=False)
    else:
        a2.text(0.5, 0.5, t.tokens(NM), ha="center", transform=a2.transAxes, color="#777777")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- slide builders
_MODEL_WHY = {
    "bge-small": "small English embedder, int8 ONNX, fast on a CPU; fused with BM25 (hybrid) for exact "
    "terms; its recall against MiniLM is on the benchmark slide",
    "minilm": "small sentence embedder that runs fast on a CPU; fused with BM25 (hybrid) for exact terms",
    "smollm2-135m": "smallest instruct model in the offline store: fastest answers",
    "qwen2.5-0.5b": "stronger instruct reader at a higher latency and memory cost",
    "gemma3-270m": "a base (not instruct) model: does LoRA alone teach the answer format?",
    "qwen2.5-1.5b": "largest model in the store; used only as the faithfulness and relevance judge",
}
# which ones are the defaults comes from the config, so the deck cannot name the wrong one
DEFAULTS = {ReaderConfig.model: "the default reader", IndexConfig.embedder: "the default embedder"}


def _why(name: str, t: Lang = EN) -> str:
    why = t(_MODEL_WHY[name]) if name in _MODEL_WHY else t("user-supplied model")
    return why + ("; " + t(DEFAULTS[name]) if name in DEFAULTS and name in _MODEL_WHY else "")


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


def _embedder(f: Facts) -> str:
    """The index's embedder, or the default one when no index was read."""
    return ((f.corpus.get("index") or {}).get("embedder") or {}).get("name") or IndexConfig.embedder


def _headline(rows: list[dict]) -> dict | None:
    cands = [r for r in rows if not r.get("oracle") and not _bad(r.get("correct_cited"))]
    return max(cands, key=lambda r: r["correct_cited"]) if cands else None


def _setting_line(s: dict, t: Lang = EN) -> str:
    """How the run was set up, e.g. "test set bundled: 40 of its 12,665 questions (seed 0), 33 answerable..."."""
    size = (
        t(
            "{n} of its {total} questions (seed {seed})",
            n=count(s.get("n_questions")),
            total=count(s.get("n_testset")),
            seed=s.get("seed"),
        )
        if s.get("limit")
        else t("{total} questions", total=count(s.get("n_testset")))
    )
    return t(
        "test set {testset}: {size}, {ans} answerable and {unans} unanswerable; top-{k} {mode} retrieval",
        testset=s.get("testset"),
        size=size,
        ans=count(s.get("n_answerable")),
        unans=count(s.get("n_unanswerable")),
        k=s.get("k"),
        mode=s.get("mode"),
    )


def _source_note(s: dict, t: Lang = EN) -> str:
    when = s["times"][-1][:10] if s.get("times") else t("unknown date")
    commit = ", ".join(s.get("git_commits") or []) or t("unknown commit")
    return t(
        "Experiments log, run(s) {runs} ({when}, commit {commit})",
        runs=", ".join(s.get("run_ids") or []) or "?",
        when=when,
        commit=commit,
    )


def slide_title(f: Facts, t: Lang = EN) -> Slide:
    s = f.selection.setting
    h = _headline(f.selection.rows)
    if h is None:
        one = t("The one number (answered correctly with a valid citation): not measured.")
    else:
        dec = (
            t("; it declined {pct}% of the unanswerable ones", pct=num(h.get("declined")))
            if h.get("n_unanswerable")
            else ""
        )
        one = t(
            "The one number: {system} answered {pct}% of answerable questions correctly with a citation "
            "to a passage that holds the answer{declined} (n = {n}).",
            system=h["system"],
            pct=num(h["correct_cited"]),
            declined=dec,
            n=count(s.get("n_questions")),
        )
    return Slide(
        t("rag: answers with sources from your own documents"),
        subtitle=t("Offline, CPU-only question answering with a small LoRA-tuned reader"),
        bullets=[
            t(
                "Task: answer a question from a private document collection, citing the passages the answer "
                "came from, and decline when the documents do not say; on a laptop CPU, without network."
            ),
            t(
                "Who it helps: anyone who looks things up in their own documents (support staff, analysts, "
                "students, engineers reading manuals)."
            ),
            "  "
            + t(
                "Time saved: one short answer with its source to check, instead of a list of search results "
                "to read."
            ),
            "  "
            + t(
                "Trust: every claim points at a passage; an unsupported answer is flagged; a question the "
                "documents do not answer is declined."
            ),
            t(
                "How: `rag index` ({embedder} embeddings + BM25), `rag ask` (retrieve top-k, a small LLM reads "
                "and cites), `rag finetune` (LoRA on grounded QA), `rag eval`, `rag report` (this deck).",
                embedder=_embedder(f),
            ),
            one,
        ],
        footnote=_source_note(s, t) + t("; generated by `rag report`."),
    )


def slide_data(f: Facts, t: Lang = EN) -> Slide:
    c, s = f.corpus, f.selection.setting
    idx = c.get("index") or {}
    chunking = idx.get("chunking") or {}
    emb = idx.get("embedder") or {}
    if idx:
        index_line = t(
            "Index: {chunks} chunks from {files} files, {tokens}-token chunks with {overlap} overlap, "
            "embedder {embedder} ({dim}-d), {dense} FAISS index + BM25.",
            chunks=count(idx.get("chunks")),
            files=count(idx.get("files")),
            tokens=chunking.get("chunk_tokens", NM),
            overlap=chunking.get("chunk_overlap", NM),
            embedder=emb.get("name", NM),
            dim=emb.get("dim", NM),
            dense=idx.get("dense", NM),
        )
    else:
        index_line = t("Index chunks: not measured (no index found; `rag index corpus/` builds one).")
    tok = (
        t(", {n} {tokenizer} tokens", n=count(c.get("tokens")), tokenizer=c.get("tokenizer"))
        if c.get("tokens")
        else t(", tokens: not measured")
    )
    docs = t(
        "{docs} documents, {paras} paragraphs",
        docs=count(c.get("documents")),
        paras=count(c.get("paragraphs")),
    )
    bullets = [
        t(
            "Corpus: {docs}, {chars} characters, {words} words{tokens}.",
            docs=docs,
            chars=count(c.get("characters")),
            words=count(c.get("words")),
            tokens=tok,
        ),
        index_line,
        t("Evaluated on the {setting}.", setting=_setting_line(s, t)),
    ]
    rows = [
        [
            t("corpus/ (Wikipedia articles)"),
            t("documents to search"),
            docs,
            t("SQuAD v1.1 dev passages, via bigbench 1.0.0"),
            "CC BY-SA 4.0",
        ]
    ]
    order = list(TESTSET_INFO)
    for stem, ts in sorted(
        f.testsets.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])
    ):
        name, role, src, lic = TESTSET_INFO.get(stem, (ts["file"], "test", "user-supplied", NM))
        size = t(
            "{n} questions on {paras} paragraphs", n=count(ts["questions"]), paras=count(ts["paragraphs"])
        )
        if ts.get("answers_per_question"):
            size += t(", {n} gold answers each", n=ts["answers_per_question"])
        known = stem in TESTSET_INFO
        rows.append([t(name) if known else name, t(role), size, t(src), lic])
    if f.adapters:
        for label, m in f.adapters.items():
            d = m.get("data") or {}
            cnt = d.get("counts") or {}
            src = str(d.get("source") or NM)
            size = t(
                "{train} train / {val} validation examples ({abstain} train targets are abstentions)",
                train=count(cnt.get("train_examples")),
                val=count(cnt.get("val_examples")),
                abstain=count(cnt.get("train_abstain")),
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
                    t("training ({label} adapter)", label=label),
                    size,
                    t("Miller et al. 2020, via bigbench 1.0.0")
                    if src.startswith("squadshifts")
                    else t("user-supplied"),
                    lic,
                ]
            )
    else:
        rows.append([t("fine-tuning data"), t("training"), NM + t(" (no adapter manifest)"), NM, NM])
    header = ["data", "used for", "size (counted from the files)", "source", "license"]
    return Slide(
        t("Data: what the system reads and is tested on"),
        bullets=bullets,
        table=Table([t(h) for h in header], rows),
        footnote=t(
            "Counts: corpus/*.txt, eval/data/*.jsonl, the index manifest and adapter manifests "
            "(rag/adapters/*/rag_adapter.json), read when this deck was built."
        ),
    )


def _pctl(vals: list[int], q: float) -> float:
    v = sorted(vals)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def slide_lengths(f: Facts, figdir: Path, t: Lang = EN) -> Slide:
    img = fig_lengths(f.lengths, f.corpus, figdir / "lengths.png", t)
    bullets = []
    ans = next((v for k, v in f.lengths.items() if k.startswith("answer_words:")), None)
    if ans:
        bullets.append(
            t(
                "Gold answers are short: median {median} words, 90% at most {p90}: a reader should extract "
                "a span, not write prose.",
                median=f"{statistics.median(ans):g}",
                p90=f"{_pctl(ans, 0.9):g}",
            )
        )
    pk = next((k for k in f.lengths if k.startswith("passage:")), None)
    if pk:
        vals = f.lengths[pk]
        unit = pk.split(":", 1)[1]
        lim = ((f.corpus.get("index") or {}).get("embedder") or {}).get("max_tokens")
        over = (
            t(
                "; {pct}% exceed the embedder's {lim}-token limit, hence chunking",
                pct=f"{100 * sum(v > lim for v in vals) / len(vals):.1f}",
                lim=lim,
            )
            if lim and "tokens" in unit
            else ""
        )
        bullets.append(
            t(
                "Passages: median {median} {unit}, 90% at most {p90}{over}.",
                median=f"{statistics.median(vals):g}",
                unit=_unit(unit, t),
                p90=f"{_pctl(vals, 0.9):g}",
                over=over,
            )
        )
    qs = {k.split(":", 1)[1]: v for k, v in f.lengths.items() if k.startswith("question_words:") and v}
    if len(qs) > 1:
        med = {k: statistics.median(v) for k, v in sorted(qs.items())}
        longer = "disfl_qa" in med and "squad_dev" in med and med["disfl_qa"] > med["squad_dev"]
        bullets.append(
            t("Question length, median words: ")
            + ", ".join(f"{k} {v:g}" for k, v in med.items())
            + (t(" (disfluent questions run longer).") if longer else ".")
        )
    if img is None:
        bullets.append(t("Length histograms: not measured (no data files found)."))
    return Slide(
        t("Data: answer, passage and question lengths"),
        bullets=bullets,
        image=img,
        footnote=t("Histograms of every row of eval/data/*.jsonl and every paragraph of corpus/*.txt."),
    )


def slide_no_llm(f: Facts, t: Lang = EN) -> Slide:
    rows = f.selection.rows
    by = {r["system"]: r for r in rows}
    ext, ext_g = by.get("extractive"), by.get("extractive@gold")
    llm = [r for r in rows if _llm(r)]
    bullets = [
        t(
            "Extractive baseline (no LLM): return the sentence of the top passage that best matches the "
            "question, citing it. Instant, but it answers with a whole sentence, and cannot tell when the "
            "passages do not hold the answer."
        )
    ]
    for oracle, base in ((False, ext), (True, ext_g)):
        cands = [r for r in llm if bool(r.get("oracle")) == oracle and not _bad(r.get("f1"))]
        if base is None or not cands:
            continue
        best = max(cands, key=lambda r: r["f1"])
        c = comparison(best, base["system"])
        bullets.append(
            t(
                "{where}: extractive F1 {base}, best reader {system} F1 {f1}; difference {ci}: {verdict}.",
                where=t("gold paragraph given") if oracle else t("retrieved passages"),
                base=num(base.get("f1")),
                system=best["system"],
                f1=num(best["f1"]),
                ci=ci(c),
                verdict=verdict(c, t),
            )
        )
    if ext is None and ext_g is None:
        bullets.append(t("Extractive baseline: not measured in this run (add `--systems extractive`)."))
    elif not llm:
        bullets.append(t("LLM readers: not measured in this run (add e.g. `--systems smollm2-135m+tuned`)."))
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
    header = [t(h) for h in header]
    trows = []
    for r in rows:
        base = "extractive@gold" if r.get("oracle") else "extractive"
        vs = NA if not _llm(r) else ci(comparison(r, base))
        trows.append(
            [
                r["system"],
                t("gold paragraph") if r.get("oracle") else t("top-{k} retrieved", k=r.get("k")),
                num(r.get("em")),
                num(r.get("f1")),
                num(r.get("correct_cited")),
                _declined(r, {}),
                num(r.get("wrong_abstain_rate"), 1, 100),
                vs,
            ]
        )
    return Slide(
        t("Can it be done without an LLM?"),
        bullets=bullets,
        table=Table(header, trows),
        footnote=_source_note(f.selection.setting, t) + t(". CIs: paired bootstrap over the same questions."),
    )


def slide_metrics(f: Facts, t: Lang = EN) -> Slide:
    h = _headline(f.selection.rows)
    one = (
        t(
            "{system}: {pct}% answered correctly with a valid citation",
            system=h["system"],
            pct=num(h["correct_cited"]),
        )
        + (
            t(", {pct}% of unanswerable questions declined", pct=num(h.get("declined")))
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
        t("Metrics, and why these"),
        bullets=[t("The one number a person understands: {one}.", one=one)],
        table=Table([t("metric"), t("definition"), t("why")], [[t(c) for c in r] for r in rows]),
        footnote=t("Definitions as implemented in eval/metrics.py and eval/judge.py."),
    )


def slide_models(f: Facts, t: Lang = EN) -> Slide:
    rows_log = f.selection.rows
    names: list[str] = [_embedder(f)]
    for r in rows_log:
        if _llm(r) and r.get("model") and r["model"] not in names:
            names.append(str(r["model"]))
    judges = sorted({r["judge"] for r in rows_log if r.get("judge")})
    names += [j for j in judges if j not in names]
    trows = (
        [
            [
                t("extractive baseline"),
                t("reader (no model)"),
                NA,
                NA,
                t("tells whether an LLM is needed at all"),
            ]
        ]
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
                t(role),
                text(lrow.get("params") or m.get("params")),
                text(lrow.get("quantization") or m.get("quantization")),
                _why(n, t),
            ]
        )
    bullets = [
        t(
            "Chosen for a 2-core CPU with no network: every model comes from a pinned wheel of a package "
            "registry (sha256-checked), converted once to bf16; a reader must answer in seconds."
        )
    ]
    if f.adapters:
        bullets.append(t("LoRA adapters trained for: {names} (next slide).", names=", ".join(f.adapters)))
    else:
        bullets.append(
            t("LoRA adapters: not measured (no adapter manifest found; `rag finetune` writes one).")
        )
    header = ["model (upstream)", "role", "parameters", "quantization of the source file", "why"]
    return Slide(
        t("Models, and why these"),
        bullets=bullets,
        table=Table([t(h) for h in header], trows),
        footnote=t(
            "Parameters and quantization: the experiments log and the model store (assets/presets.py)."
        ),
    )


def slide_adapters(f: Facts, t: Lang = EN) -> Slide:
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
    header = [t(h) for h in header]
    rows, soups = [], False
    for label, m in f.adapters.items():
        hp, tr, fin, un = (
            m.get("hyperparameters") or {},
            m.get("training") or {},
            m.get("final") or {},
            m.get("untuned") or {},
        )
        if m.get("soup"):  # a weighted average of two adapters: no steps, speed or validation of its own
            soups = True
            parts = " + ".join(
                f"{num(p.get('share'), 2)} × {Path(str(p.get('folder') or '?')).name}"
                for p in m["soup"].get("parents") or []
            )
            rows.append(
                [
                    label,
                    f"{text(hp.get('rank'))} / {text(hp.get('alpha'))}",
                    t("soup: {parts}", parts=parts),
                    count(tr.get("examples_seen")),
                    num(tr.get("train_time_s"), 0, 1 / 60),
                    "–",
                    "–",
                    "–",
                    "–",
                ]
            )
            continue
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
            t("Fine-tuning: LoRA adapters"),
            bullets=[
                t(
                    "Training time, tokens/s and validation quality: not measured (no rag_adapter.json found "
                    "under rag/adapters/ or in the log's adapter folders; `rag finetune` writes one)."
                )
            ],
        )
    m0 = next(iter(f.adapters.values()))
    dc = (m0.get("data") or {}).get("config") or {}
    hp = m0.get("hyperparameters") or {}
    recipe = (
        t(
            "Data (RAFT-style): the gold passage among {lo}-{hi} retrieved distractors in shuffled positions; "
            "for {pct}% of examples the gold is present, otherwise the target is the abstention; validation "
            "split by article.",
            lo=text(dc.get("min_distractors")),
            hi=text(dc.get("distractors")),
            pct=num(dc.get("p_gold"), 0, 100),
        )
        if dc
        else t("Data recipe: not recorded in the manifest.")
    )
    train = t(
        "Training: LoRA on {modules} layers, lr {lr}, batch {batch}, loss on answer tokens only, bf16 weights "
        "on CPU, early stopping on validation loss; the adapter kept is the best by validation loss.",
        modules=text(hp.get("target_modules")),
        lr=text(hp.get("lr")),
        batch=text(hp.get("batch_size")),
    )
    return Slide(
        t("Fine-tuning: LoRA adapters"),
        bullets=[recipe, train],
        table=Table(header, rows),
        footnote=t(
            "From each adapter's rag_adapter.json (written by `rag finetune`); validation EM/F1 on its "
            "held-out slice, with retrieved distractors."
        )
        + (
            t(
                " A soup (python -m finetune.soup) is the weighted average of its parents' weight deltas: "
                "it has no training of its own; its examples and minutes are those of every segment "
                "behind it, and its validation is measured by benchmarks/bench_abstain.py."
            )
            if soups
            else ""
        ),
    )


def slide_experiments(f: Facts, t: Lang = EN) -> Slide:
    s = f.selection.setting
    other = (
        t(" The log holds {n} other setting(s), not shown.", n=f.selection.other_settings)
        if f.selection.other_settings
        else ""
    )
    return Slide(
        t("Experiments"),
        table=experiments_table(f.selection.rows, s, t),
        footnote=t(
            "{source}: {setting}. @gold = gold paragraph given instead of retrieval. Quantization of the "
            "source file (weights run in bf16). – = does not apply; not measured = the run did not record "
            "it.{other}",
            source=_source_note(s, t),
            setting=_setting_line(s, t),
            other=other,
        ),
    )


def slide_quality_cost(f: Facts, figdir: Path, t: Lang = EN) -> Slide:
    rows = f.selection.rows
    img = fig_quality_cost(rows, f, figdir / "quality_cost.png", t)
    bullets = []
    llm = [r for r in rows if _llm(r) and not r.get("oracle") and not _bad(r.get("latency_p50_s"))]
    if llm:
        fast = min(llm, key=lambda r: r["latency_p50_s"])
        best = max(llm, key=lambda r: r.get("f1") or -1)
        bullets.append(
            t(
                "Fastest reader: {system}, p50 {p50} s, F1 {f1}.",
                system=fast["system"],
                p50=secs(fast["latency_p50_s"]),
                f1=num(fast.get("f1")),
            )
        )
        if best is not fast:
            bullets.append(
                t(
                    "Best F1: {system}, {f1} at p50 {p50} s.",
                    system=best["system"],
                    f1=num(best.get("f1")),
                    p50=secs(best["latency_p50_s"]),
                )
            )
        bullets.append(
            t("Peak RAM: ")
            + ", ".join(
                t("{system} {mb} MB", system=r["system"], mb=num(r.get("peak_ram_mb"), 0)) for r in llm
            )
            + "."
        )
    else:
        bullets.append(t("Reader latency: not measured (no LLM reader in the log)."))
    retr = next((r for r in rows if not r.get("oracle") and not _bad(r.get("recall_at_k"))), None)
    if retr:
        bullets.append(
            t(
                "Retrieval: the gold paragraph is in the top {k} for {pct}% of answerable questions (MRR@10 "
                "{mrr}); p50 {p50} s per query.",
                k=retr.get("k"),
                pct=num(retr["recall_at_k"], 1, 100),
                mrr=num(retr.get("mrr_at_10"), 2),
                p50=secs(retr.get("retrieval_p50_s")),
            )
        )
    return Slide(
        t("Quality against cost; retrieval recall@k"),
        bullets=bullets,
        image=img,
        footnote=_source_note(f.selection.setting, t)
        + (t("; dashed: benchmarks/results/retrieval.json") if _bench_recall(f) else "")
        + t(". Circles: retrieved passages; squares: gold paragraph given."),
    )


def slide_training(f: Facts, figdir: Path, t: Lang = EN) -> Slide:
    img = fig_training(f.adapters, figdir / "training.png", t)
    bullets = []
    for label, m in f.adapters.items():
        tr, fin, un = m.get("training") or {}, m.get("final") or {}, m.get("untuned") or {}
        bullets.append(
            t(
                "{label}: {steps} steps in {minutes} min ({tps} tokens/s, padding {pad}%); validation F1 "
                "{f1_0} → {f1}, best step {best}.",
                label=label,
                steps=text(tr.get("steps")),
                minutes=num(tr.get("train_time_s"), 0, 1 / 60),
                tps=num(tr.get("tokens_per_s"), 0),
                pad=num(tr.get("padding_fraction"), 1, 100),
                f1_0=num(un.get("f1")),
                f1=num(fin.get("f1")),
                best=text(tr.get("best_step")),
            )
        )
    if img is None:
        bullets = [
            t("Training and validation loss curves: not measured (no adapter manifest with curves found).")
        ]
    return Slide(
        t("Training and validation curves"),
        bullets=bullets,
        image=img,
        footnote=t(
            "curves.train_loss / curves.val_loss / evals in each adapter's rag_adapter.json; faint: per step, "
            "bold: moving average."
        ),
    )


BENCH_HEADER = ["benchmark (script)", "measured", "CPU", "date"]
BENCH_MIN_FONT = 10  # points: below this the benchmark table goes on over another slide


def benchmark_slides(f: Facts, t: Lang = EN) -> list[Slide]:
    """The engineering benchmarks: one table row per benchmarks/results/*.json, over as many slides as
    keep the table legible; each slide's bullets spell out the CPUs its rows ran on."""
    title = t("Engineering benchmarks")
    note_en = (
        []
        if bench.abstain_points(f.benchmarks.get("abstain"))
        else [
            "Abstention threshold curve: not measured (no usable benchmarks/results/abstain.json; "
            "`python benchmarks/bench_abstain.py` writes it)."
        ]
    )
    note = [t(n) for n in note_en]
    rows, cpus = bench.table_rows(f.benchmarks, t)
    if not rows:
        return [
            Slide(
                title,
                bullets=[
                    t(
                        "Indexing, retrieval, ask and training benchmarks: not measured (no "
                        "benchmarks/results/*.json; run `python benchmarks/bench_*.py`)."
                    ),
                    *note,
                ],
            )
        ]
    foot_en = (
        "benchmarks/results/*.json, read when this deck was built; each file's command field says how it "
        "ran. CPU: the letter of the line above the table, as the file recorded it."
    )

    def pager(lang: Lang, rows: list[list[str]], cpus: dict[str, str]) -> Callable[[int, int, bool], Slide]:
        def page(a: int, b: int, first: bool) -> Slide:
            used = sorted({r[2] for r in rows[a:b]})
            return Slide(
                lang("Engineering benchmarks"),
                bullets=[lang("CPU {letter}: {line}", letter=k, line=cpus[k]) for k in used]
                + ([lang(n) for n in note_en] if first else []),
                table=Table([lang(h) for h in BENCH_HEADER], rows[a:b], align="llcc"),
                footnote=lang(foot_en),
            )

        return page

    # the rows per slide are chosen for every edition at once, so the English and Russian decks have the
    # same slides (the longer Russian text may need more of them)
    pages_of = [pager(t, rows, cpus)]
    for code in LANGS:
        other = Lang(code)
        if other.code != t.code:
            pages_of.append(pager(other, *bench.table_rows(f.benchmarks, other)))

    def fits(a: int, b: int, first: bool) -> bool:
        return all(table_fits(page(a, b, first), BENCH_MIN_FONT) for page in pages_of)

    sizes: list[int] = [0]  # rows per slide, filled greedily
    for i in range(len(rows)):
        start = sum(sizes[:-1])
        if sizes[-1] and not fits(start, i + 1, len(sizes) == 1):
            sizes.append(0)
        sizes[-1] += 1
    even = [len(rows) // len(sizes) + (i < len(rows) % len(sizes)) for i in range(len(sizes))]
    cuts = [sum(even[:i]) for i in range(len(even) + 1)]
    if all(fits(a, b, i == 0) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))):
        sizes = even  # as many slides, rows spread evenly over them
    cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    pages = [pages_of[0](a, b, i == 0) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    if len(pages) > 1:
        pages = [dataclasses.replace(p, title=f"{title} ({i}/{len(pages)})") for i, p in enumerate(pages, 1)]
    return pages


def slide_abstain(f: Facts, figdir: Path, t: Lang = EN) -> Slide | None:
    """The abstention threshold's curves from benchmarks/results/abstain.json; None when it is missing
    (the benchmark slide says so)."""
    d = f.benchmarks.get("abstain")
    if not bench.abstain_points(d):
        return None
    img = bench.fig_abstain(d, figdir / "abstain.png", _plt(), t)
    c, v, r, s = (
        d.get(k) if isinstance(d.get(k), dict) else {} for k in ("chosen", "validation", "reader", "settings")
    )
    bullets = [
        t(
            "The span reader declines when the abstention sentence is likelier than its best answer span by "
            "more than a threshold (a gap in log-probability); each threshold was scored on held-out "
            "validation examples of the fine-tuning sources, never on the test sets."
        ),
        t(
            "Chosen threshold {thr}: {declined}% of unanswerable examples declined (recall), {prec}% of "
            "declines right (precision), {wrong}% of answerable ones wrongly declined; answer F1 {f1}.",
            thr=num(c.get("threshold"), 2),
            declined=num(c.get("declined"), 1, 100),
            prec=num(c.get("precision"), 1, 100),
            wrong=num(c.get("wrong_declines"), 1, 100),
            f1=num(c.get("answer_f1")),
        ),
    ]
    if not _bad(s.get("max_wrong")):
        bullets.append(
            t(
                "Rule: the threshold with the most declined minus wrongly declined, wrong declines at most "
                "{cap}%.",
                cap=num(s["max_wrong"], 0, 100),
            )
        )
    bullets.append(
        t(
            "Validation: {n} examples ({unans} unanswerable) from {source}; reader {model}{lora}, {decoding} "
            "decoding.",
            n=count(v.get("examples")),
            unans=count(v.get("unanswerable")),
            source=text(v.get("source")),
            model=text(r.get("model") or s.get("model")),
            lora=" + LoRA" if r.get("adapter") else "",
            decoding=text(r.get("decoding")),
        )
    )
    rule = d.get("model_rule") if isinstance(d.get("model_rule"), dict) else {}
    if not _bad(rule.get("declined")):
        bullets.append(
            t(
                "The model's own greedy choice alone (purple): {declined}% declined at {wrong}% wrong.",
                declined=num(rule.get("declined"), 1, 100),
                wrong=num(rule.get("wrong_declines"), 1, 100),
            )
        )
    return Slide(
        t("Declining: choosing the abstention threshold"),
        bullets=bullets,
        image=img,
        footnote=t(
            "benchmarks/results/abstain.json ({script}, {date}); CPU: {cpu}.",
            script=bench.script("abstain", d),
            date=bench.date(d) or NM,
            cpu=bench.cpu_line(d, t),
        ),
    )


def _diff_note(r: dict, base: str, t: Lang = EN) -> str:
    c = comparison(r, base)
    return t(" (difference {ci})", ci=ci(c)) + _sample_note(c, t) if c else ""


def _sample_note(c: dict | None, t: Lang = EN) -> str:
    """For a comparison taken from a smaller nested run (facts._borrow_comparisons): where it is from."""
    if not c or not c.get("sample"):
        return ""
    return t(
        " (paired on {n} answerable questions of a nested {sample}-question run)",
        n=count(c.get("n")),
        sample=count(c["sample"]),
    )


def slide_conclusions(f: Facts, t: Lang = EN) -> Slide:
    rows = f.selection.rows
    by = {r["system"]: r for r in rows}
    retrieved = [r for r in rows if not r.get("oracle") and not _bad(r.get("f1"))]
    best = max(retrieved, key=lambda r: r["f1"]) if retrieved else None
    out = [
        *_quality_lines(rows, by, best, t),
        *_tuning_lines(rows, by, t),
        *_retrieval_vs_reading_lines(rows, by, t),
        *_cost_lines(best, t),
        *_declining_lines(rows, t),
        *_judge_lines(rows, t),
    ]
    return Slide(
        t("Conclusions: what the measurements say"),
        bullets=out,
        footnote=_source_note(f.selection.setting, t) + t("; every number on this slide is read from it."),
    )


def _quality_lines(rows: list[dict], by: dict[str, dict], best: dict | None, t: Lang = EN) -> list[str]:
    """The best system on retrieved passages, and the LLMs that did not beat the extractive baseline."""
    out: list[str] = []
    if best is not None:
        out.append(
            t(
                "Best on retrieved passages: {system}, F1 {f1}, EM {em}, correct + cited {cc}%.",
                system=best["system"],
                f1=num(best["f1"]),
                em=num(best.get("em")),
                cc=num(best.get("correct_cited")),
            )
        )
        if _llm(best) and "extractive" in by:
            c = comparison(best, "extractive")
            out.append(
                "  "
                + t("Against the extractive baseline: F1 {ci}: {verdict}.", ci=ci(c), verdict=verdict(c, t))
            )
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
            out.append(
                t(
                    "Did not beat the extractive baseline {where} (F1 {f1}): {systems}.",
                    where=t("with the gold paragraph") if oracle else t("on retrieved passages"),
                    f1=num(base.get("f1")),
                    systems=", ".join(
                        f"{r['system']} {num(r['f1'])}{_diff_note(r, base['system'], t)}" for r in worse
                    ),
                )
            )
    return out


def _tuning_lines(rows: list[dict], by: dict[str, dict], t: Lang = EN) -> list[str]:
    """Each LoRA-tuned reader against its untuned base, with the paired CI."""
    out: list[str] = []
    tuned = [r for r in rows if _tuned(r)]
    for r in tuned:
        base = str(r.get("model")) + ("@gold" if r.get("oracle") else "")
        c = comparison(r, base)
        if c is None and base not in by:
            if r.get("oracle"):
                continue  # the default systems run only the best variant with the gold paragraph
            out.append(
                t(
                    "LoRA tuning, {system} vs {base}: not measured ({base} is not in this run).",
                    system=r["system"],
                    base=base,
                )
            )
        else:
            out.append(
                t(
                    "LoRA tuning, {system} vs {base}: F1 {ci}{note}: {verdict}.",
                    system=r["system"],
                    base=base,
                    ci=ci(c),
                    note=_sample_note(c, t),
                    verdict=verdict(c, t),
                )
            )
    if not tuned:
        out.append(t("LoRA-tuned readers: not measured in this run (no +tuned system in the log)."))
    return out


def _retrieval_vs_reading_lines(rows: list[dict], by: dict[str, dict], t: Lang = EN) -> list[str]:
    """F1 on retrieved passages next to F1 with the gold paragraph, per LLM."""
    out: list[str] = []
    for r in rows:
        g = by.get(f"{r['system']}@gold")
        if not r.get("oracle") and _llm(r) and g and not _bad(r.get("f1")) and not _bad(g.get("f1")):
            out.append(
                t(
                    "Retrieval vs reading, {system}: F1 {f1} retrieved, {gold} with the gold paragraph; "
                    "recall@{k} {recall}.",
                    system=r["system"],
                    f1=num(r["f1"]),
                    gold=num(g["f1"]),
                    k=r.get("k"),
                    recall=num(r.get("recall_at_k"), 2),
                )
            )
    return out


def _cost_lines(best: dict | None, t: Lang = EN) -> list[str]:
    """The best system's latency and memory."""
    out: list[str] = []
    if best is not None and _llm(best):
        out.append(
            t(
                "Cost of {system}: p50 {p50} s per answer, peak RAM {mb} MB.",
                system=best["system"],
                p50=secs(best.get("latency_p50_s")),
                mb=num(best.get("peak_ram_mb"), 0),
            )
        )
    return out


def _declining_lines(rows: list[dict], t: Lang = EN) -> list[str]:
    """How well the best decliner declines unanswerable questions."""
    out: list[str] = []
    ab = [r for r in rows if r.get("n_unanswerable") and not _bad(r.get("declined"))]
    if ab:
        b = max(ab, key=lambda r: r["declined"])
        if not b["declined"]:
            out.append(
                t(
                    "Declining: no system declined any of the {n} unanswerable questions.",
                    n=count(b.get("n_unanswerable")),
                )
            )
        else:
            out.append(
                t(
                    "Declining: best {system}, {declined}% of unanswerable questions declined, {wrong}% of "
                    "answerable ones wrongly declined.",
                    system=b["system"],
                    declined=num(b["declined"]),
                    wrong=num(b.get("wrong_abstain_rate"), 1, 100),
                )
            )
    else:
        out.append(
            t("Declining unanswerable questions: not measured (no unanswerable questions in this run).")
        )
    return out


def _judge_lines(rows: list[dict], t: Lang = EN) -> list[str]:
    """Judged faithfulness (and its tuned-vs-untuned CI), or grounding when no judge ran."""
    out: list[str] = []
    judged = [r for r in rows if r.get("judge_n")]
    if judged:
        fails = sum(max(r.get("faithfulness_failed") or 0, r.get("relevancy_failed") or 0) for r in judged)
        out.append(
            t(
                "Faithfulness (judge {judge}): {systems}; {fails} judge outputs failed to parse and were left "
                "out.",
                judge=judged[0].get("judge"),
                systems=", ".join(
                    f"{r['system']} {num(r.get('faithfulness'), 2)} (n={count(r.get('faithfulness_n'))})"
                    for r in judged
                ),
                fails=fails,
            )
        )
        for r in judged:
            if not _tuned(r):
                continue
            base = str(r.get("model")) + ("@gold" if r.get("oracle") else "")
            c = comparison(r, base, "faithfulness")
            if c:
                out.append(
                    "  "
                    + t(
                        "Faithfulness, {system} vs {base}: {ci} on the {n} questions both answered: "
                        "{verdict}.",
                        system=r["system"],
                        base=base,
                        ci=ci(c, 2),
                        n=count(c.get("n")),
                        verdict=verdict(c, t),
                    )
                )
    elif any(_llm(r) for r in rows):
        out.append(
            t(
                "Faithfulness and answer relevance: not measured in this run (`rag eval --judge PRESET`); "
                "grounding (share of answer words found in the cited passages): {systems}.",
                systems=", ".join(f"{r['system']} {num(r.get('grounding'), 2)}" for r in rows if _llm(r)),
            )
        )
    else:
        out.append(
            t("Faithfulness and answer relevance: not measured in this run (`rag eval --judge PRESET`).")
        )
    return out


def slide_difficulties(f: Facts, t: Lang = EN) -> Slide:
    s = f.selection.setting
    cmds = list(s.get("commands") or [])
    ft = [m.get("command") for m in f.adapters.values() if m.get("command")]
    return Slide(
        t("Difficulties met, and how they were solved"),
        bullets=[
            t(
                "Untuned small readers ramble, ignore the passages and rarely decline: trained RAFT-style, with "
                "the gold passage among retrieved distractors and abstention targets when it is left out; loss "
                "on answer tokens only."
            ),
            t(
                "Test leakage: training uses SQuADShifts (other articles and sources); a passage-hash guard "
                "refuses any training passage found in SQuAD dev or Disfl-QA."
            ),
            t(
                "Training on a 2-core CPU: bf16 weights, length-grouped batches, token-capped micro-batches "
                "with memory freed each step, checkpoints with --resume, early stopping."
            ),
            t(
                "Small local judges often return output ragas cannot parse: failures are counted and reported, "
                "and a deterministic grounding score needs no judge."
            ),
            t(
                "Models only as GGUF inside registry wheels: pulled by pip, sha256-checked, converted once to bf16."
            ),
            t(
                "Reproduce: {commands}; then `rag report`.",
                commands=("; ".join(cmds) if cmds else t("eval command: not recorded"))
                + ("; " + "; ".join(ft) if ft else ""),
            ),
        ],
    )


def build_slides(f: Facts, figdir: Path, t: Lang = EN) -> list[Slide]:
    """The deck, in the order of the brief: task, data, no-LLM baseline, metrics, models and experiments,
    conclusions; in the edition `t` speaks."""
    figdir = Path(figdir)
    figdir.mkdir(parents=True, exist_ok=True)
    deck = [
        slide_title(f, t),
        slide_data(f, t),
        slide_lengths(f, figdir, t),
        slide_no_llm(f, t),
        slide_metrics(f, t),
        slide_models(f, t),
        slide_adapters(f, t),
        slide_experiments(f, t),
        slide_quality_cost(f, figdir, t),
        slide_training(f, figdir, t),
        slide_abstain(f, figdir, t),
        *benchmark_slides(f, t),
        slide_conclusions(f, t),
        slide_difficulties(f, t),
    ]
    return [t.finish(s) for s in deck if s is not None]
