"""`rag report`: a deck built from a small experiments log written here with eval/run.py's own writer."""

from __future__ import annotations

import json
import re
import shutil
import string
from pathlib import Path

import pytest
from fakes import experiment_row
from typer.testing import CliRunner

from eval.report import bench, write_report
from eval.report.facts import benchmark_results, load_log, select_rows
from eval.report.slides import EXPERIMENT_COLUMNS, NA, NM
from eval.run import append_experiments
from rag.config import REPO_ROOT
from rag.errors import BadInput

TITLES = [
    "rag: answers with sources from your own documents",
    "Data: what the system reads and is tested on",
    "Data: answer, passage and question lengths",
    "Can it be done without an LLM?",
    "Metrics, and why these",
    "Models, and why these",
    "Fine-tuning: LoRA adapters",
    "Experiments",
    "Quality against cost; retrieval recall@k",
    "Training and validation curves",
    "Declining: choosing the abstention threshold",
    "Engineering benchmarks",  # one or more slides, numbered "(1/2)" when there are more
    "Conclusions: what the measurements say",
    "Difficulties met, and how they were solved",
]
ABSTAIN = {  # benchmarks/results/abstain.json as benchmarks/bench_abstain.py writes it, five points
    "benchmark": "abstain",
    "date": "2026-12-01T13:05:14+00:00",
    "command": "bench_abstain.py --limit 300",
    "hardware": {
        "cpu": "AMD EPYC",
        "cores": 2,
        "flags": ["avx2", "fma", "avx512_bf16"],
        "emulated_isa": None,
    },
    "chosen": {
        "threshold": 1.5081,
        "declined": 0.5714,
        "precision": 0.6792,
        "wrong_declines": 0.0717,
        "answer_f1": 66.84,
    },
    "validation": {"source": "squadshifts", "examples": 300, "unanswerable": 63},
    "reader": {"model": "qwen2.5-0.5b", "adapter": "/a", "decoding": "span"},
    "model_rule": {"declined": 0.6825, "wrong_declines": 0.1266},
    "settings": {"limit": 300, "seed": 0, "max_wrong": 0.08},
    "summary": {"threshold": 1.508, "declined": 0.571, "wrong_declines": 0.072},
    "rows": [
        {"threshold": t, "declined": d, "precision": p, "wrong_declines": w, "answer_f1": f}
        for t, d, p, w, f in [
            (-5.0, 1.0, 0.21, 0.99, 0.5),
            (0.0, 0.8, 0.45, 0.2, 50.0),
            (1.5081, 0.5714, 0.6792, 0.0717, 66.84),
            (4.0, 0.35, 0.7, 0.04, 68.0),
            (9.0, 0.15, 0.77, 0.01, 68.4),
        ]
    ],
}


def _repo(tmp: Path, abstain: dict | None = ABSTAIN) -> Path:
    """A repository view for the report: the real corpus, data and shipped adapters, a snapshot of the
    real benchmark results (a running benchmark may rewrite them) and our own abstain.json (or none)."""
    repo = tmp / "repo"
    (repo / "eval").mkdir(parents=True)
    (repo / "rag").mkdir()
    (repo / "corpus").symlink_to(REPO_ROOT / "corpus")
    (repo / "eval" / "data").symlink_to(REPO_ROOT / "eval" / "data")
    (repo / "rag" / "adapters").symlink_to(REPO_ROOT / "rag" / "adapters")
    results = repo / "benchmarks" / "results"
    results.mkdir(parents=True)
    for p in (REPO_ROOT / "benchmarks" / "results").glob("*.json"):
        if p.name != "abstain.json":
            shutil.copy(p, results / p.name)
    if abstain is not None:
        (results / "abstain.json").write_text(json.dumps(abstain))
    return repo


def _titles(rep) -> list[str]:
    """Slide titles with the benchmark slides' "(1/2)" numbering folded into one entry."""
    out: list[str] = []
    for s in rep.slides:
        t = re.sub(r" \(\d+/\d+\)$", "", s.title)
        if not out or out[-1] != t:
            out.append(t)
    return out


