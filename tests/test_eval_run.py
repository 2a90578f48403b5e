"""The experiment runner with a fake retriever and fake readers: scoring, oracle, resume, the log."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.run import LOG_COLUMNS, EvalConfig, SystemSpec, run_eval
from eval.testset import load_testset
from rag.prompt import ABSTAIN
from rag.types import Answer, Chunk, Citation, Hit

PARAS = [
    "Super Bowl 50 was won by the Denver Broncos, who beat the Carolina Panthers.",
    "The game was played at Levi's Stadium in Santa Clara, California.",
    "Chloroplasts are organelles that conduct photosynthesis in plant cells.",
    "The Black Death was a bubonic plague pandemic in Europe.",
]
QUESTIONS = [
    ("a", "Who won Super Bowl 50?", ["Denver Broncos"], 0),
    ("b", "Where was the game played, which stadium?", ["Levi's Stadium"], 1),
    ("c", "What are chloroplasts?", ["organelles"], 2),
    ("d", "What was the Black Death pandemic?", ["bubonic plague"], 3),
    ("e", "Who did the Broncos beat in Super Bowl 50?", ["Carolina Panthers"], 0),
    ("f", "Which city, Santa Clara, stadium?", ["Santa Clara"], 1),
    ("g", "Which stadium hosted Super Bowl 50, won by the Broncos?", ["Levi's Stadium"], 1),  # gold ranks 2nd
    ("u1", "Who sang the anthem at Super Bowl 50?", [], 0),
    ("u2", "How many chloroplasts does a moss cell hold?", [], 2),
]


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[Chunk]]:
    root = tmp_path / "corpus"
    root.mkdir()
    text = "\n\n".join(PARAS)
    (root / "S.txt").write_text(text)
    chunks, pos = [], 0
    for p in PARAS:
        start = text.index(p, pos)
        chunks.append(Chunk(f"S.txt#{start}-{start + len(p)}", "S.txt", p, start, start + len(p)))
        pos = start + len(p)
    return root, chunks


@pytest.fixture
def testset(tmp_path, corpus):
    root, chunks = corpus
    rows = []
    for qid, q, answers, para in QUESTIONS:
        c = chunks[para]
        rows.append(
            {
                "id": qid,
                "question": q,
                "answers": answers,
                "unanswerable": not answers,
                "source": "S.txt",
                "paragraph": para,
                "start": c.start,
                "end": c.end,
            }
        )
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_testset([f], corpus_root=root)


class WordOverlapRetriever:
    """Ranks chunks by shared lowercase words with the question (deterministic)."""

    def __init__(self, chunks: list[Chunk]):
        self.chunks = chunks
        self.calls = 0

    def search(self, query: str, k: int) -> list[Hit]:
        self.calls += 1
        qw = set(re.findall(r"\w+", query.lower()))
        scored = [
            (len(qw & set(re.findall(r"\w+", c.text.lower()))), -i, c) for i, c in enumerate(self.chunks)
        ]
        scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [Hit(c, float(s)) for s, _, c in scored[:k]]


class KnowingReader:
    """Answers with the gold answer when a given passage holds it, citing that passage; else abstains."""

    name = "fake"

    def __init__(self, golds: dict[str, list[str]], fail_after: int | None = None, wrong: bool = False):
        self.golds, self.fail_after, self.wrong, self.calls = golds, fail_after, wrong, 0

    def answer(self, question: str, hits: list[Hit]) -> Answer:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.wrong:
            c = hits[0].chunk
            return Answer(text="banana", abstained=False, citations=[Citation(1, c.doc, c.start, c.end)])
        for g in self.golds.get(question, []):
            for n, h in enumerate(hits, 1):
                if g in h.chunk.text:
                    c = h.chunk
                    return Answer(text=g, abstained=False, citations=[Citation(n, c.doc, c.start, c.end)])
        return Answer(text=ABSTAIN, abstained=True)


def _golds():
    return {q: a for _, q, a, _ in QUESTIONS}


LLM = SystemSpec("fake-llm", "llm", model="fake-llm")
LLM_GOLD = SystemSpec("fake-llm@gold", "llm", model="fake-llm", oracle=True)
BASE = SystemSpec("extractive", "extractive")


def test_scores_a_perfect_reader_against_a_wrong_baseline(testset, corpus, tmp_path):
    _, chunks = corpus
    readers = {"llm": KnowingReader(_golds()), "extractive": KnowingReader(_golds(), wrong=True)}
    res = run_eval(
        testset,
        testset.questions,
        [BASE, LLM],
        EvalConfig(k=1, runs=tmp_path / "runs", n_boot=300),
        retriever=WordOverlapRetriever(chunks),
        reader_factory=lambda s: readers[s.reader],
        index_key="toy",
    )
    m = {s["name"]: s["metrics"] for s in res.systems}
    # Gold paragraphs rank first for 6 of the 7 answerable questions, second for "g".
    assert res.retrieval["n"] == 7
    assert res.retrieval["recall_at_1"] == pytest.approx(6 / 7, abs=1e-4)
    assert res.retrieval["recall_at_3"] == 1.0
    assert res.retrieval["mrr_at_10"] == pytest.approx((6 + 1 / 2) / 7, abs=1e-4)
    llm = m["fake-llm"]
    assert llm["recall_at_k"] == res.retrieval["recall_at_1"]
    # "g" gets no gold passage with k=1, so the reader abstains: EM 6/7, a wrong abstention.
    assert llm["em"] == pytest.approx(100 * 6 / 7, abs=0.01) and llm["f1"] == llm["em"]
    assert llm["wrong_abstain_rate"] == pytest.approx(1 / 7, abs=1e-4)
    assert llm["declined"] == 100.0 and llm["abstain_precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert llm["correct_cited"] == llm["em"] and llm["citation_accuracy"] == 1.0 and llm["grounding"] == 1.0
    assert m["extractive"]["em"] == 0.0 and m["extractive"]["declined"] == 0.0
    assert m["extractive"]["grounding"] == 0.0  # "banana" is in no passage
    comp = {(c["a"], c["b"], c["metric"]): c for c in res.comparisons}
    f1 = comp[("fake-llm", "extractive", "f1")]
    assert (
        f1["diff"] == pytest.approx(llm["f1"], abs=0.01)
        and f1["lo"] <= f1["diff"] <= f1["hi"]
        and f1["n"] == 7
    )
    out = res.as_json()
    assert {"systems", "testset", "seed", "index"} <= set(out)
    assert [set(s) >= {"name", "n", "metrics"} for s in out["systems"]] == [True, True]
    assert out["systems"][1]["n"] == len(QUESTIONS)


def test_oracle_gives_the_gold_paragraph(testset, corpus, tmp_path):
    root, chunks = corpus
    seen: dict[str, list[str]] = {}

    class Recorder(KnowingReader):
        def answer(self, question, hits):
            seen[question] = [h.chunk.text for h in hits]
            return super().answer(question, hits)

    res = run_eval(
        testset,
        testset.questions,
        [LLM_GOLD],
        EvalConfig(runs=tmp_path / "runs"),
        reader_factory=lambda s: Recorder(_golds()),
    )
    assert seen["What are chloroplasts?"] == [PARAS[2]]
    assert seen["Who sang the anthem at Super Bowl 50?"] == [PARAS[0]]
    m = res.systems[0]["metrics"]
    assert m["em"] == 100.0 and m["recall_at_k"] is None and res.retrieval == {}


def test_interrupted_run_resumes_and_rerun_computes_only_what_changed(testset, corpus, tmp_path):
    _, chunks = corpus
    runs = tmp_path / "runs"
    retriever = WordOverlapRetriever(chunks)
    cfg = EvalConfig(k=2, runs=runs, n_boot=100)
    kw = dict(retriever=retriever, index_key="toy")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_eval(
            testset, testset.questions, [LLM], cfg, reader_factory=lambda s: KnowingReader(_golds(), 3), **kw
        )
    preds = list((runs / "eval").glob("*/pred-fake-llm-*.jsonl"))
    assert len(preds) == 1 and len(preds[0].read_text().splitlines()) == 3
    assert not (runs / "experiments.jsonl").exists()  # nothing logged for a crashed run
    assert retriever.calls == len(QUESTIONS)

    second = KnowingReader(_golds())
    res = run_eval(testset, testset.questions, [LLM], cfg, reader_factory=lambda s: second, **kw)
    assert second.calls == len(QUESTIONS) - 3
    assert retriever.calls == len(QUESTIONS)  # retrieval came from the cache
    full = res.systems[0]["metrics"]
    assert full["n"] == len(QUESTIONS)

    def must_not_load(spec):
        raise AssertionError("every prediction is cached: no reader should load")

    again = run_eval(testset, testset.questions, [LLM], cfg, reader_factory=must_not_load, **kw)
    assert again.systems[0]["metrics"]["em"] == full["em"]

    # Edit one question: it alone is retrieved and answered again.
    f = Path(testset.files[0])
    f.write_text(f.read_text().replace("What are chloroplasts?", "What are chloroplasts, briefly?"))
    edited = load_testset([f], corpus_root=testset.corpus_root)
    third = KnowingReader({**_golds(), "What are chloroplasts, briefly?": ["organelles"]})
    run_eval(edited, edited.questions, [LLM], cfg, reader_factory=lambda s: third, **kw)
    assert third.calls == 1 and retriever.calls == len(QUESTIONS) + 1
    rows = [json.loads(line) for line in (runs / "experiments.jsonl").read_text().splitlines()]
    assert len(rows) == 3


def test_experiments_log_schema_jsonl_and_csv(testset, corpus, tmp_path):
    _, chunks = corpus
    runs = tmp_path / "runs"
    for _ in range(2):
        run_eval(
            testset,
            testset.questions,
            [BASE, LLM],
            EvalConfig(k=2, runs=runs, seed=7, n_boot=100),
            retriever=WordOverlapRetriever(chunks),
            index_key="toy",
            reader_factory=lambda s: KnowingReader(_golds(), wrong=s.reader == "extractive"),
        )
    rows = [json.loads(line) for line in (runs / "experiments.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(tuple(r) == LOG_COLUMNS for r in rows)
    assert {r["system"] for r in rows} == {"extractive", "fake-llm"} and rows[0]["seed"] == 7
    assert rows[0]["run_id"] == rows[1]["run_id"] != rows[2]["run_id"]
    llm = rows[1]
    assert llm["comparisons"][0]["b"] == "extractive" and llm["faithfulness"] is None and llm["judge"] is None
    with open(runs / "experiments.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4 and tuple(table[0]) == LOG_COLUMNS
    assert float(table[1]["f1"]) == llm["f1"] and table[0]["params"] == ""  # None -> empty cell


def test_cli_eval_json_with_the_extractive_reader(testset, corpus, tmp_path, monkeypatch):
    from rag.cli import app

    _, chunks = corpus
    monkeypatch.setattr("eval.retrieval.open_default_retriever", lambda cfg: WordOverlapRetriever(chunks))
    f = Path(testset.files[0])
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "--testset",
            str(f),
            "--corpus",
            str(testset.corpus_root),
            "--systems",
            "extractive",
            "--systems",
            "extractive@gold",
            "--limit",
            "5",
            "--seed",
            "1",
            "--json",
            "--runs",
            str(tmp_path / "runs"),
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [s["name"] for s in data["systems"]] == ["extractive", "extractive@gold"]
    assert data["seed"] == 1 and data["testset"]["name"] == "t.jsonl" and data["systems"][0]["n"] == 5
    assert 0 <= data["systems"][0]["metrics"]["f1"] <= 100
    assert (tmp_path / "runs" / "experiments.csv").exists()


def test_batch_retrieval_is_used_when_offered(testset, corpus, tmp_path):
    _, chunks = corpus

    class Batched(WordOverlapRetriever):
        batches = 0

        def search_batch(self, queries, k):
            self.batches += 1
            return [WordOverlapRetriever.search(self, q, k) for q in queries]

        def search(self, query, k):
            raise AssertionError("one query at a time while a batch search exists")

    r = Batched(chunks)
    one = run_eval(
        testset,
        testset.questions,
        [LLM],
        EvalConfig(k=1, runs=tmp_path / "a"),
        retriever=r,
        index_key="toy",
        reader_factory=lambda s: KnowingReader(_golds()),
    )
    two = run_eval(
        testset,
        testset.questions,
        [LLM],
        EvalConfig(k=1, runs=tmp_path / "b"),
        retriever=WordOverlapRetriever(chunks),
        index_key="toy",
        reader_factory=lambda s: KnowingReader(_golds()),
    )
    assert r.batches == 1
    assert one.retrieval["mrr_at_10"] == two.retrieval["mrr_at_10"]
    assert one.systems[0]["metrics"]["f1"] == two.systems[0]["metrics"]["f1"]


def test_cli_eval_takes_retrieval_defaults_from_rag_toml(testset, corpus, tmp_path, monkeypatch):
    from rag.cli import app

    _, chunks = corpus
    opened = []
    monkeypatch.setattr(
        "eval.retrieval.open_default_retriever",
        lambda cfg: opened.append(cfg) or WordOverlapRetriever(chunks),
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text('[retrieval]\nk = 2\nmode = "bm25"\nrrf_k = 7\n')
    args = ["eval", str(testset.files[0]), "--corpus", str(testset.corpus_root), "-s", "extractive", "--json"]

    r = CliRunner().invoke(app, [*args, "--runs", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["k"], data["mode"]) == (2, "bm25")
    assert (opened[0].k, opened[0].mode, opened[0].rrf_k) == (2, "bm25", 7)

    r = CliRunner().invoke(app, [*args, "--runs", str(tmp_path / "b"), "-k", "3", "--mode", "hybrid"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["k"], data["mode"]) == (3, "hybrid")  # flags override rag.toml


def test_eval_config_is_frozen():
    from dataclasses import FrozenInstanceError

    cfg = EvalConfig()
    with pytest.raises(FrozenInstanceError):
        cfg.judge = "qwen2.5-1.5b"  # type: ignore[misc]


class CappedReader:
    """A streaming reader (rag.types.StreamingReader) whose prompt held only the first passage, as
    LLMReader reports through last_passages when the prompt cap drops the rest; it cites passage [2]."""

    name = "capped"
    last_new_tokens = None
    last_passages = None

    def stream(self, question, hits):
        self.last_passages = 1
        yield "Levi's Stadium [2]"

    def finish(self, question, hits, raw):
        from rag.reader import finish

        return finish(raw, hits, {"model": "capped"})

    def answer(self, question, hits):
        raise AssertionError("eval answers through rag.pipeline, which streams a streaming reader")


def test_answers_go_through_the_served_pipeline_prompt_cap_included(testset, corpus, tmp_path):
    _, chunks = corpus
    res = run_eval(
        testset,
        testset.questions,
        [LLM],
        EvalConfig(k=2, runs=tmp_path / "runs", n_boot=50),
        retriever=WordOverlapRetriever(chunks),
        index_key="toy",
        reader_factory=lambda s: CappedReader(),
    )
    preds = [json.loads(line) for line in next((tmp_path / "runs" / "eval").glob("*/pred-*.jsonl")).open()]
    assert len(preds) == len(QUESTIONS)
    # The second passage did not fit the prompt: its citation is dropped (as `rag ask` drops it), so the
    # answer cites nothing and is unsupported, and only one passage counts as read.
    assert all(p["passages"] == 1 and p["citations"] == [] and not p["supported"] for p in preds)
    assert {"retrieve_s", "first_token_s", "generate_s", "total_s"} <= set(preds[0]["timings"])
    m = res.systems[0]["metrics"]
    assert m["citation_rate"] == 0.0 and m["grounding"] == 0.0 and m["supported_rate"] == 0.0


def test_cli_prints_system_names_as_written():
    # rich turns ":free:" into an emoji unless told not to; eval's progress lines and tables name systems
    # such as qwen2.5-0.5b+tuned:free: ...
    from rag import cli

    for console in (cli.out, cli.err):
        with console.capture() as cap:
            console.print("answer qwen2.5-0.5b+tuned:free: 2/280")
        assert "tuned:free: 2/280" in cap.get()


class InfiniteThresholdReader(KnowingReader):
    """KnowingReader whose decisions carry the default reader's infinite threshold and a NaN."""

    def answer(self, question: str, hits: list[Hit]) -> Answer:
        ans = super().answer(question, hits)
        ans.decision = {"threshold": math.inf, "gaps": [1.5, math.nan], "min_rerank_score": -3.5}
        return ans


