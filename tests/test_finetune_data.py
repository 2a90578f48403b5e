"""The RAFT-style data builder on small synthetic QA sets: rates, positions, split, leakage, cache."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from finetune import data as fdata
from finetune import nearmiss
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
    exs = [e for e in ds.train + ds.val if e.kind == "raft"]
    assert len(exs) == 12 * 4 * 5
    no_gold = [e for e in exs if e.gold is None]
    assert 0.12 < len(no_gold) / len(exs) < 0.28  # 1 - P = 0.2, 240 draws
    assert all(e.target == ABSTAIN and e.answer is None for e in no_gold)
    positions = Counter(e.gold for e in exs if e.gold is not None)
    assert set(positions) == {1, 2, 3, 4} and min(positions.values()) > 20  # spread, not always first
    for e in ds.train + ds.val:  # near misses too
        assert len(e.passages) == 4  # gold-less examples get one more distractor: length gives nothing away
    for e in exs:
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
    assert sum(e.kind == "raft" for e in ds.train + ds.val) == len(rows)
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
    assert sum(e.kind == "raft" for e in ds.train + ds.val) == len(rows)


def test_bad_sources_name_the_fix(tmp_path):
    with pytest.raises(BadInput, match="--data squadshifts"):
        build_dataset(DataConfig(source=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(BadInput, match="bad.jsonl:1"):
        build_dataset(DataConfig(source=str(bad)))
    with pytest.raises(BadInput, match="p_gold"):
        build_dataset(DataConfig(source=str(bad), p_gold=1.5))
    with pytest.raises(BadInput, match="disfluent_answered"):
        build_dataset(DataConfig(source=str(bad), disfluent_answered=1.5))


def test_majority_answer_prefers_consensus_then_short():
    assert majority_answer(["a long sentence answer", "span", "span"]) == "span"
    assert majority_answer(["a long sentence answer", "short span"]) == "short span"


# ---------------------------------------------------------------- near misses
FIRST = "Alice Bruno Carla Dmitri Elena Farid Greta Hiro Ines Jonas Keiko Lars Mira Nadia Omar Petra".split()
LAST = (
    "Abbott Brandt Castillo Dorsey Engel Fischer Garza Holm Ito Jansen Kovacs Lindqvist Moreau Novak".split()
)
LAST += "Ortiz Pereira".split()
TOWNS = "Arden Belmora Calvi Dunmore Eskola Farrow Galeno Hollin Istra Jarrow Kessel Lorne Marisco".split()
TOWNS += "Norvik Ostend Pella".split()
PEOPLE = [f"{f} {last}" for f, last in zip(FIRST, LAST, strict=True)]
YEARS = [str(1950 + 2 * i) for i in range(16)]


def _named_rows(roster: bool = False, seed: int = 0) -> list[dict]:
    """8 articles x 2 paragraphs; paragraph i is about PEOPLE[i] of TOWNS[i], with a record out in YEARS[i].

    With `roster`, every paragraph also lists every person, town and year (no swap can then name
    something the passages do not).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(16):
        first, last = PEOPLE[i].split()
        town, year = TOWNS[i], YEARS[i]
        filler = " ".join(rng.choice(VOCAB) for _ in range(25))
        ctx = (
            f"{first} {last} grew up in {town} near the {filler}. Ms. {last} said that her first record was "
            f"ans{i}x0 and that it came out in {year}. Critics in {town} praised ans{i}x1, and a shop named "
            f"ans{i}x2 opened there."
        )
        if roster:
            ctx += " Guests: " + ", ".join(PEOPLE + TOWNS) + ". Years: " + ", ".join(YEARS) + "."
        qs = [
            (f"What was the first record of {first} {last}?", f"ans{i}x0"),
            (f"What did critics in {town} praise?", f"ans{i}x1"),
            (f"Which record came out in {year}?", f"ans{i}x0"),
            (f"Where did Ms. {last} grow up?", town),
            (f"What shop opened in the town where {first} {last} grew up?", f"ans{i}x2"),
        ]
        for q, (question, ans) in enumerate(qs):
            rows.append(
                {
                    "id": f"n{i}-{q}",
                    "title": f"Article {i // 2}",
                    "question": question,
                    "context": ctx,
                    "answers": [ans],
                }
            )
    return rows


