"""`rag report`: a deck built from a small experiments log written here with eval/run.py's own writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import experiment_row
from typer.testing import CliRunner

from eval.report import write_report
from eval.report.facts import load_log, select_rows
from eval.report.slides import EXPERIMENT_COLUMNS, NA, NM
from eval.run import append_experiments
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
    "Engineering benchmarks",
    "Conclusions: what the measurements say",
    "Difficulties met, and how they were solved",
]


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
    rep = write_report(runs, tmp / "out")
    return rep, rows


def _slide(rep, title: str):
    return next(s for s in rep.slides if s.title == title)


def test_slide_titles_follow_the_brief(deck):
    rep, _ = deck
    assert [s.title for s in rep.slides] == TITLES


def test_experiments_table_equals_the_log_rows(deck):
    rep, rows = deck
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

    rep, _ = deck
    idx = [s.title for s in rep.slides].index("Experiments")
    prs = Presentation(str(rep.pptx))
    assert len(prs.slides) == len(rep.slides)
    tbl = next(sh for sh in prs.slides[idx].shapes if sh.has_table).table
    got = [[tbl.cell(r, c).text for c in range(len(tbl.columns))] for r in range(len(tbl.rows))]
    table = rep.slides[idx].table
    assert got == [table.header, *table.rows]


def test_missing_metrics_show_not_measured(deck):
    rep, _ = deck
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
    rep, _ = deck
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
    from eval.report.slides import slide_adapters, slide_benchmarks, slide_training

    f = Facts(selection=Selection(rows=[experiment_row("extractive")], setting={}))
    assert NM in slide_benchmarks(f).bullets[0]
    assert NM in slide_adapters(f).bullets[0]
    tr = slide_training(f, tmp_path)
    assert tr.image is None and NM in tr.bullets[0]
    f.benchmarks = {
        "index": {"chunks": 2414, "speedup_vs_langchain": 1.83, "date": "2026-01-01", "command": "x"}
    }
    t = slide_benchmarks(f).table
    assert t.rows == [["index", "chunks", "2,414", "speedup vs langchain", "1.83"]]


def test_pdf_has_one_page_per_slide_and_the_title(deck):
    from pypdf import PdfReader

    rep, _ = deck
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
    sel = select_rows([head, slow, other_k])
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

    rep, _ = deck
    prs = Presentation(str(rep.pptx))
    for i, sl in enumerate(prs.slides, 1):
        for sh in sl.shapes:
            assert sh.left >= 0 and sh.top >= 0, (i, sh.name)
            assert sh.left + sh.width <= prs.slide_width + Emu(1), (i, sh.name)
            assert sh.top + sh.height <= prs.slide_height + Emu(1), (i, sh.name)