def test_saved_predictions_are_strict_json(testset, corpus, tmp_path):
    # The default abstain threshold is inf; Python's json would write it as Infinity, which jq and most
    # JSON readers reject. Saved rows write it as null and keep the finite numbers.
    _, chunks = corpus

    def strict(s):
        raise ValueError(f"non-standard JSON constant {s}")

    run_eval(
        testset,
        testset.questions,
        [LLM],
        EvalConfig(k=2, runs=tmp_path / "runs", n_boot=50),
        retriever=WordOverlapRetriever(chunks),
        index_key="toy",
        reader_factory=lambda s: InfiniteThresholdReader(_golds()),
    )
    (path,) = (tmp_path / "runs" / "eval").glob("*/pred-*.jsonl")
    rows = [json.loads(line, parse_constant=strict) for line in path.open()]
    assert len(rows) == len(QUESTIONS)
    assert all(
        r["decision"] == {"threshold": None, "gaps": [1.5, None], "min_rerank_score": -3.5} for r in rows
    )


def test_a_saved_answer_is_reused_only_if_the_reranker_cut_decides_the_same(tmp_path, monkeypatch):
    """Predictions are keyed by the passages, not their scores: the same passages read after their
    document's name ([retrieval] rerank_names) score differently, and the cut may then decide otherwise."""
    from dataclasses import replace

    from eval import answers
    from eval.runfiles import ctx_hash, short_hash
    from eval.systems import parse_system
    from eval.testset import Question

    monkeypatch.setattr(answers, "min_rerank_of", lambda spec: -3.5)
    spec = parse_system("qwen2.5-0.5b+tuned")
    q = Question(id="q1", question="Who won?", answers=("Denver",), unanswerable=False)
    chunk = Chunk(id="a.txt:0-10", doc="a.txt", text="Denver won", start=0, end=10)
    low = [Hit(chunk, 1.0, rerank_score=-5.0)]
    high = [replace(low[0], rerank_score=1.0)]
    cut_row = {"id": "q1", "qhash": short_hash(q.question), "ctx": ctx_hash(low), "passages": 1}
    cut_row["decision"] = {"rerank_score": -5.0, "min_rerank_score": -3.5}
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(cut_row) + "\n")
    assert ctx_hash(low) == ctx_hash(high)  # the key alone cannot tell them apart
    keep, todo = answers.saved_predictions(spec, path, [q], lambda s, qq: low, fresh=False)
    assert list(keep) == ["q1"] and not todo
    keep, todo = answers.saved_predictions(spec, path, [q], lambda s, qq: high, fresh=False)
    assert not keep and [t[0].id for t in todo] == ["q1"]  # now above the cut: answer it again
    read_row = {**cut_row, "decision": {"abstain_logprob": -3.0, "answer_logprob": -1.0}}
    path.write_text(json.dumps(read_row) + "\n")
    assert list(answers.saved_predictions(spec, path, [q], lambda s, qq: high, fresh=False)[0]) == ["q1"]
    assert not answers.saved_predictions(spec, path, [q], lambda s, qq: low, fresh=False)[0]