@pytest.fixture
def named(tmp_path):
    path = tmp_path / "named.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _named_rows()) + "\n")
    return path


def _kind_of(entity: str) -> str:
    if entity in PEOPLE or entity in LAST:
        return "person"
    return "place" if entity in TOWNS else "year" if entity in YEARS else "?"


def _diff(old: str, new: str) -> tuple[list[str], list[str]]:
    """The words of `old` and of `new` between their common first and last words."""
    a, b = old.rstrip("?").replace(",", "").split(), new.rstrip("?").replace(",", "").split()
    while a and b and a[0] == b[0]:
        a, b = a[1:], b[1:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    return a, b


def _named(text: str, passage: str) -> bool:
    return re.search(rf"\b{re.escape(text)}\b", passage) is not None


def test_entities_are_found_and_typed_by_rule():
    lex = nearmiss.lexicon(
        [
            "Beyonce said the tour would open in Houston. Rihanna said she would sing in Houston too.",
            "Both came to Houston: Beyonce said yes and Rihanna said no. Mr. Obama stayed in Paris.",
            "He had lived in Paris before, and in Paris he met Ms. Lindqvist.",
        ]
    )
    q = "When did Beyonce release Lemonade?"
    found = nearmiss._mentions(q, lex)
    assert [(m.text, m.kind) for m in found] == [
        ("Beyonce", "speaker")
    ]  # "Lemonade": nothing says what it is
    assert (
        nearmiss.replace_span(q, found[0].start, found[0].end, "Rihanna")
        == "When did Rihanna release Lemonade?"
    )
    found = nearmiss._mentions("Why did Mr. Obama fly to Paris on Monday in 2009 with 12 points?", lex)
    assert [(m.text, m.kind) for m in found] == [
        ("Obama", "person"),
        ("Paris", "place"),
        ("Monday", "weekday"),
        ("2009", "year"),
    ]  # "12 points": "points" follows too few numbers here to be a unit
    assert (
        nearmiss._mentions("What happened between 1917 and 1939?", lex) == []
    )  # a range: swapping one half overlaps


def test_entity_swap_abstains_and_names_nothing_shown(named, tmp_path):
    ds = build_dataset(
        DataConfig(source=str(named), swap_rate=0.3, disfluent_rate=0, val_fraction=0.25), cache_dir=tmp_path
    )
    rows = {r["id"]: r for r in _named_rows()}
    swaps = [e for e in ds.train + ds.val if e.kind == "swap"]
    assert len(swaps) == ds.stats["train_swap"] + ds.stats["val_swap"] >= 20
    kinds = Counter()
    for e in swaps:
        row = rows[e.id.removesuffix("~swap")]
        texts = [p.text for p in e.passages]
        assert e.target == ABSTAIN and e.gold is None and e.answer is None and e.answers == []
        assert row["context"] in texts  # the paragraph the question was about is shown: a near miss
        old, new = (" ".join(w) for w in _diff(row["question"], e.question))
        assert old and new and new != old
        assert _named(old, row["context"])  # the swapped-out entity is one the shown paragraph names
        assert _kind_of(new) == _kind_of(old) != "?"  # a person for a person, a town for a town
        assert not any(_named(w, t) for w in new.split() for t in texts)  # no shown passage names it
        kinds[_kind_of(old)] += 1
    assert set(kinds) == {"person", "place", "year"}


def test_swap_skips_entities_a_shown_passage_names(tmp_path):
    path = tmp_path / "roster.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _named_rows(roster=True)) + "\n")
    ds = build_dataset(DataConfig(source=str(path), swap_rate=0.3, disfluent_rate=0), cache_dir=tmp_path)
    assert not [e for e in ds.train + ds.val if e.kind == "swap"]
    assert ds.stats["swap_no_replacement"] > 0 and ds.stats["train_swap_short"] > 0


def test_disfluent_targets_follow_the_final_question(named, tmp_path):
    ds = build_dataset(
        DataConfig(source=str(named), swap_rate=0, disfluent_rate=0.5, disfluent_answered=0.5),
        cache_dir=tmp_path,
    )
    rows = {r["id"]: r for r in _named_rows()}
    dis = [e for e in ds.train + ds.val if e.kind == "disfluent"]
    answered = [e for e in dis if e.gold is not None]
    assert len(dis) >= 30 and abs(len(answered) - len(dis) / 2) <= 2
    interruptions = set()
    for e in dis:
        texts = [p.text for p in e.passages]
        first_id, final_id = e.id.split("~")
        first = rows[first_id]
        if final_id == "fix":  # "When did X, no, Y ...": a correction of one entity
            assert first["context"] in texts
            said, meant = _diff(first["question"], e.question)
            names = [w for w in meant if (w[0].isupper() or w[0].isdigit()) and w != "I"]
            assert not said and names  # the question's own words, with an interruption and a name added
            if e.gold is not None:  # the name was corrected to the question's own: answer it
                assert texts[e.gold - 1] == first["context"]
                assert e.target == f"{majority_answer(first['answers'])} [{e.gold}]"
            else:  # corrected to a name no shown passage has
                assert e.target == ABSTAIN
                assert not any(_named(n, t) for n in names[-1:] for t in texts)
            continue
        final = rows[final_id]
        b = final["question"]
        assert e.question.endswith(b[1:]) and e.question.lower().endswith(b.lower())  # the final intent
        assert e.question.startswith(" ".join(first["question"].split()[:2]))  # after an abandoned one
        interruptions.add(e.question[: -len(b)].rsplit("?", 1)[-1].split()[-1])
        if e.gold is not None:
            assert (
                texts[e.gold - 1] == final["context"] == first["context"]
            )  # both answerable: pick the final
            assert e.target == f"{majority_answer(final['answers'])} [{e.gold}]"
            assert first["answers"] != final["answers"]
        else:
            assert e.target == ABSTAIN
            assert first["context"] in texts  # the abandoned question's paragraph is the trap
            assert final["context"] not in texts
            assert not any(_named(a, t) for a in final["answers"] for t in texts)
    assert len(interruptions) >= 4  # several templates ("no", "mean", "rather", ...)
    for style in ("correction", "restart", "full"):
        assert ds.stats[f"train_disfluent_{style}"] > 0


def test_near_miss_rates_follow_the_config(named, tmp_path):
    cfg = DataConfig(
        source=str(named), swap_rate=0.1, disfluent_rate=0.2, disfluent_answered=0.25, val_fraction=0.25
    )
    ds = build_dataset(cfg, cache_dir=tmp_path / "on")
    for split, exs in (("train", ds.train), ("val", ds.val)):
        base = sum(e.kind == "raft" for e in exs)
        swaps = sum(e.kind == "swap" for e in exs)
        dis = [e for e in exs if e.kind == "disfluent"]
        assert swaps == round(0.1 * base) == ds.stats[f"{split}_swap"]
        assert len(dis) == round(0.2 * base)
        assert (
            sum(e.gold is not None for e in dis)
            == round(len(dis) * 0.25)
            == ds.stats[f"{split}_disfluent_answer"]
        )
    off = build_dataset(
        DataConfig(source=str(named), swap_rate=0, disfluent_rate=0, val_fraction=0.25),
        cache_dir=tmp_path / "off",
    )
    assert {e.kind for e in off.train + off.val} == {"raft"}
    # The RAFT examples do not move when near misses are switched on.
    assert [e.to_json() for e in off.train + off.val] == [
        e.to_json() for e in ds.train + ds.val if e.kind == "raft"
    ]
    default = build_dataset(DataConfig(source=str(named)), cache_dir=tmp_path / "default")
    exs = default.train + default.val
    assert 0.10 <= sum(e.kind != "raft" for e in exs) / len(exs) <= 0.15  # on by default, at a modest rate


def test_near_misses_are_seeded(named, tmp_path):
    def near_misses(seed: int, where: str) -> list[tuple[str, str]]:
        ds = build_dataset(
            DataConfig(source=str(named), swap_rate=0.2, disfluent_rate=0.2, seed=seed),
            cache_dir=tmp_path / where,
        )
        return [(e.question, e.target) for e in ds.train + ds.val if e.kind != "raft"]

    a, b, c = near_misses(1, "a"), near_misses(1, "b"), near_misses(2, "c")
    assert a == b and len(a) > 20
    assert a != c


def test_sources_mix_with_plus_and_sample_with_at(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(r) for r in _rows(n_articles=6, seed=1)) + "\n")
    b.write_text("\n".join(json.dumps({**r, "title": "B " + r["title"]}) for r in _rows(n_articles=4)) + "\n")
    arts, h = fdata._articles_from_source(f"{a}@50+{b}")
    kept = Counter(art["title"].startswith("B ") for art in arts for p in art["paragraphs"] for _ in p["qas"])
    assert kept == {False: 50, True: 80}  # 50 of a's 120 questions, all 80 of b's
    assert sum(len(p["paragraphs"]) for p in arts) == 6 * 4 + 4 * 4  # paragraphs stay as distractors
    again, h2 = fdata._articles_from_source(f"{a}@50+{b}")
    assert again == arts and h2 == h  # seeded
    assert fdata._articles_from_source(f"{a}@51+{b}")[1] != h
    ds = build_dataset(DataConfig(source=f"{a}@50+{b}", swap_rate=0, disfluent_rate=0), cache_dir=tmp_path)
    assert len({(e.article, e.id) for e in ds.train + ds.val}) == 130
    with pytest.raises(BadInput, match="no training data"):
        fdata._articles_from_source(f"{a}+{tmp_path / 'missing.jsonl'}")


