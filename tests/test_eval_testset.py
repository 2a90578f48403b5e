"""Test set loading: JSONL and SQuAD JSON, errors with line numbers, stratified sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.testset import Question, gold_context, load_testset, sample
from rag.errors import BadInput


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_loads_answerable_and_unanswerable_rows(tmp_path):
    f = _jsonl(
        tmp_path / "t.jsonl",
        [
            {
                "id": "a",
                "question": "Who won?",
                "answers": ["Denver Broncos", "Broncos"],
                "source": "S.txt",
                "paragraph": 0,
                "start": 0,
                "end": 20,
            },
            {"id": "b", "question": "Who lost?", "answers": []},
            {
                "id": "c",
                "question": "Why?",
                "answers": [],
                "unanswerable": True,
                "source": "S.txt",
                "paragraph": 1,
                "start": 22,
                "end": 40,
            },
        ],
    )
    ts = load_testset([f])
    assert [q.id for q in ts.questions] == ["a", "b", "c"]
    assert ts.questions[0].answers == ("Denver Broncos", "Broncos") and not ts.questions[0].unanswerable
    assert ts.questions[1].unanswerable and ts.questions[2].unanswerable
    assert ts.questions[0].has_gold_span and not ts.questions[1].has_gold_span
    assert ts.describe()["n_unanswerable"] == 2 and len(ts.sha256) == 64


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"id": "x", "question": "Q?", "answers": ["a"]', "not valid JSON"),
        ('{"id": "x", "answers": ["a"]}', "missing 'question'"),
        ('{"id": "x", "question": "Q?", "answers": "a", "start": 5}', "'start' and 'end' go together"),
        (
            '{"id": "x", "question": "Q?", "answers": ["a"], "unanswerable": true}',
            "unanswerable must have no answers",
        ),
        ('{"id": "x", "question": "Q?", "answers": [3]}', "list of strings"),
        ('["not", "an", "object"]', "expected a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    good = json.dumps({"id": "ok", "question": "Fine?", "answers": ["yes"]})
    f = _jsonl(tmp_path / "bad.jsonl", [good, "", good.replace('"ok"', '"ok2"'), bad_line])
    with pytest.raises(BadInput) as e:
        load_testset([f])
    assert "bad.jsonl:4: " in str(e.value)  # blank lines still count
    assert message in str(e.value)


def test_duplicate_ids_are_refused(tmp_path):
    row = {"id": "same", "question": "Q?", "answers": ["a"]}
    a, b = _jsonl(tmp_path / "a.jsonl", [row]), _jsonl(tmp_path / "b.jsonl", [row])
    with pytest.raises(BadInput, match="repeats"):
        load_testset([a, b])


def test_missing_bundled_set_says_how_to_build_it(monkeypatch, tmp_path):
    import eval.testset as T

    monkeypatch.setattr(T, "BUNDLED_DIR", tmp_path / "nowhere")
    with pytest.raises(BadInput, match="scripts/"):
        T.load_testset(None)


def test_squad_json(tmp_path):
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": "Super Bowl 50 was won by the Denver Broncos.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Who won?",
                                "answers": [{"text": "Denver Broncos", "answer_start": 29}],
                            },
                            {"id": "q2", "question": "Who sang?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    f = tmp_path / "dev.json"
    f.write_text(json.dumps(doc))
    ts = load_testset([f])
    q1, q2 = ts.questions
    assert q1.answers == ("Denver Broncos",) and q1.context.startswith("Super Bowl 50")
    assert q2.unanswerable and q2.answers == ()
    assert gold_context(q1, None) == q1.context
    f.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}))
    with pytest.raises(BadInput, match="context"):
        load_testset([f])


def test_gold_context_reads_the_source_span(tmp_path):
    (tmp_path / "S.txt").write_text("First paragraph.\n\nSecond paragraph here.")
    q = Question("a", "?", ("x",), False, source="S.txt", start=18, end=40)
    assert gold_context(q, tmp_path) == "Second paragraph here."
    assert (
        gold_context(Question("b", "?", ("x",), False, source="Missing.txt", start=0, end=3), tmp_path)
        is None
    )


def test_sampling_is_seeded_and_keeps_the_mix():
    qs = [Question(str(i), f"q{i}?", () if i % 5 == 0 else ("a",), i % 5 == 0) for i in range(500)]
    a = sample(qs, 50, seed=3)
    assert len(a) == 50 and sum(q.unanswerable for q in a) == 10  # 20% unanswerable, as in the full set
    assert [q.id for q in a] == [q.id for q in sample(qs, 50, seed=3)]
    assert [q.id for q in a] != [q.id for q in sample(qs, 50, seed=4)]
    assert [int(q.id) for q in a] == sorted(int(q.id) for q in a)  # file order kept
    few = [Question("u", "?", (), True)] + [Question(str(i), "?", ("a",), False) for i in range(99)]
    assert sum(q.unanswerable for q in sample(few, 10, seed=0)) == 1  # a rare kind is not sampled away
    assert len(sample(qs, None)) == 500


def test_sampling_with_a_fixed_unanswerable_count_is_nested():
    qs = [Question(str(i), f"q{i}?", () if i % 5 == 0 else ("a",), i % 5 == 0) for i in range(500)]
    big = sample(qs, 130, seed=0, unanswerable=30)
    assert len(big) == 130 and sum(q.unanswerable for q in big) == 30
    small = sample(qs, 26, seed=0, unanswerable=6)
    assert {q.id for q in small} < {q.id for q in big}  # a quick run pairs with the headline run
    assert {q.id for q in sample(qs, 50, seed=0)} < {q.id for q in sample(qs, 200, seed=0)}
    with pytest.raises(BadInput, match="--unanswerable 101"):
        sample(qs, 200, seed=0, unanswerable=101)  # only 100 unanswerable questions exist


def test_cli_refuses_a_malformed_test_set_before_any_work(tmp_path, rag_home):
    from rag.cli import app

    f = _jsonl(tmp_path / "bad.jsonl", [{"id": "a", "question": "Q?", "answers": ["x"]}, "{oops"])
    r = CliRunner().invoke(app, ["eval", "--testset", str(f), "--systems", "extractive"])
    assert r.exit_code == 1
    assert "bad.jsonl:2" in r.output and "Traceback" not in r.output
    assert not (rag_home / "runs").exists()  # nothing ran