def _manifest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    man = {
        "base": {"preset": "smollm2-135m", "params": "135M"},
        "data": {
            "source": "squadshifts",
            "counts": {"train_examples": 900, "val_examples": 60, "train_abstain": 180},
            "config": {"distractors": 4, "min_distractors": 1, "p_gold": 0.8},
        },
        "hyperparameters": {
            "rank": 16,
            "alpha": 32,
            "target_modules": "all-linear",
            "lr": 5e-4,
            "batch_size": 8,
        },
        "training": {
            "steps": 40,
            "stopped": "max_steps",
            "best_step": 40,
            "train_examples": 900,
            "train_time_s": 1260.0,
            "tokens_per_s": 351.2,
            "padding_fraction": 0.04,
        },
        "final": {"step": 40, "val_loss": 0.812, "em": 48.0, "f1": 61.5},
        "untuned": {"step": 0, "val_loss": 3.1, "em": 1.0, "f1": 14.0},
        "evals": [
            {"step": 0, "val_loss": 3.1, "f1": 14.0},
            {"step": 20, "val_loss": 1.2, "f1": 50.0},
            {"step": 40, "val_loss": 0.812, "f1": 61.5},
        ],
        "curves": {
            "train_loss": [[i, 3.0 / i] for i in range(1, 41)],
            "val_loss": [[0, 3.1], [20, 1.2], [40, 0.812]],
        },
        "adapter": {"sha256": "ab" * 32},
        "command": "rag finetune --base smollm2-135m --max-steps 40",
    }
    (folder / "rag_adapter.json").write_text(json.dumps(man))
    return folder


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    adapter = _manifest(tmp / "adapters" / "smollm2-135m")
    no_index = str(tmp / "no-index")
    tuned = dict(
        adapter=str(adapter),
        adapter_rank=16,
        training_time_s=1260.0,
        adapter_val_em=48.0,
        adapter_val_f1=61.5,
    )
    rows = [
        experiment_row("extractive", index=no_index, em=0.0, f1=13.5, correct_cited=6.06),
        experiment_row("smollm2-135m", index=no_index, em=3.03, f1=11.2, correct_cited=3.03),
        experiment_row(
            "smollm2-135m+tuned",
            index=no_index,
            em=45.45,
            f1=58.71,
            correct_cited=51.52,
            declined=71.43,
            wrong_abstain_rate=0.0606,
            faithfulness=0.83,
            judge="qwen2.5-1.5b",
            judge_n=10,
            faithfulness_n=10,
            comparisons=[
                {"b": "extractive", "metric": "f1", "diff": 45.2, "lo": 36.0, "hi": 54.1, "n": 33},
                {"b": "smollm2-135m", "metric": "f1", "diff": 47.5, "lo": 38.2, "hi": 56.0, "n": 33},
                {"b": "smollm2-135m", "metric": "faithfulness", "diff": 0.2, "lo": 0.05, "hi": 0.35, "n": 8},
            ],
            **tuned,
        ),
        experiment_row("extractive@gold", index=no_index, em=0.0, f1=23.4),
        experiment_row(
            "smollm2-135m+tuned@gold", index=no_index, em=60.6, f1=71.3, latency_p50_s=None, **tuned
        ),
    ]
    runs = tmp / "runs"
    # an older, smaller run of the same systems: the report must pick the 40-question setting above
    append_experiments([experiment_row("extractive", run_id="old", limit=10, index=no_index, f1=99.0)], runs)
    append_experiments(rows, runs)
    repo = _repo(tmp)
    rep = write_report(runs, tmp / "out", repo=repo)
    ru = write_report(runs, tmp / "out", repo=repo, lang="ru")
    return rep, rows, ru


def _slide(rep, title: str):
    return next(s for s in rep.slides if s.title == title)


def test_slide_titles_follow_the_brief(deck):
    rep, *_ = deck
    assert _titles(rep) == TITLES


