"""Benchmark JSONs (benchmarks/results/*.json) -> the engineering table's rows and the abstention curve.

A known benchmark shows the few measures BENCHES names, each with a human label and a unit; any other
file shows its `summary` block with labels made from the keys ("rerank_p50_ms" -> "rerank p50", ms).
Every row names the CPU the file says it ran on, so a figure from one machine is never read as another's:

    >>> cpu_line({"hardware": {"cpu": "AMD EPYC", "cores": 2, "flags": ["avx2", "fma"]}})
    'AMD EPYC, 2 cores, flags avx2 fma'
    >>> cpu_line({"machine": {"cpu": "x86_64", "cores_visible": 2}})
    'x86_64, 2 cores, flags not recorded'
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from eval.report.i18n import EN, Lang

# A path into a benchmark JSON: keys, list indexes, or a dict that picks the first list item whose
# fields all match it.
KeyPath = tuple
# (label, path, unit); the label is English text for the edition table, the unit one `value` knows
Measure = tuple[str, KeyPath, str]


def _row(**match: Any) -> dict:
    return match


BGE, BGE_RR = _row(system="hybrid (bge-small)"), _row(system="hybrid (bge-small) + rerank N=20")
PADDED = _row(input="1 MB single line, words padded by 100 spaces", counter="wordpiece")
PROSE = _row(input="1 MB single line of prose", counter="wordpiece")
NATIVE = {v: _row(variant=v, isa="native") for v in ("bfloat16", "float32", "int8-pc")}
Q4_2T = _row(quant="Q4_K_M", threads=2)

# file stem -> (title, measures); the order is the table's
BENCHES: dict[str, tuple[str, list[Measure]]] = {
    "retrieval": (
        "Retrieval on SQuAD dev",
        [
            ("recall@5, hybrid bge-small", ("rows", BGE, "recall@5"), "ratio"),
            ("with rerank of the top 20", ("rows", BGE_RR, "recall@5"), "ratio"),
            ("recall@1", ("rows", BGE, "recall@1"), "ratio"),
            ("with rerank", ("rows", BGE_RR, "recall@1"), "ratio"),
            ("hybrid MiniLM recall@5", ("rows", _row(system="hybrid (minilm)"), "recall@5"), "ratio"),
            ("search p50", ("rows", BGE, "latency_p50_ms"), "ms"),
            ("search + rerank p50", ("rows", BGE_RR, "rerank_latency_p50_ms"), "ms"),
            ("questions", ("rows", BGE, "questions"), "count"),
            ("reranked", ("rows", BGE_RR, "questions"), "count"),
        ],
    ),
    "rerank": (
        "Reranking",
        [
            ("recall@1, hybrid", ("summary", "hybrid_recall@1"), "ratio"),
            ("with rerank", ("summary", "rerank_recall@1"), "ratio"),
            ("rerank p50", ("summary", "rerank_p50_ms"), "ms"),
            ("candidates", ("settings", "candidates"), "count"),
            ("questions", ("settings", "limit"), "count"),
        ],
    ),
    "docs_retrieval": (
        "Retrieval on git manual pages",
        [
            ("recall@5, bge-small", ("summary", "bge-small recall@5"), "ratio"),
            ("with rerank", ("summary", "bge-small+rerank recall@5"), "ratio"),
            ("MiniLM", ("summary", "minilm recall@5"), "ratio"),
            ("MiniLM with rerank", ("summary", "minilm+rerank recall@5"), "ratio"),
            ("questions", ("rows", 0, "n"), "count"),
        ],
    ),
    "index": (
        "Indexing the corpus",
        [
            ("chunks", ("chunks",), "count"),
            ("ours", ("ours_chunks_per_s",), "chunks/s"),
            ("LangChain", ("langchain_chunks_per_s",), "chunks/s"),
            ("speed-up", ("speedup_vs_langchain",), "x"),
            ("re-index after one file changed", ("reindex_one_file_s",), "s"),
            ("peak RSS", ("peak_rss_mb",), "MB"),
        ],
    ),
    "chunk": (
        "Chunking a 4 MB line, WordPiece counter",
        [
            ("space-padded words: before", ("rows", PADDED, "before_4x_s"), "s"),
            ("after", ("rows", PADDED, "after_4x_s"), "s"),
            ("prose: before", ("rows", PROSE, "before_4x_s"), "s"),
            ("after", ("rows", PROSE, "after_4x_s"), "s"),
        ],
    ),
    "train": (
        "LoRA training speed",
        [
            ("ours", ("systems", 0, "tokens_per_s"), "tokens/s"),
            ("HF Trainer", ("systems", 1, "tokens_per_s"), "tokens/s"),
            ("speed-up", ("speedup",), "x"),
            ("peak RSS ours", ("systems", 0, "peak_rss_mb"), "MB"),
            ("HF Trainer", ("systems", 1, "peak_rss_mb"), "MB"),
            ("steps", ("steps",), "count"),
        ],
    ),
    "ask": (
        "Answer latency, warm",
        [
            ("qwen2.5-0.5b p50", ("rows", _row(preset="qwen2.5-0.5b"), "warm", "p50_s"), "s"),
            ("first token", ("rows", _row(preset="qwen2.5-0.5b"), "warm", "first_token_p50_s"), "s"),
            ("smollm2-135m p50", ("rows", _row(preset="smollm2-135m"), "warm", "p50_s"), "s"),
            ("extractive p50", ("rows", _row(preset="extractive"), "warm", "p50_s"), "s"),
            ("prompt tokens", ("rows", 0, "prompt_tokens_mean"), "count"),
        ],
    ),
    "ask_floor": (
        "Readers on the gold paragraph",
        [
            ("F1 extractive", ("rows", _row(preset="extractive"), "squad_gold", "f1"), "num1"),
            ("smollm2-135m", ("rows", _row(preset="smollm2-135m"), "squad_gold", "f1"), "num1"),
            ("qwen2.5-0.5b", ("rows", _row(preset="qwen2.5-0.5b"), "squad_gold", "f1"), "num1"),
            ("questions", ("rows", 0, "squad_gold", "n"), "count"),
        ],
    ),
    "dtype": (
        "Weight formats, qwen2.5-0.5b",
        [
            ("answer p50 bf16", ("rows", NATIVE["bfloat16"], "answer_p50_s"), "s"),
            ("fp32", ("rows", NATIVE["float32"], "answer_p50_s"), "s"),
            ("int8", ("rows", NATIVE["int8-pc"], "answer_p50_s"), "s"),
            (
                "bf16 with the ISA capped at AVX2",
                ("rows", _row(variant="bfloat16", isa="AVX2 (capped)"), "answer_p50_s"),
                "s",
            ),
            ("F1 bf16", ("rows", NATIVE["bfloat16"], "f1"), "num1"),
            ("int8", ("rows", NATIVE["int8-pc"], "f1"), "num1"),
        ],
    ),
    "llamacpp": (
        "llama.cpp, Q4_K_M, 2 threads",
        [
            ("answer", ("rows", Q4_2T, "answer_s"), "s"),
            ("prompt", ("rows", Q4_2T, "prefill_tok_s"), "tokens/s"),
            ("decoding", ("rows", Q4_2T, "decode_ms_per_token"), "ms/token"),
        ],
    ),
    "busy": (
        "Answer latency on a busy CPU",
        [
            ("slow-down, fixed threads", ("summary", "fixed-all busy/idle"), "x"),
            ("adaptive threads", ("summary", "adaptive busy/idle"), "x"),
            ("idle p50", ("rows", _row(policy="adaptive"), "idle_p50_s"), "s"),
            ("busy p50", ("rows", _row(policy="adaptive"), "busy_p50_s"), "s"),
        ],
    ),
    "serve": (
        "HTTP server",
        [
            ("ready after", ("summary", "ready_s"), "s"),
            ("first piece p50, 1 client", ("summary", "ttft_p50_s_1_client"), "s"),
            ("API over in-process", ("summary", "api_over_in_process"), "x"),
            ("16 clients", ("rows", _row(clients=16), "answers_per_s"), "answers/s"),
            ("errors", ("summary", "errors"), "count"),
            ("mixed answers", ("summary", "mixed_or_changed"), "count"),
            ("RSS growth", ("summary", "max_rss_growth_pct"), "%100"),
        ],
    ),
    "judge": (
        "Judge check: right and swapped answers",
        [
            ("faithfulness AUC", ("summary", "faithfulness", "auc"), "ratio"),
            ("relevance AUC", ("summary", "relevancy", "auc"), "ratio"),
            ("parse failures", ("summary", "faithfulness", "failed"), "count"),
            ("per case", ("summary", "seconds_per_case"), "s"),
            ("questions", ("n_questions",), "count"),
        ],
    ),
    "abstain": (
        "Abstention threshold",
        [
            ("threshold", ("chosen", "threshold"), "num2"),
            ("unanswerable declined", ("chosen", "declined"), "%"),
            ("answerable declined", ("chosen", "wrong_declines"), "%"),
            ("precision", ("chosen", "precision"), "%"),
            ("reranker score cut", ("rerank_rule", "min_rerank_score"), "num1"),
            ("threshold with the cut", ("rerank_rule", "threshold"), "num2"),
            ("declined with the cut", ("rerank_rule", "declined"), "%"),
            ("wrongly declined with the cut", ("rerank_rule", "wrong_declines"), "%"),
            ("examples", ("validation", "examples"), "count"),
        ],
    ),
}
# units whose spelling differs by edition; the others ("%", "x") print as they are
UNITS = ("s", "ms", "MB", "chunks/s", "tokens/s", "answers/s", "ms/token")


def get(d: Any, path: KeyPath) -> Any:
    """The value at `path`, or None.

    >>> get({"rows": [{"a": 1, "v": 2}, {"a": 3, "v": 4}]}, ("rows", {"a": 3}, "v"))
    4
    """
    for step in path:
        if isinstance(step, dict):
            d = (
                next(
                    (x for x in d if isinstance(x, dict) and all(x.get(k) == v for k, v in step.items())),
                    None,
                )
                if isinstance(d, list)
                else None
            )
        elif isinstance(step, int):
            d = d[step] if isinstance(d, list) and -len(d) <= step < len(d) else None
        else:
            d = d.get(step) if isinstance(d, dict) else None
        if d is None:
            return None
    return d


def value(v: Any, unit: str, t: Lang = EN) -> str:
    """A measure's value in its unit.

    >>> value(0.93916, "ratio"), value(340.0, "ms"), value(0.5714, "%"), value(2.29, "x"), value(1211.7, "MB")
    ('0.939', '340 ms', '57.1%', '×2.29', '1,212 MB')
    """
    v = float(v)
    if unit == "ratio":
        return f"{v:.3f}"
    if unit == "%":
        return f"{100 * v:.1f}%"
    if unit == "%100":
        return f"{v:.1f}%"
    if unit == "x":
        return f"×{v:.2f}"
    if unit == "count":
        return f"{int(v):,}"
    if unit in ("num1", "num2"):
        return f"{v:.{unit[-1]}f}"
    if unit == "s":
        n = f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"
    elif unit in ("MB",):
        n = f"{v:,.0f}"
    elif unit in ("ms", "ms/token"):
        n = f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    elif unit in UNITS:  # a rate: three significant digits
        n = f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    elif unit == "/s":
        return f"{v:,.4g}/{t.word('s')}"
    else:
        return f"{v:,.4g}"
    return f"{n} {t.word(unit)}"


SUFFIXES = [  # key ending -> unit; the longest first
    ("_per_s", "/s"),
    ("_pct", "%100"),
    ("_ms", "ms"),
    ("_mb", "MB"),
    ("_s", "s"),
]


def humanize(key: str) -> tuple[str, str]:
    """A label and unit for a key no label map knows.

    >>> humanize("summary.rerank_p50_ms"), humanize("max_rss_growth_pct"), humanize("speedup")
    (('rerank p50', 'ms'), ('max rss growth', '%100'), ('speedup', 'g'))
    """
    key = key.removeprefix("summary.")
    unit = "g"
    for end, u in SUFFIXES:
        if key.endswith(end):
            key, unit = key[: -len(end)], u
            break
    return key.replace(".", " ").replace("_", " ").strip(), unit


def _numbers(v: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Numeric leaves of a JSON object as (dotted key, value).

    >>> _numbers({"a": 1, "b": {"c": 2.5, "d": "x"}, "machine": {"cpus": 2}})
    [('a', 1), ('b.c', 2.5)]
    """
    if isinstance(v, dict):
        return [
            kv
            for k, x in v.items()
            if k not in ("machine", "versions", "hardware")
            for kv in _numbers(x, f"{prefix}.{k}" if prefix else k)
        ]
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [(prefix, v)]
    return []


