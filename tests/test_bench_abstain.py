"""The calibration benchmark's choices, offline (benchmarks/bench_abstain.py is not a package: imported by path)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_abstain as ba  # noqa: E402


def _p(declined: float, wrong: float) -> dict:
    return {"declined": declined, "wrong_declines": wrong}


def test_the_chosen_pair_never_breaks_the_wrong_decline_budget():
    # a loose cut declines the most but costs 19% wrong: with a 5% budget it must not win on declined - wrong
    best_of = [(-6.5, _p(0.717, 0.047)), (-3.5, _p(0.717, 0.064)), (0.5, _p(0.883, 0.193))]
    assert ba.choose_pair(best_of, 0.05)[0] == -6.5
    assert ba.choose_pair(best_of, 0.08)[0] == -6.5  # both fit 8%: -6.5 has the higher declined - wrong
    assert ba.choose_pair(best_of, 0.20)[0] == 0.5
    assert (
        ba.choose_pair([(0.5, _p(0.9, 0.3)), (1.0, _p(0.95, 0.4))], 0.05)[0] == 0.5
    )  # none fits: fewest wrong


def test_rates_are_kept_apart_per_source():
    rows = [
        {"id": "doc:a", "unanswerable": True, "gap": 2.0, "gap_names": 2.0, "f1": 0.0, "rerank_best": 1.0},
        {"id": "doc:b", "unanswerable": False, "gap": -3.0, "gap_names": -3.0, "f1": 1.0, "rerank_best": 5.0},
        {
            "id": "x",
            "unanswerable": True,
            "gap": math.inf,
            "gap_names": math.inf,
            "f1": 0.0,
            "rerank_best": -9.0,
        },
        {"id": "y", "unanswerable": False, "gap": -1.0, "gap_names": -1.0, "f1": 0.5, "rerank_best": -4.0},
    ]
    got = ba.per_source(rows, -3.5, 1.5, True)
    assert got["docs"] == {
        "answerable": 1,
        "unanswerable": 1,
        "declined": 1.0,
        "wrong_declines": 0.0,
        "answer_f1": 100.0,
        "span_f1": 100.0,
        "median_gap_answerable": -3.0,
        "median_gap_unanswerable": 2.0,
        "model_declines_answerable": 0,
    }
    assert got["squadshifts"]["declined"] == 1.0 and got["squadshifts"]["wrong_declines"] == 1.0  # cut -3.5
    assert ba.per_source(rows, -3.5, math.inf, True)["docs"]["declined"] == 0.0


def test_a_bad_docs_file_exits_with_one_line_naming_the_fix(tmp_path):
    import json

    import pytest

    good = {
        "id": "d1",
        "title": "man/sort",
        "question": "Which option?",
        "answers": ["-r"],
        "context": "-r rev",
    }
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(good) + "\n\n")
    assert ba.doc_rows(path) == [good]
    for text, says in [
        (json.dumps(good) + '\n{"id": "d2", "tit', "line 2 is not JSON"),
        (json.dumps({**good, "answers": "-r"}), "line 1 lacks answers"),
        ("[1, 2]", "line 1 lacks id, title"),
        ("\n", "has no rows"),
    ]:
        path.write_text(text)
        with pytest.raises(SystemExit) as e:
            ba.doc_rows(path)
        assert says in str(e.value) and "python -m finetune.manpages --out" in str(e.value)
    with pytest.raises(SystemExit, match="no file"):
        ba.doc_rows(tmp_path / "missing.jsonl")
