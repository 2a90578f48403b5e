"""Metrics against hand-computed cases from their reference definitions."""

from __future__ import annotations

import pytest

from eval import metrics as M
from eval.testset import Question
from rag.types import Chunk


# ---------------------------------------------------------------- SQuAD v1.1 EM/F1
@pytest.mark.parametrize(
    "pred, gold, em, f1",
    [
        ("the Denver Broncos", "Denver Broncos", 1.0, 1.0),  # article dropped
        ("Denver Broncos!", "denver broncos", 1.0, 1.0),  # punctuation and case
        ("U.S.", "US", 1.0, 1.0),  # punctuation removed inside tokens
        ("an apple a day", "apple day", 1.0, 1.0),  # every article dropped
        ("theater", "ater", 0.0, 0.0),  # "the" inside a word is not an article
        ("Broncos", "Denver Broncos", 0.0, 2 * 1.0 * 0.5 / 1.5),  # P=1, R=1/2
        ("the the cat cat", "cat", 0.0, 2 * 0.5 * 1.0 / 1.5),  # Counter overlap: 1 of 2 predicted tokens
        ("", "Denver", 0.0, 0.0),
        ("Carolina Panthers", "Denver Broncos", 0.0, 0.0),
    ],
)
def test_em_f1_single_gold(pred, gold, em, f1):
    assert M.exact_match(pred, gold) == em
    assert M.f1(pred, gold) == pytest.approx(f1)


def test_em_f1_max_over_golds():
    golds = ["Santa Clara, California", "Levi's Stadium", "Levi's Stadium in the San Francisco Bay Area"]
    # vs gold 1: P = 2/2, R = 2/3 -> F1 0.8; vs the others 0
    assert M.em_f1("Santa Clara", golds) == (0.0, pytest.approx(0.8))
    assert M.em_f1("levis stadium", golds) == (1.0, 1.0)
    assert M.em_f1("anything", []) == (0.0, 0.0)


def test_normalize_is_official():
    assert M.normalize_answer("  The  Quick,   brown fox. ") == "quick brown fox"
    assert M.normalize_answer("A-ha!") == "aha"


# ---------------------------------------------------------------- retrieval
def test_retrieval_metrics_on_toy_ranking():
    rankings = [[False, True, False], [True, False, False], [False, False, False], [False] * 10 + [True]]
    ranks = [M.first_relevant_rank(r) for r in rankings]
    assert ranks == [2, 1, None, 11]
    assert M.recall_at_k(ranks, 1) == pytest.approx(1 / 4)
    assert M.recall_at_k(ranks, 2) == pytest.approx(2 / 4)
    assert M.recall_at_k(ranks, 20) == pytest.approx(3 / 4)
    assert M.mrr_at_k(ranks, 10) == pytest.approx((1 / 2 + 1) / 4)  # rank 11 is beyond MRR@10


def test_gold_hit_is_an_overlapping_chunk_of_the_same_source():
    from eval.run import is_gold_hit

    q = Question("q", "?", ("x",), False, source="A.txt", start=150, end=300)
    assert is_gold_hit(Chunk("c", "corpus/A.txt", "t", 100, 200), q)
    assert not is_gold_hit(Chunk("c", "A.txt", "t", 0, 150), q)  # half-open: touches, no overlap
    assert not is_gold_hit(Chunk("c", "B.txt", "t", 100, 200), q)
    para = "Super Bowl 50 was an American football game to determine the champion of the NFL."
    qc = Question("q", "?", ("x",), False, context=para)
    assert is_gold_hit(Chunk("c", "x.txt", "Intro. " + para[:60], 0, 67), qc)
    assert not is_gold_hit(Chunk("c", "x.txt", "Something else entirely about chloroplasts.", 0, 40), qc)


# ---------------------------------------------------------------- abstention, citations, grounding
def test_abstention_scores():
    abstained = [True, True, False, False, True]
    unanswerable = [True, False, True, False, True]
    s = M.abstention_scores(abstained, unanswerable)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["wrong_rate"] == pytest.approx(1 / 2)
    assert M.abstention_scores([False], [False])["recall"] is None


def test_citation_and_grounding():
    passage = "The Denver Broncos defeated the Carolina Panthers 24-10."
    assert M.contains_answer(passage, ["carolina panthers"])
    assert not M.contains_answer(passage, ["Panther"])  # token boundaries
    assert M.grounding_score("Denver Broncos", [passage]) == 1.0
    assert M.grounding_score("Denver Broncos in Miami", [passage]) == pytest.approx(2 / 3)
    assert M.grounding_score("Denver Broncos", []) == 0.0  # cites nothing: nothing backs it
    # One definition with the reader's `supported` check (rag.text.support): an answer without content
    # words has nothing unbacked (was None under eval's old private stopword list).
    assert M.grounding_score("the", [passage]) == 1.0
    assert M.grounding_score("the Bronco", [passage]) == 1.0  # plurals folded (was 0.0 without stemming)
    assert M.grounding_score("Panthers 24", [passage]) == 1.0  # "24-10" splits on the hyphen (was 0.5)
    assert M.correct_with_citation(0.5, False, True)
    assert not M.correct_with_citation(0.49, False, True)
    assert not M.correct_with_citation(1.0, False, False)


# ---------------------------------------------------------------- statistics
def test_bootstrap_constant_difference_has_a_point_ci():
    r = M.paired_bootstrap([3.0, 5.0, 7.0, 9.0], [1.0, 3.0, 5.0, 7.0], n_boot=500)
    assert (r.diff, r.lo, r.hi, r.n) == (2.0, 2.0, 2.0, 4)
    same = M.paired_bootstrap([0.2, 0.9, 0.4], [0.2, 0.9, 0.4], n_boot=200)
    assert (same.diff, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_bootstrap_matches_the_normal_approximation():
    # a - b is 1 on half of 400 items and 0 on the rest: mean 0.5, sd 0.5, se 0.025,
    # so the 95% CI is about 0.5 +- 1.96 * 0.025 = [0.451, 0.549].
    a = [1.0] * 200 + [0.0] * 200
    b = [0.0] * 400
    r = M.paired_bootstrap(a, b, n_boot=4000, seed=1)
    assert r.diff == pytest.approx(0.5)
    assert r.lo == pytest.approx(0.451, abs=0.008)
    assert r.hi == pytest.approx(0.549, abs=0.008)
    assert r.p_le_0 == 0.0
    with pytest.raises(ValueError):
        M.paired_bootstrap([1.0], [1.0, 2.0])


def test_percentiles():
    vals = list(range(1, 101))
    assert M.percentile(vals, 50) == pytest.approx(50.5)
    assert M.percentile(vals, 95) == pytest.approx(95.05)
    assert M.percentile([], 50) is None
