"""The corpus-absent abstention test: held-out articles, their index, their questions, the declines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fakes import HashEmbedder
from typer.testing import CliRunner

from eval import absent as A
from eval.run import EvalConfig, SystemSpec, run_eval
from eval.score import per_question, system_metrics
from eval.testset import Question, load_testset
from indexing.build import build_index
from indexing.embed import register_embedder
from rag.config import IndexConfig
from rag.prompt import ABSTAIN
from rag.types import Answer, Citation

REPO = Path(__file__).resolve().parent.parent
TOPICS = [
    "Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel", "Ivy", "Juniper", "Larch", "Maple",
]  # fmt: skip


@pytest.fixture(autouse=True)
def fake_embedder():
    register_embedder("fake-hash", HashEmbedder)


def _paragraphs(t: str) -> list[str]:
    return [
        f"{t} is a tree of the northern forests. The {t} grows {len(t)} metres tall on wet ground.",
        f"The wood of the {t} was used for boats. Sailors of the {t} coast called it {t.lower()}wood.",
    ]


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """A miniature bundled set: 12 articles in corpus/, 2 SQuAD questions and 1 Disfl-QA question
    each, loaded the way `rag eval --testset` loads the real one."""
    root, data = tmp_path / "corpus", tmp_path / "data"
    root.mkdir()
    data.mkdir()
    squad, disfl = [], []
    for t in TOPICS:
        paras = _paragraphs(t)
        text = "\n\n".join(paras)
        (root / f"{t}.txt").write_text(text)
        spans = [(text.index(p), text.index(p) + len(p)) for p in paras]
        gold = {"source": f"{t}.txt"}
        squad.append(
            {"id": f"{t}-1", "question": f"How tall does the {t} grow?", "answers": [f"{len(t)} metres"]}
            | gold
            | {"paragraph": 0, "start": spans[0][0], "end": spans[0][1]}
        )
        squad.append(
            {"id": f"{t}-2", "question": f"What was {t} wood used for?", "answers": ["boats"]}
            | gold
            | {"paragraph": 1, "start": spans[1][0], "end": spans[1][1]}
        )
        disfl.append(
            {"id": f"disfl-{t}", "question": f"How tall no how wide is the {t}?", "answers": []}
            | gold
            | {"unanswerable": True, "paragraph": 0, "start": spans[0][0], "end": spans[0][1]}
        )
    (root / ".ragignore").write_text("README.md\n")
    (root / "README.md").write_text("not an article")
    for name, rows in (("squad_dev.jsonl", squad), ("disfl_qa.jsonl", disfl)):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("eval.testset.BUNDLED_DIR", data)
    monkeypatch.setattr("eval.testset.DEFAULT_CORPUS", root)
    return load_testset()


@pytest.fixture
def main_index(bundled, tmp_path) -> Path:
    where = tmp_path / "main-index"
    build_index([bundled.corpus_root], where, IndexConfig(embedder="fake-hash"))
    return where


class TopicReader:
    """Answers from the first passage about the question's tree (citing it), else declines: a reader
    that cannot tell a near miss from a hit, but has nothing to say about an article it never saw."""

    name = "topic"

    def answer(self, question, hits):
        topic = next(t for t in TOPICS if t in question)
        for n, h in enumerate(hits, 1):
            if topic in h.chunk.text:
                c = h.chunk
                return Answer(c.text.split(". ")[0], False, [Citation(n, c.doc, c.start, c.end)])
        return Answer(ABSTAIN, True)


LLM = SystemSpec("topic", "llm", model="topic")
LLM_GOLD = SystemSpec("topic@gold", "llm", model="topic", oracle=True)


def test_held_out_articles_are_a_fixed_pick_of_the_names():
    names = A.corpus_names(REPO / "corpus")
    held = A.held_out(names)
    assert len(names) == 48 and "README.md" not in names  # corpus/.ragignore leaves its README out
    # pinned: a change of rule changes every corpus-absent figure, so it must show up here
    assert held == ("Prime_number.txt", "Rhine.txt", "Scottish_Parliament.txt", "Teacher.txt", "Warsaw.txt")
    assert A.held_out(list(reversed(names))) == held and set(held) < set(names)


def test_absent_questions_are_relabelled_sampled_and_nested(bundled):
    held = A.held_out(A.corpus_names(bundled.corpus_root))
    pool = A.absent_pool(bundled.questions, held)
    assert len(held) == 5 and len(pool) == 10  # the 2 SQuAD questions of each held-out article
    assert all(q.unanswerable and q.answers == () and q.origin == "corpus_absent" for q in pool)
    assert all(q.id.startswith("absent:") and q.source in held and not q.has_gold_span for q in pool)
    assert not {q.id for q in pool} & {q.id for q in bundled.questions}
    small, big = A.sample_absent(pool, 3, seed=4), A.sample_absent(pool, 7, seed=4)
    assert len(small) == 3 and set(small) < set(big) and A.sample_absent(pool, 3, seed=4) == small
    assert A.sample_absent(pool, 3, seed=5) != small


def test_held_out_index_leaves_the_held_out_files_out_and_reuses_main_vectors(bundled, main_index, tmp_path):
    held = A.held_out(A.corpus_names(bundled.corpus_root))
    emb = HashEmbedder()
    where = A.ensure_index(bundled.corpus_root, held, main_index, tmp_path / "absent", embedder=emb)
    man = A._manifest(where)
    indexed = set(man["files"])
    assert indexed == {f"{t}.txt" for t in TOPICS} - set(held) and not indexed & set(held)
    assert man["embedder"] == A._manifest(main_index)["embedder"]
    assert emb.calls == 0  # every chunk's vector came from the main index

    class MustNotLoad(HashEmbedder):
        def count_tokens(self, text):
            raise AssertionError("the held-out index is current: nothing should load")

    A.ensure_index(bundled.corpus_root, held, main_index, tmp_path / "absent", embedder=MustNotLoad())

    # An edited article updates it; a held-out article never gets in.
    kept = sorted(indexed)[0]
    (bundled.corpus_root / kept).write_text("A brand new paragraph about nothing in particular.")
    (bundled.corpus_root / held[0]).write_text("Edited, but still held out.")
    A.ensure_index(bundled.corpus_root, held, main_index, tmp_path / "absent", embedder=HashEmbedder())
    new = A._manifest(tmp_path / "absent")
    assert set(new["files"]) == indexed and new["files"][kept]["sha256"] != man["files"][kept]["sha256"]
    assert new["files"][kept]["chunks"] == 1

    # The main index moves to another embedder: the held-out index follows it (rebuilt, not refused).
    class Other(HashEmbedder):
        name = "fake-hash-2"

    register_embedder("fake-hash-2", Other)
    build_index([bundled.corpus_root], main_index, IndexConfig(embedder="fake-hash-2"), rebuild=True)
    A.ensure_index(bundled.corpus_root, held, main_index, tmp_path / "absent", embedder=Other())
    assert A._manifest(tmp_path / "absent")["embedder"]["name"] == "fake-hash-2"


def _hits_rows(runs: Path) -> dict[str, list[dict]]:
    rows = {}
    for f in (runs / "eval").glob("*/hits-*.jsonl"):
        rows.update({r["id"]: r["hits"] for r in map(json.loads, f.read_text().splitlines())})
    return rows


def test_absent_questions_are_retrieved_from_the_held_out_index(bundled, main_index, tmp_path, monkeypatch):
    ts, qs, where = A.add_absent(bundled, bundled.questions, None, 0, main_index, tmp_path / "absent")
    held = set(ts.absent["held_out"])
    assert ts.absent["n"] == 10 and len(qs) == len(bundled.questions) + 10 and ts.sha256 != bundled.sha256
    runs = tmp_path / "runs"
    cfg = EvalConfig(k=2, index_dir=main_index, absent_index=where, runs=runs, n_boot=50)
    res = run_eval(ts, qs, [LLM, LLM_GOLD], cfg, reader_factory=lambda s: TopicReader())

    hits = _hits_rows(runs)
    absent_ids = [q.id for q in qs if q.origin == "corpus_absent"]
    assert len(absent_ids) == 10 and all(hits[i] for i in absent_ids)
    assert all(h["doc"] not in held for i in absent_ids for h in hits[i])
    # the same questions in the main run are retrieved from the main index, which holds their article
    assert all(hits[i.removeprefix("absent:")][0]["doc"] in held for i in absent_ids)
    assert len(list((runs / "eval").glob("*/hits-*.jsonl"))) == 2  # one cache per index

    m = {s["name"]: s["metrics"] for s in res.systems}
    assert m["topic"]["declined_absent"] == 100.0 and m["topic"]["declined_disfl"] == 0.0
    assert m["topic"]["declined"] == pytest.approx(100 * 10 / 22, abs=0.01)  # 10 absent of 22 unanswerable
    # @gold gets no paragraph for a corpus-absent question: it never reads one
    assert m["topic@gold"]["n"] == len(bundled.questions) and m["topic@gold"]["declined_absent"] is None
    gold_preds = next((runs / "eval").glob("*/pred-topic_gold-*.jsonl")).read_text()
    assert "absent:" not in gold_preds and m["topic@gold"]["declined_disfl"] == 0.0
    assert res.retrieval["n"] == 24  # recall over the 24 answerable questions only
    assert res.rows[0]["declined_absent"] == 100.0 and res.as_json()["absent_index"] == str(where)

    # A rerun retrieves nothing: both indexes' hits are cached under their own fingerprints.
    def must_not_open(cfg):
        raise AssertionError("every question's hits are cached")

    monkeypatch.setattr("eval.retrieval.open_default_retriever", must_not_open)
    again = run_eval(ts, qs, [LLM], cfg, reader_factory=lambda s: TopicReader())
    assert again.systems[0]["metrics"]["declined_absent"] == 100.0


def test_absent_questions_without_the_held_out_index_are_refused(bundled, main_index, tmp_path):
    from rag.errors import BadInput

    ts, qs, _ = A.add_absent(bundled, bundled.questions, 2, 0, main_index, tmp_path / "absent")
    with pytest.raises(BadInput, match="held-out index"):
        run_eval(ts, qs, [LLM], EvalConfig(index_dir=main_index, runs=tmp_path / "runs"))


def test_declines_per_kind_on_known_inputs():
    def scored(origin: str, abstained: bool, answers: tuple[str, ...] = ()) -> dict:
        q = Question(origin + str(abstained), "Who?", answers, not answers, origin=origin)
        text = ABSTAIN if abstained else "Ann"
        return per_question(q, {"abstained": abstained, "text": text, "citations": []}, [])

    rows = [
        *(scored("corpus_absent", a) for a in (True, False)),
        *(scored("disfl_qa", a) for a in (True, True, True, False)),
        *(scored("squad_dev", a, ("Ann",)) for a in (True, False)),
    ]
    recs = [{"abstained": r["abstained"], "seconds": 0.1, "supported": False} for r in rows]
    m = system_metrics(rows, recs, [], {}, oracle=False)
    assert m["declined"] == pytest.approx(66.67) and m["wrong_abstain_rate"] == 0.5  # 4 of 6; 1 of 2
    assert m["declined_absent"] == 50.0 and m["declined_disfl"] == 75.0
    only_disfl = system_metrics(rows[2:], recs[2:], [], {}, oracle=False)
    assert only_disfl["declined_absent"] is None and only_disfl["declined_disfl"] == only_disfl["declined"]


def test_eval_table_shows_both_abstention_tests():
    from rich.console import Console

    from rag.cli import _eval_tables

    m = dict.fromkeys(
        ["em", "f1", "correct_cited", "recall_at_k", "faithfulness", "relevancy", "grounding"]
        + ["latency_p50_s", "latency_p95_s", "peak_ram_mb"]
    )
    m.update(declined=31.0, declined_absent=47.5, declined_disfl=22.5, wrong_abstain_rate=0.085)
    res = {"k": 3, "testset": {"name": "bundled"}, "n_questions": 280, "seed": 0}
    res["systems"] = [{"name": "qwen2.5-0.5b+tuned@gold", "metrics": m, "meta": {}}]
    console = Console(width=200, record=True)
    declining = _eval_tables(res)[2]
    console.print(declining)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "declined %" in line)
    assert header.split() == ["system", "declined", "%", "absent", "%", "Disfl", "%", "wrong", "%"]
    values = next(line for line in text.splitlines() if line.strip().startswith("qwen"))
    assert values.split()[1:] == ["31.0", "47.5", "22.5", "8.5"]
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def _cli(args, runs):
    from rag.cli import app

    r = CliRunner().invoke(app, ["eval", *args, "-s", "extractive", "--json", "--runs", str(runs)])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_cli_adds_the_absent_questions_and_absent_0_is_the_old_run(bundled, main_index, tmp_path, rag_home):
    base = ["--testset", "--index", str(main_index)]
    off = _cli([*base, "--absent", "0"], tmp_path / "a")
    assert off["testset"]["absent"] is None and off["absent_index"] is None
    assert off["n_questions"] == len(bundled.questions) == off["testset"]["n"]
    assert off["testset"]["sha256"] == bundled.sha256
    m = off["systems"][0]["metrics"]
    assert m["declined_absent"] is None and m["declined_disfl"] == m["declined"]
    assert not (rag_home / "data" / "absent-index").exists()

    on = _cli(base, tmp_path / "b")  # default: as many as the Disfl-QA questions (12), here the pool's 10
    assert on["testset"]["absent"]["n"] == 10 and on["n_questions"] == len(bundled.questions) + 10
    assert on["absent_index"] == str(rag_home / "data" / "absent-index")
    assert on["systems"][0]["metrics"]["declined_absent"] is not None
    assert on["testset"]["sha256"] != bundled.sha256  # the report keeps the two settings apart

    few = _cli([*base, "--absent", "3", "--limit", "6"], tmp_path / "c")
    assert few["testset"]["absent"]["n"] == 3 and few["n_questions"] == 6 + 3  # apart from --limit


def test_cli_refuses_absent_with_own_files(bundled, main_index, tmp_path):
    from rag.cli import app

    f = Path(bundled.files[0])
    r = CliRunner().invoke(
        app, ["eval", str(f), "--absent", "5", "-s", "extractive", "--index", str(main_index)]
    )
    assert r.exit_code == 1 and "--absent is for the bundled test set" in r.output


def test_log_rows_from_before_the_per_kind_declines_still_load(tmp_path):
    from fakes import experiment_row

    from eval.experiments import LOG_COLUMNS, append_experiments
    from eval.report.facts import load_log

    runs = tmp_path / "runs"
    runs.mkdir()
    old = {
        k: v for k, v in experiment_row("extractive", run_id="old").items() if not k.startswith("declined_")
    }
    (runs / "experiments.jsonl").write_text(json.dumps(old) + "\n")
    append_experiments([experiment_row("extractive", declined_absent=40.0, declined_disfl=20.0)], runs)
    rows = load_log(runs)
    assert [r.get("declined_absent") for r in rows] == [None, 40.0]
    with open(runs / "experiments.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == LOG_COLUMNS
    assert [r["declined_absent"] for r in table] == ["", "40.0"]  # the older row: an empty cell