def test_experiments_table_equals_the_log_rows(deck):
    rep, rows, _ = deck
    table = _slide(rep, "Experiments").table
    assert (
        table.header[EXPERIMENT_COLUMNS.index(next(c for c in EXPERIMENT_COLUMNS if c[0] == "recall@k"))]
        == "recall@5"
    )
    by_system = {r[0]: r for r in table.rows}
    assert set(by_system) == {r["system"] for r in rows}  # one slide row per log row, the old run left out
    col = {h: i for i, (h, _) in enumerate(EXPERIMENT_COLUMNS)}
    for r in rows:
        cells = by_system[r["system"]]
        assert cells[col["EM"]] == f"{r['em']:.1f}"
        assert cells[col["F1"]] == f"{r['f1']:.1f}"
        assert cells[col["correct + cited %"]] == f"{r['correct_cited']:.1f}"
        assert cells[col["RAM MB"]] == f"{r['peak_ram_mb']:.0f}"
    tuned = by_system["smollm2-135m+tuned"]
    assert tuned[col["params"]] == "135M" and tuned[col["LoRA rank"]] == "16"
    assert tuned[col["train min"]] == "21" and tuned[col["val F1"]] == "61.5"
    assert tuned[col["faithful"]] == "0.83" and tuned[col["recall@k"]] == "0.76"
    # the baseline row order: extractive first, oracle runs last
    assert [r[0] for r in table.rows][0] == "extractive" and table.rows[-1][0].endswith("@gold")


def test_pptx_table_matches_the_slide(deck):
    from pptx import Presentation

    rep, *_ = deck
    idx = [s.title for s in rep.slides].index("Experiments")
    prs = Presentation(str(rep.pptx))
    assert len(prs.slides) == len(rep.slides)
    tbl = next(sh for sh in prs.slides[idx].shapes if sh.has_table).table
    got = [[tbl.cell(r, c).text for c in range(len(tbl.columns))] for r in range(len(tbl.rows))]
    table = rep.slides[idx].table
    assert got == [table.header, *table.rows]


def test_missing_metrics_show_not_measured(deck):
    rep, *_ = deck
    table = _slide(rep, "Experiments").table
    col = {h: i for i, (h, _) in enumerate(EXPERIMENT_COLUMNS)}
    by_system = {r[0]: r for r in table.rows}
    assert by_system["smollm2-135m"][col["faithful"]] == NM  # no judge for this system
    assert by_system["smollm2-135m"][col["relevance"]] == NM
    assert by_system["smollm2-135m+tuned@gold"][col["p50 s"]] == NM  # latency missing from the row
    assert by_system["extractive"][col["params"]] == NA  # no model: does not apply
    assert by_system["smollm2-135m+tuned@gold"][col["recall@k"]] == NA  # gold given: no retrieval
    no_llm = _slide(rep, "Can it be done without an LLM?")
    assert any("+45.2 [95% CI +36.0, +54.1]" in b and "a real gain" in b for b in no_llm.bullets)
    concl = _slide(rep, "Conclusions: what the measurements say").bullets
    assert any("smollm2-135m+tuned vs smollm2-135m: F1 +47.5" in b for b in concl)
    assert "Did not beat the extractive baseline on retrieved passages (F1 13.5): smollm2-135m 11.2." in concl
    assert any("Faithfulness (judge qwen2.5-1.5b)" in b and "smollm2-135m+tuned 0.83" in b for b in concl)


def test_conclusions_give_the_faithfulness_gap_with_its_ci(deck):
    rep, *_ = deck
    bullets = _slide(rep, "Conclusions: what the measurements say").bullets
    assert any("smollm2-135m+tuned 0.83 (n=10)" in b for b in bullets)
    assert (
        "  Faithfulness, smollm2-135m+tuned vs smollm2-135m: +0.20 [95% CI +0.05, +0.35] on the 8 questions "
        "both answered: a real gain." in bullets
    )