PER_FILE = 7  # measures at most, for a file no label map knows


def _fallback(d: dict, t: Lang) -> list[str]:
    out = []
    for k, v in [kv for kv in _numbers(d) if kv[0].startswith("summary.")][:PER_FILE]:
        label, unit = humanize(k)
        if unit == "g" and isinstance(v, int):
            unit = "count"
        out.append(t("{label} {value}", label=label, value=value(v, unit, t)))
    return out


def measures(name: str, d: dict, t: Lang = EN) -> list[str]:
    """ "label value" strings for one benchmark file: its label map's, or its summary's."""
    _, spec = BENCHES.get(name, ("", []))
    out = []
    for label, path, unit in spec:
        v = get(d, path)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(t("{label} {value}", label=t(label), value=value(v, unit, t)))
    return out or _fallback(d, t)


def script(name: str, d: dict) -> str:
    """The benchmark script that wrote the file, from its command ("bench_ask.py --n 10" -> bench_ask)."""
    for word in str(d.get("command") or "").split():
        if Path(word).name.startswith("bench_"):
            return Path(word).stem
    return f"bench_{name}"


def cpu_line(d: dict, t: Lang = EN) -> str:
    """The CPU a benchmark file says it ran on; what it did not record is said to be missing."""
    hw = d.get("hardware") if isinstance(d.get("hardware"), dict) else None
    if hw and hw.get("cpu"):
        line = t(
            "{cpu}, {cores} cores, flags {flags}",
            cpu=hw["cpu"],
            cores=hw.get("cores", "?"),
            flags=" ".join(hw.get("flags") or []) or "-",
        )
        if hw.get("emulated_isa"):
            line += t(" (ISA capped: {isa})", isa=hw["emulated_isa"])
        built = _llama_isa(d)
        if built:
            line += t("; llama.cpp built for {isa}", isa=built)
        return line
    m = d.get("machine") if isinstance(d.get("machine"), dict) else {}
    cpu = m.get("cpu") or m.get("processor") or t("model not recorded")
    cores = m.get("cores_visible") or m.get("cpus") or d.get("cpus")
    if cores is None:
        return t("not recorded")
    known = [k for k, v in d.items() if k.startswith(("avx", "fma")) and isinstance(v, bool)]
    flags = " ".join(f"{k}={'yes' if d[k] else 'no'}" for k in known)
    return (
        t("{cpu}, {cores} cores, flags {flags}", cpu=cpu, cores=cores, flags=flags)
        if flags
        else t("{cpu}, {cores} cores, flags not recorded", cpu=cpu, cores=cores)
    )


