"""The ragas judge path with a scripted fake judge LLM: scores, parse failures counted, no network."""

from __future__ import annotations

import json
import socket

import pytest

from eval.judge import Judge, JudgeSample, summarize


def scripted_judge(bad_answers: set[str], empty_answers: set[str] = frozenset()):
    """A judge LLM that answers ragas' three prompts in valid JSON, except for some answers:
    for those in `bad_answers` it writes prose (unparsable), for `empty_answers` no statements."""

    def generate(prompt: str) -> str:
        # ragas renders the current input last, after its few-shot examples.
        current = prompt.rsplit("-----------------------------", 1)[-1]
        if any(b in current for b in bad_answers):
            return "Sure! Here is my analysis of the answer, in prose rather than JSON."
        if "Break down each sentence" in prompt:
            if any(e in current for e in empty_answers):
                return json.dumps({"statements": []})
            team = "Carolina Panthers" if "Carolina" in current else "Denver Broncos"
            return json.dumps({"statements": [f"The {team} won Super Bowl 50."]})
        if "judge the faithfulness" in prompt:
            verdict = 0 if "Carolina" in current else 1
            return json.dumps({"statements": [{"statement": "s", "reason": "r", "verdict": verdict}]})
        if "Generate a question for the given answer" in prompt:
            return json.dumps({"question": "Who won Super Bowl 50?", "noncommittal": 0})
        return "?"

    return generate


def _embed(texts):
    # Two fixed directions: the real question and generated questions about the game are identical.
    return [[1.0, 0.0] if "Super Bowl" in t else [0.0, 1.0] for t in texts]


@pytest.fixture
def no_network(monkeypatch):
    attempts = []

    def refuse(self, address, *a, **k):
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_judge_scores_and_counts_parse_failures(no_network):
    judge = Judge(generate=scripted_judge({"Garbled"}, {"Empty"}), embed=_embed)
    ctx = ["Super Bowl 50 was won by the Denver Broncos."]
    good = judge.score(JudgeSample("Who won Super Bowl 50?", "Denver Broncos", ctx))
    wrong = judge.score(JudgeSample("Who won Super Bowl 50?", "Carolina Panthers", ctx))
    garbled = judge.score(JudgeSample("Who won Super Bowl 50?", "Garbled answer", ctx))
    empty = judge.score(JudgeSample("Who won Super Bowl 50?", "Empty", ctx))
    assert (good.faithfulness, good.relevancy) == (1.0, pytest.approx(1.0))
    assert wrong.faithfulness == 0.0
    assert garbled.faithfulness is None and garbled.faithfulness_error == "RagasOutputParserException"
    assert garbled.relevancy is None and garbled.relevancy_error == "RagasOutputParserException"
    assert empty.faithfulness is None and empty.faithfulness_error == "nan"  # no statements: NaN, counted
    s = summarize([good, wrong, garbled, empty])
    assert s["judge_n"] == 4
    assert s["faithfulness"] == 0.5 and s["faithfulness_n"] == 2 and s["faithfulness_failed"] == 2
    assert s["relevancy_n"] == 3 and s["relevancy_failed"] == 1  # NaNs are counted, not averaged away
    assert no_network == []


CTX = "Super Bowl 50 was won by the Denver Broncos."


def _toy_run(tmp_path, n: int, answer):
    """A toy test set of `n` Super Bowl questions over one passage, a retriever returning it, and a
    reader factory whose readers answer `answer(system_name, question)` citing that passage."""
    from eval.testset import Question, TestSet
    from rag.types import Answer, Chunk, Citation, Hit

    qs = [
        Question(f"q{i}", f"Who won Super Bowl 50 (variant {i})?", ("Denver Broncos",), False, context=CTX)
        for i in range(n)
    ]
    ts = TestSet(name="toy", files=[str(tmp_path / "toy.jsonl")], sha256="0" * 64, questions=qs)

    class Reader:
        def __init__(self, name):
            self.name = name

        def answer(self, question, hits):
            c = hits[0].chunk
            return Answer(
                text=answer(self.name, question),
                abstained=False,
                citations=[Citation(1, c.doc, c.start, c.end)],
            )

    class Retriever:
        def search(self, q, k):
            return [Hit(Chunk("S.txt#0-45", "S.txt", CTX, 0, 45), 1.0)]

    return ts, qs, Retriever(), lambda spec: Reader(spec.name)


def test_judge_failures_reach_the_run_metrics(tmp_path, no_network):
    from eval.run import EvalConfig, SystemSpec, judge_ids, run_eval

    garbled = ("(variant 1)?", "(variant 2)?")
    ts, qs, retriever, readers = _toy_run(
        tmp_path, 5, lambda name, q: "Garbled" if q.endswith(garbled) else "Denver Broncos"
    )
    judge = Judge(generate=scripted_judge({"Garbled"}), embed=_embed, name="scripted")
    res = run_eval(
        ts,
        qs,
        [SystemSpec("fake", "llm", model="fake")],
        EvalConfig(judge_limit=4, runs=tmp_path),
        retriever=retriever,
        reader_factory=readers,
        judge=judge,
        index_key="toy",
    )
    m = res.systems[0]["metrics"]
    assert m["judge_n"] == 4  # a seeded subsample of 4 of the 5 questions
    garbled_judged = len({"q1", "q2"} & set(judge_ids(qs, 4, seed=0)))
    assert garbled_judged >= 1  # the test needs a garbled judge output in the subsample
    assert m["faithfulness_failed"] == garbled_judged and m["faithfulness_n"] == 4 - garbled_judged
    assert m["faithfulness"] == 1.0
    assert res.rows[0]["judge"] == "scripted" and res.rows[0]["faithfulness_failed"] == garbled_judged
    assert no_network == []


def test_judge_system_limits_the_judge_to_the_named_systems(tmp_path, no_network):
    from eval.run import EvalConfig, SystemSpec, run_eval
    from rag.errors import BadInput

    texts = {"right": "Denver Broncos", "wrong": "Carolina Panthers"}
    ts, qs, retriever, readers = _toy_run(tmp_path, 3, lambda name, q: texts[name])
    seen = []

    def generate(prompt):
        seen.append(prompt)
        return scripted_judge(set())(prompt)

    systems = [SystemSpec("right", "llm", model="a"), SystemSpec("wrong", "llm", model="b")]
    judge = Judge(generate=generate, embed=_embed, name="scripted")
    cfg = EvalConfig(judge_limit=3, judge_systems=["right"], runs=tmp_path)
    res = run_eval(
        ts, qs, systems, cfg, retriever=retriever, reader_factory=readers, judge=judge, index_key="toy"
    )
    m = {s["name"]: s["metrics"] for s in res.systems}
    assert m["right"]["judge_n"] == 3 and m["right"]["faithfulness"] == 1.0
    assert not m["wrong"]["judge_n"] and m["wrong"]["faithfulness"] is None
    assert seen and not any("Carolina" in p.rsplit("-----------------------------", 1)[-1] for p in seen)

    with pytest.raises(BadInput, match="--judge-system nobody is not among the evaluated systems"):
        run_eval(
            ts,
            qs,
            systems,
            EvalConfig(judge_limit=3, judge_systems=["nobody"], runs=tmp_path),
            retriever=retriever,
            reader_factory=readers,
            judge=judge,
            index_key="toy",
        )