def test_conclusions_say_not_measured_without_the_untuned_run():
    from eval.report.facts import Facts, Selection
    from eval.report.slides import slide_conclusions

    tuned = experiment_row(
        "smollm2-135m+tuned", adapter="/a", adapter_rank=16, n_unanswerable=0, declined=None
    )
    ext = experiment_row("extractive", n_unanswerable=0, declined=None)
    bullets = slide_conclusions(Facts(selection=Selection(rows=[ext, tuned], setting={}))).bullets
    assert any("vs smollm2-135m: not measured" in b for b in bullets)
    assert any(b.startswith("Declining") and NM in b for b in bullets)
    assert any(b.startswith("Faithfulness and answer relevance: not measured") for b in bullets)


def test_benchmarks_missing_say_not_measured(tmp_path):
    from eval.report.facts import Facts, Selection
    from eval.report.slides import benchmark_slides, slide_adapters, slide_training

    f = Facts(selection=Selection(rows=[experiment_row("extractive")], setting={}))
    [only] = benchmark_slides(f)
    assert NM in only.bullets[0] and only.table is None
    assert NM in slide_adapters(f).bullets[0]
    tr = slide_training(f, tmp_path)
    assert tr.image is None and NM in tr.bullets[0]
    f.benchmarks = {
        "index": {"chunks": 2414, "speedup_vs_langchain": 1.83, "date": "2026-01-01", "command": "x"}
    }
    [only] = benchmark_slides(f)
    assert only.table.rows == [
        ["Indexing the corpus (bench_index)", "chunks 2,414; speed-up ×1.83", "A", "2026-01-01"]
    ]
    assert only.bullets[0] == "CPU A: not recorded"  # the file names no CPU: the slide does not guess one


def test_engineering_slide_shows_labels_units_and_cpus_of_the_real_results():
    """The real benchmarks/results/*.json: each known file's row uses its label map, without a raw
    snake_case key, and points at the CPU line the file itself recorded."""
    results = benchmark_results(REPO_ROOT / "benchmarks" / "results")
    known = {k: v for k, v in results.items() if k in bench.BENCHES}
    if not known:
        pytest.skip("no benchmark results in this checkout")
    rows, cpus = bench.table_rows(results)
    by_title = {r[0]: r for r in rows}
    for name, d in known.items():
        title, spec = bench.BENCHES[name]
        row = by_title[f"{title} ({bench.script(name, d)})"]
        assert any(cell.startswith(label + " ") for label, _, _ in spec for cell in row[1].split("; ")), name
        assert not re.search(r"\b[a-z0-9]+_[a-z0-9_]+\b", row[0].split(" (")[0] + " " + row[1]), row
        hw = d.get("hardware") or {}
        if hw.get("flags"):
            assert cpus[row[2]].startswith(f"{hw['cpu']}, {hw['cores']} cores, flags {' '.join(hw['flags'])}")
        else:
            assert "not recorded" in cpus[row[2]]  # no flags in the file: none are claimed for it


def test_unknown_benchmarks_get_readable_labels():
    d = {"summary": {"rerank_p50_ms": 580.7, "ready_s": 7.09, "max_rss_growth_pct": 8.98, "errors": 0}}
    assert bench.measures("newbench", d) == [
        "rerank p50 581 ms",
        "ready 7.09 s",
        "max rss growth 9.0%",
        "errors 0",
    ]
    rows, cpus = bench.table_rows({"newbench": {**d, "machine": {"cpu": "x86_64", "cores_visible": 2}}})
    assert rows[0][0] == "newbench (bench_newbench)" and cpus == {"A": "x86_64, 2 cores, flags not recorded"}


