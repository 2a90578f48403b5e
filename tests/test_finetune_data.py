"""The RAFT-style data builder on small synthetic QA sets: rates, positions, split, leakage, cache."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from finetune import data as fdata
from finetune.data import DataConfig, build_dataset, load_examples, majority_answer
from rag.errors import BadInput, DataLeak
from rag.prompt import ABSTAIN

VOCAB = (
    "river mountain castle harbor village church market bridge forest island valley tower garden "
    "station museum library palace temple school factory"
).split()


def _rows(n_articles: int = 12, paras: int = 4, qs: int = 5, seed: int = 0) -> list[dict]:
    """JSONL rows: each question's answer is a word that occurs in its paragraph only."""
    rng = random.Random(seed)
    rows = []
    for a in range(n_articles):
        for p in range(paras):
            answers = [f"ans{a}x{p}x{q}" for q in range(qs)]
            words = [rng.choice(VOCAB) for _ in range(40)] + answers
            rng.shuffle(words)
            ctx = " ".join(words) + "."
            for q, ans in enumerate(answers):
                topic = " ".join(rng.sample(VOCAB, 3))
                rows.append(
                    {
                        "id": f"{a}-{p}-{q}",
                        "title": f"Article {a}",
                        "question": f"which {topic} {q}?",
                        "context": ctx,
                        "answers": [ans, ans, f"the {ans} thing"],
                    }
                )
    return rows


@pytest.fixture(autouse=True)
def no_eval_sets(monkeypatch):
    """The leakage guard's reference set, empty unless a test fills it (the real one needs the bigbench sdist)."""
    held: set[str] = set()
    monkeypatch.setattr("assets.bigbench.eval_passage_hashes", lambda: held)
    return held


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows()) + "\n")
    return path


def test_gold_less_rate_and_shuffled_positions(jsonl, tmp_path):
    ds = build_dataset(
        DataConfig(source=str(jsonl), p_gold=0.8, distractors=3, min_distractors=3, val_fraction=0.2),
        cache_dir=tmp_path / "c",
    )
    exs = ds.train + ds.val
    assert len(exs) == 12 * 4 * 5
    no_gold = [e for e in exs if e.gold is None]
    assert 0.12 < len(no_gold) / len(exs) < 0.28  # 1 - P = 0.2, 240 draws
    assert all(e.target == ABSTAIN and e.answer is None for e in no_gold)
    positions = Counter(e.gold for e in exs if e.gold is not None)
    assert set(positions) == {1, 2, 3, 4} and min(positions.values()) > 20  # spread, not always first
    for e in exs:
        assert len(e.passages) == 4  # gold-less examples get one more distractor: length gives nothing away
        others = [p for k, p in enumerate(e.passages, 1) if k != e.gold]
        assert not any(a in p.text for p in others for a in e.answers[:1])  # no distractor holds the answer
        if e.gold is not None:
            assert e.answers[0] in e.passages[e.gold - 1].text
            assert e.target == f"{e.answers[0]} [{e.gold}]"  # the majority answer, cited


def test_distractor_count_is_drawn_in_range(jsonl, tmp_path):
    ds = build_dataset(
        DataConfig(source=str(jsonl), distractors=4, min_distractors=1), cache_dir=tmp_path / "c"
    )
    counts = Counter(len(e.passages) for e in ds.train if e.gold is not None)
    assert set(counts) == {2, 3, 4, 5}


def test_split_is_by_article_and_seeded(jsonl, tmp_path):
    a = build_dataset(DataConfig(source=str(jsonl), val_fraction=0.25, seed=1), cache_dir=tmp_path / "a")
    b = build_dataset(DataConfig(source=str(jsonl), val_fraction=0.25, seed=1), cache_dir=tmp_path / "b")
    c = build_dataset(DataConfig(source=str(jsonl), val_fraction=0.25, seed=2), cache_dir=tmp_path / "c")
    assert {e.article for e in a.train}.isdisjoint({e.article for e in a.val})
    assert len({e.article for e in a.val}) == 3
    assert a.hash == b.hash and a.hash != c.hash
    # Validation distractors come from validation articles only.
    val_texts = {p.text for e in a.val for p in e.passages}
    train_texts = {p.text for e in a.train for p in e.passages}
    assert val_texts.isdisjoint(train_texts)


def test_cache_is_reused_and_checked(jsonl, tmp_path, monkeypatch):
    cfg = DataConfig(source=str(jsonl))
    first = build_dataset(cfg, cache_dir=tmp_path)
    assert first.path.exists() and len(load_examples(first.path)) == len(first.train) + len(first.val)
    monkeypatch.setattr(fdata, "_build", lambda *a, **k: pytest.fail("rebuilt despite a valid cache"))
    again = build_dataset(cfg, cache_dir=tmp_path)
    assert again.hash == first.hash and [e.id for e in again.train] == [e.id for e in first.train]


def test_duplicates_are_dropped(tmp_path):
    rows = _rows(n_articles=3)
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows + rows[:7]) + "\n")
    ds = build_dataset(DataConfig(source=str(path)), cache_dir=tmp_path / "c")
    assert len(ds.train) + len(ds.val) == len(rows)
    assert ds.stats["duplicate_questions"] == 7


def test_leakage_guard_names_the_overlap(jsonl, tmp_path, no_eval_sets):
    from assets.bigbench import passage_hash

    ctxs = sorted({r["context"] for r in _rows()})
    no_eval_sets.update(passage_hash(c) for c in ctxs[:3])
    with pytest.raises(DataLeak, match="3 of 48 training passages"):
        build_dataset(DataConfig(source=str(jsonl)), cache_dir=tmp_path)


def test_squad_json_source(tmp_path):
    rows = _rows(n_articles=3)
    arts: dict[str, dict] = {}
    for r in rows:
        paras = arts.setdefault(r["title"], {})
        paras.setdefault(r["context"], []).append(
            {
                "id": r["id"],
                "question": r["question"],
                "answers": [{"text": a, "answer_start": r["context"].find(a)} for a in r["answers"]],
            }
        )
    squad = {
        "version": "1.1",
        "data": [
            {"title": t, "paragraphs": [{"context": c, "qas": q} for c, q in p.items()]}
            for t, p in arts.items()
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    ds = build_dataset(DataConfig(source=str(path)), cache_dir=tmp_path / "c")
    assert len(ds.train) + len(ds.val) == len(rows)


def test_bad_sources_name_the_fix(tmp_path):
    with pytest.raises(BadInput, match="--data squadshifts"):
        build_dataset(DataConfig(source=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(BadInput, match="bad.jsonl:1"):
        build_dataset(DataConfig(source=str(bad)))
    with pytest.raises(BadInput, match="p_gold"):
        build_dataset(DataConfig(source=str(bad), p_gold=1.5))


def test_majority_answer_prefers_consensus_then_short():
    assert majority_answer(["a long sentence answer", "span", "span"]) == "span"
    assert majority_answer(["a long sentence answer", "short span"]) == "short span"