def test_twists_abstain_over_their_own_paragraph(named, tmp_path):
    ds = build_dataset(
        DataConfig(source=str(named), swap_rate=0, disfluent_rate=0, twist_rate=0.5, val_fraction=0.25),
        cache_dir=tmp_path,
    )
    rows = {r["id"]: r for r in _named_rows()}
    twists = [e for e in ds.train + ds.val if e.kind == "twist"]
    assert len(twists) == ds.stats["train_twist"] + ds.stats["val_twist"] >= 12
    rules = Counter()
    for e in twists:
        row = rows[e.id.removesuffix("~twist")]
        q, texts = row["question"], [p.text for p in e.passages]
        assert e.target == ABSTAIN and e.gold is None and e.answers == []
        assert row["context"] in texts  # the paragraph the question was about is shown: a near miss
        negated = nearmiss.negated_question(q)
        antonyms = {nearmiss.replace_span(q, a, b, r): r for a, b, r in nearmiss.antonym_twists(q)}
        # the twisted question ends the text, whole or after an abandoned one ("Where did Ms., no, what ...")
        meant = [t for t in [negated, *antonyms] if t and e.question.endswith(t[1:])]
        assert len(meant) == 1, e.question
        if meant[0] == negated:  # "What was not the first record of ...?"
            rules["negation"] += 1
            assert not re.search(r"\b(not|no|never)\b", row["context"])  # it could answer a negation
        else:  # "What was the last record of ...?": the new word is in no shown passage
            rules["antonym"] += 1
            assert not any(_named(antonyms[meant[0]], t) for t in texts)
        rules["disfluent"] += e.question != meant[0]
    assert rules["negation"] and rules["antonym"]
    assert rules["disfluent"] == ds.stats["twist_disfluent"] > 0  # some said disfluently, as Disfl-QA's are
    assert nearmiss.negated_question("Why isn't it here?") is None  # already negated


def test_twists_off_keep_the_data_cache_key_of_before():
    """The key the code before twist_rate computed (e50e5803...): the default examples, and so the data
    stream a segment chain continues, are not rebuilt under a new name."""
    from finetune.data import _cache_key

    assert _cache_key(DataConfig(source="squadshifts"), "x") == "e50e5803ce83067e"
    assert _cache_key(DataConfig(source="squadshifts", twist_rate=0.1), "x") != "e50e5803ce83067e"


def test_twist_rule_changes_get_their_own_data_cache_key(monkeypatch):
    """Data with twists built by v1's rules (segment 4's, 52ee941b...) is not read back as v2's."""
    import finetune.data as data

    cfg = DataConfig(source="squadshifts", twist_rate=0.15)
    v2 = data._cache_key(cfg, "x")
    monkeypatch.setattr(data, "TWIST_RULES", 1)
    assert data._cache_key(cfg, "x") == "52ee941b0292eaa2" != v2
    assert data._cache_key(DataConfig(source="squadshifts"), "x") == "e50e5803ce83067e"