def test_the_abstention_slide_appears_only_with_its_results(deck, tmp_path):
    from eval.report.facts import Facts, Selection
    from eval.report.slides import benchmark_slides, slide_abstain

    rep, *_ = deck
    s = _slide(rep, "Declining: choosing the abstention threshold")
    assert s.image is not None and s.image.suffix == ".png"
    assert any(
        b.startswith("Chosen threshold 1.51: 57.1% of unanswerable") and "67.9%" in b for b in s.bullets
    )
    assert any("at most 8%" in b for b in s.bullets)
    assert "CPU: AMD EPYC, 2 cores, flags avx2 fma avx512_bf16" in s.footnote

    f = Facts(selection=Selection(rows=[experiment_row("extractive")], setting={}))
    for missing in ({}, {"abstain": {"rows": []}}, {"abstain": {"rows": [{"threshold": "x"}]}}):
        f.benchmarks = dict(missing, index={"chunks": 1})
        assert slide_abstain(f, tmp_path) is None
        assert any("abstain.json" in b and NM in b for b in benchmark_slides(f)[0].bullets)
    runs = tmp_path / "runs"
    append_experiments([experiment_row("extractive", index=str(tmp_path / "no-index"))], runs)
    without = write_report(runs, tmp_path / "out", repo=_repo(tmp_path, abstain=None))
    assert "Declining: choosing the abstention threshold" not in _titles(without)


CYRILLIC = re.compile("[А-Яа-яЁё]")


def _text(s) -> str:
    table = [*s.table.header, *(c for r in s.table.rows for c in r)] if s.table else []
    return " ".join([s.title, s.subtitle, *s.bullets, *table, s.footnote])


def test_the_russian_edition_has_russian_text_and_the_same_numbers(deck):
    from pptx import Presentation
    from pypdf import PdfReader

    en, _, ru = deck
    assert (ru.pptx.name, ru.pdf.name) == ("report.ru.pptx", "report.ru.pdf")
    assert en.pptx.exists() and ru.pptx.exists()  # both editions side by side in --out
    assert ru.untranslated == []
    assert len(ru.slides) == len(en.slides)
    for e, r in zip(en.slides, ru.slides):
        assert CYRILLIC.search(r.title) and not CYRILLIC.search(_text(e)), r.title
        # every number of the English slide, and no other, is on the Russian one
        assert sorted(re.findall(r"\d+(?:[.,]\d+)*", _text(e))) == sorted(
            re.findall(r"\d+(?:[.,]\d+)*", _text(r))
        ), e.title
    assert _titles(ru)[0] == "rag: ответы с источниками из ваших документов"
    assert "Эксперименты" in _titles(ru) and "Инженерные бенчмарки" in _titles(ru)
    exp = next(s for s in ru.slides if s.title == "Эксперименты").table
    same = [[c.replace("не измерено", NM) for c in row] for row in exp.rows]
    assert same == next(s for s in en.slides if s.title == "Experiments").table.rows
    pdf = PdfReader(str(ru.pdf))
    assert len(pdf.pages) == len(ru.slides) and "ответы с источниками" in pdf.pages[0].extract_text()
    prs = Presentation(str(ru.pptx))
    assert "ответы с источниками" in prs.slides[0].shapes[0].text_frame.text


def test_the_russian_table_keeps_every_field():
    from eval.report.ru import RU

    def fields(s: str) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(s) if f is not None}

    assert {en: fields(en) for en in RU} == {en: fields(ru) for en, ru in RU.items()}