def _llama_isa(d: dict) -> str:
    """The instruction sets a llama.cpp build uses, from its system info ("AVX = 1 | AVX2 = 1 | ...").

    >>> _llama_isa({"llama_cpp_system_info": "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | OPENMP = 1 |"})
    'SSE3 AVX AVX2'
    """
    info = str(d.get("llama_cpp_system_info") or "")
    on = [m.group(1) for m in re.finditer(r"([A-Z][A-Z0-9_]*) = 1", info)]
    return " ".join(x for x in on if x.startswith(("SSE", "SSSE", "AVX", "FMA", "F16C", "AMX", "NEON")))


def date(d: dict) -> str:
    return str(d.get("date") or d.get("time") or "")[:10]


ORDER = list(BENCHES)


def table_rows(benchmarks: dict[str, dict], t: Lang = EN) -> tuple[list[list[str]], dict[str, str]]:
    """One row per benchmark file: [title (script), measures, CPU letter, date], and the CPU legend
    (letter -> CPU line). Files with nothing to show (no known measure, no summary) are left out."""
    rows, cpus = [], {}
    for name in sorted(benchmarks, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        d = benchmarks[name]
        if not isinstance(d, dict):
            continue
        ms = measures(name, d, t)
        if not ms:
            continue
        line = cpu_line(d, t)
        letter = next((k for k, v in cpus.items() if v == line), None)
        if letter is None:
            letter = chr(ord("A") + len(cpus))
            cpus[letter] = line
        title = t(BENCHES[name][0]) if name in BENCHES else name.replace("_", " ")
        rows.append([f"{title} ({script(name, d)})", "; ".join(ms), letter, date(d)])
    return rows, cpus


# ---------------------------------------------------------------- the abstention curve
def abstain_points(d: dict | None) -> list[dict]:
    """The curve's points with a finite threshold and both rates; [] when the file is missing or odd."""
    if not isinstance(d, dict):
        return []
    pts = d.get("rows") or d.get("results") or []
    ok = [
        p
        for p in pts
        if isinstance(p, dict)
        and all(isinstance(p.get(k), (int, float)) for k in ("threshold", "declined", "wrong_declines"))
        and math.isfinite(p["threshold"])
    ]
    return sorted(ok, key=lambda p: p["threshold"])


def fig_abstain(d: dict, path: Path, plt, t: Lang = EN) -> Path | None:
    """Three panels: the rates against the threshold, precision against declined (the PR curve), and
    declined against wrongly declined; the chosen threshold marked on each."""
    pts = abstain_points(d)
    if not pts:
        return None
    chosen = d.get("chosen") if isinstance(d.get("chosen"), dict) else None
    max_wrong = get(d, ("settings", "max_wrong"))
    th = [p["threshold"] for p in pts]
    dec = [100 * p["declined"] for p in pts]
    wrong = [100 * p["wrong_declines"] for p in pts]
    prec = [None if p.get("precision") is None else 100 * p["precision"] for p in pts]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12.3, 3.9))
    a1.plot(th, dec, color="#c0392b", lw=1.8, label=t("unanswerable declined (recall)"))
    a1.plot(
        th,
        [p if p is not None else math.nan for p in prec],
        color="#2e86c1",
        lw=1.4,
        label=t("precision of declines"),
    )
    a1.plot(th, wrong, color="#7f8c8d", lw=1.4, ls="--", label=t("answerable declined (wrong)"))
    lo, hi = th[int(0.02 * (len(th) - 1))], th[int(0.98 * (len(th) - 1))]
    a1.set_xlim(lo, hi)
    a1.set_ylim(0, 102)
    a1.set_xlabel(t("threshold on the log-probability gap"))
    a1.set_ylabel("%")
    a1.set_title(t("Rates against the threshold"), fontsize=11)
    a1.grid(alpha=0.3)
    pr = [(x, y) for x, y in zip(dec, prec) if y is not None]
    a2.plot([x for x, _ in pr], [y for _, y in pr], color="#2e86c1", lw=1.6)
    a2.set_xlabel(t("unanswerable declined, % (recall)"))
    a2.set_ylabel(t("precision of declines, %"))
    a2.set_title(t("Precision against recall"), fontsize=11)
    a2.set_xlim(0, 102)
    a2.set_ylim(0, 102)
    a2.grid(alpha=0.3)
    a3.plot(wrong, dec, color="#c0392b", lw=1.6)
    a3.plot([0, 100], [0, 100], color="#bbbbbb", lw=0.8, ls=":")
    a3.set_xlabel(t("answerable declined, % (wrong declines)"))
    a3.set_ylabel(t("unanswerable declined, %"))
    a3.set_title(t("Declined against wrongly declined"), fontsize=11)
    a3.set_xlim(0, 102)
    a3.set_ylim(0, 102)
    a3.grid(alpha=0.3)
    if isinstance(max_wrong, (int, float)):
        a1.axhline(100 * max_wrong, color="#7f8c8d", lw=0.8, ls=":")
        a3.axvline(100 * max_wrong, color="#7f8c8d", lw=0.8, ls=":")
        a3.text(100 * max_wrong, 4, " " + t("wrong-decline cap"), fontsize=8, color="#555555")
        a1.text(lo, 100 * max_wrong, " " + t("wrong-decline cap"), fontsize=8, color="#555555", va="bottom")
    if chosen and all(
        isinstance(chosen.get(k), (int, float)) for k in ("threshold", "declined", "wrong_declines")
    ):
        label = t("chosen {v}", v=f"{chosen['threshold']:.2f}")
        a1.axvline(chosen["threshold"], color="black", lw=1, ls="--")
        star = dict(marker="*", s=160, color="black", zorder=3)
        if isinstance(chosen.get("precision"), (int, float)):
            a2.scatter([100 * chosen["declined"]], [100 * chosen["precision"]], **star)
        a3.scatter([100 * chosen["wrong_declines"]], [100 * chosen["declined"]], label=label, **star)
    rule = d.get("model_rule") if isinstance(d.get("model_rule"), dict) else None
    if rule and all(isinstance(rule.get(k), (int, float)) for k in ("declined", "wrong_declines")):
        a3.scatter(
            [100 * rule["wrong_declines"]],
            [100 * rule["declined"]],
            marker="o",
            s=40,
            color="#8e44ad",
            zorder=3,
            label=t("the model's own choice"),
        )
    # one legend above the three panels: the curves would hide a legend inside any of them
    handles = [h for ax in (a1, a3) for h in ax.get_legend_handles_labels()[0]]
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(handles),
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=200, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return path