def test_a_bad_lang_is_one_line_listing_the_valid_ones(tmp_path):
    from rag.cli import app

    res = CliRunner().invoke(app, ["report", "--lang", "fr", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "en, ru" in res.output and "fr" in res.output
    assert not (tmp_path / "o").exists()


def test_a_font_without_the_letters_is_one_clear_line():
    from eval.report.render import check_glyphs

    check_glyphs("Съешь же ещё этих мягких французских булок")
    with pytest.raises(BadInput, match="fonts-dejavu-core") as e:
        check_glyphs("漢字")
    assert "\n" not in str(e.value)


def test_pdf_has_one_page_per_slide_and_the_title(deck):
    from pypdf import PdfReader

    rep, *_ = deck
    pdf = PdfReader(str(rep.pdf))
    assert len(pdf.pages) == len(rep.slides)
    assert "rag: answers with sources from your own documents" in pdf.pages[0].extract_text()
    exp = pdf.pages[[s.title for s in rep.slides].index("Experiments")].extract_text()
    assert "smollm2-135m+tuned" in exp and "58.7" in exp


def test_selection_takes_the_biggest_setting_and_the_newest_row():
    old = experiment_row("extractive", run_id="r1", time="2026-01-01T00:00:00Z", f1=1.0)
    new = experiment_row("extractive", run_id="r2", time="2026-01-02T00:00:00Z", f1=2.0)
    small = experiment_row("extractive", run_id="r3", time="2026-01-03T00:00:00Z", limit=5, f1=3.0)
    sel = select_rows([old, new, small])
    assert [r["f1"] for r in sel.rows] == [2.0] and sel.other_settings == 1
    assert select_rows([old, new, small], run_id="r3").rows[0]["f1"] == 3.0
    with pytest.raises(BadInput, match="run id"):
        select_rows([old], run_id="nope")


def test_a_system_run_only_on_a_smaller_nested_sample_joins_with_its_own_n():
    head = experiment_row("extractive", run_id="big", limit=1300, n=1300)
    slow = experiment_row("qwen2.5-0.5b+tuned", run_id="small", limit=260, n=260, f1=50.0)
    other_k = experiment_row(
        "gemma3-270m", run_id="k3", limit=260, n=260, k=3
    )  # another setting: not mixed in
    trial = experiment_row("qwen2.5-0.5b+/root/runs/soup", run_id="small", limit=260, n=260, f1=60.0)
    sel = select_rows([head, slow, other_k, trial])  # a trial adapter folder does not join the product's
    assert [(r["system"], r["n"]) for r in sel.rows] == [("extractive", 1300), ("qwen2.5-0.5b+tuned", 260)]
    from eval.report.slides import experiments_table

    n_col = [h for h, _ in EXPERIMENT_COLUMNS].index("n")
    assert [row[n_col] for row in experiments_table(sel.rows, sel.setting).rows] == ["1300", "260"]


def test_a_gold_paragraph_run_without_retrieval_joins_the_setting_it_was_run_in():
    # `rag eval -s X@gold` alone reads no index (index None); it belongs with the retrieval rows of
    # the same test set, sample and seed, even when it is the newest row in the log.
    head = experiment_row(
        "extractive", run_id="a", time="2026-01-01T00:00:00Z", index="/idx", limit=1300, n=1300
    )
    gold = experiment_row(
        "qwen2.5-0.5b+tuned@gold", run_id="b", time="2026-01-02T00:00:00Z", index=None, limit=1300, n=1300
    )
    other = experiment_row(
        "extractive", run_id="c", time="2026-01-03T00:00:00Z", index="/other", limit=1300, n=1300
    )
    sel = select_rows([head, gold])
    assert [r["system"] for r in sel.rows] == ["extractive", "qwen2.5-0.5b+tuned@gold"]
    assert sel.setting["index"] == "/idx" and sel.other_settings == 0
    # with two indexes in the log, the newest retrieval setting wins and the gold run joins it
    sel = select_rows([head, gold, other])
    assert [(r["system"], r["run_id"]) for r in sel.rows] == [
        ("extractive", "c"),
        ("qwen2.5-0.5b+tuned@gold", "b"),
    ]
    assert sel.other_settings == 1


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(BadInput, match="rag eval"):
        load_log(tmp_path)
    from rag.cli import app

    res = CliRunner().invoke(app, ["report", "--runs", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "rag eval" in res.output
    assert not (tmp_path / "o" / "report.pdf").exists()


def test_cli_writes_both_files(tmp_path):
    from rag.cli import app

    runs = tmp_path / "runs"
    append_experiments([experiment_row("extractive", index=str(tmp_path / "no-index"))], runs)
    res = CliRunner().invoke(app, ["report", "--runs", str(runs), "--out", str(tmp_path / "deck")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "deck" / "report.pptx").stat().st_size > 10_000
    assert (tmp_path / "deck" / "report.pdf").read_bytes().startswith(b"%PDF")


def test_pptx_shapes_stay_on_the_slide(deck):
    from pptx import Presentation
    from pptx.util import Emu

    rep, *_ = deck
    prs = Presentation(str(rep.pptx))
    for i, sl in enumerate(prs.slides, 1):
        for sh in sl.shapes:
            assert sh.left >= 0 and sh.top >= 0, (i, sh.name)
            assert sh.left + sh.width <= prs.slide_width + Emu(1), (i, sh.name)
            assert sh.top + sh.height <= prs.slide_height + Emu(1), (i, sh.name)


def test_a_soup_adapter_reads_as_a_soup_not_as_zero_steps():
    from eval.report.facts import Facts, Selection
    from eval.report.i18n import Lang
    from eval.report.slides import slide_adapters

    soup = {
        "hyperparameters": {"rank": 32, "alpha": 64},
        "training": {"steps": 0, "train_time_s": 6000.0, "examples_seen": 1760},
        "soup": {"parents": [{"folder": "segs/seg0", "share": 0.5}, {"folder": "segs/seg2", "share": 0.5}]},
    }
    f = Facts(selection=Selection(rows=[experiment_row("extractive")], setting={}), adapters={"q": soup})
    for lang in ("en", "ru"):
        t = Lang(lang)
        s = slide_adapters(f, t)
        [row] = s.table.rows
        word = "soup" if lang == "en" else "смесь"
        assert row[:5] == ["q", "32 / 64", f"{word}: 0.50 × seg0 + 0.50 × seg2", "1,760", "100"]
        assert row[5:] == ["–"] * 4  # no speed, loss or validation of its own: not a made-up 0
        assert "bench_abstain" in s.footnote and not t.missing


def test_a_comparison_missing_from_the_headline_run_is_borrowed_from_a_nested_run_of_the_same_systems():
    from eval.report.facts import select_rows
    from eval.report.slides import _tuning_lines

    def cmp(b, diff):
        return {"b": b, "metric": "f1", "diff": diff, "lo": diff - 3, "hi": diff + 3, "n": 300}

    big = dict(run_id="20260101T000000Z-big", time="2026-01-01T00:00:00Z", limit=1300)
    small = dict(run_id="20260101T000000Z-small", time="2026-01-02T00:00:00Z", limit=400)
    tuned = dict(adapter="/a", model="qwen2.5-0.5b")
    rows = [
        experiment_row(
            "qwen2.5-0.5b+tuned", **big, **tuned, system_hash="t1", comparisons=[cmp("extractive", 48)]
        ),
        experiment_row("extractive", **big, system_hash="e1"),
        experiment_row(
            "qwen2.5-0.5b+tuned", **small, **tuned, system_hash="t1", comparisons=[cmp("qwen2.5-0.5b", 36)]
        ),
        experiment_row("qwen2.5-0.5b", **small, model="qwen2.5-0.5b", system_hash="u1"),
    ]
    sel = select_rows(rows)
    by = {r["system"]: r for r in sel.rows}
    assert set(by) == {"qwen2.5-0.5b+tuned", "extractive", "qwen2.5-0.5b"}
    got = {c["b"]: c for c in by["qwen2.5-0.5b+tuned"]["comparisons"]}
    assert got["extractive"].get("sample") is None and got["qwen2.5-0.5b"]["sample"] == 400
    [line] = _tuning_lines(sel.rows, by)
    assert (
        "+36.0 [95% CI +33.0, +39.0]" in line
        and "300 answerable questions of a nested 400-question run): " in line  # before the verdict
        and line.endswith(".")
    )
    # a nested run of a differently configured default (another adapter) lends nothing
    rows[2] = {**rows[2], "system_hash": "t0"}
    sel = select_rows(rows)
    tuned_row = next(r for r in sel.rows if r["system"] == "qwen2.5-0.5b+tuned")
    assert [c["b"] for c in tuned_row["comparisons"]] == ["extractive"]
