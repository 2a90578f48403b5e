"""ask(): retrieve -> read -> cite, with fakes; and `rag ask` through the CLI (real index, fake embedder)."""

from __future__ import annotations

import json

import pytest
from fakes import HashEmbedder, make_scripted, make_tokenizer
from typer.testing import CliRunner

import rag.cli as cli
from indexing.embed import register_embedder
from rag.errors import BadInput
from rag.pipeline import answer_to_json, ask, ask_stream
from rag.reader import ExtractiveReader, LLMReader
from rag.types import Answer, Chunk, Hit

SB50 = "Super Bowl 50 was an American football game. The Denver Broncos won Super Bowl 50."
HITS = [
    Hit(Chunk("sb#10-93", "nfl/super_bowl_50.txt", SB50, 10, 10 + len(SB50)), 2.0),
    Hit(Chunk("m#0-31", "mercury.txt", "Mercury is a chemical element.", 0, 31), 1.0),
]


class FakeRetriever:
    def __init__(self, hits=HITS):
        self.hits, self.calls = hits, []

    def search(self, query: str, k: int) -> list[Hit]:
        self.calls.append((query, k))
        return self.hits[:k]


class PiecesReader:
    """Streams fixed pieces; finish() is the real LLM parsing path."""

    name = "fake"
    last_new_tokens = None
    last_passages = None

    def __init__(self, pieces):
        self.pieces = pieces

    def stream(self, question, hits):
        yield from self.pieces

    def finish(self, question, hits, raw):
        from rag.reader import finish

        return finish(raw, hits, {"model": "fake", "adapter": None})

    def answer(self, question, hits):
        return self.finish(question, hits, "".join(self.pieces))


def test_ask_extractive_end_to_end():
    r = FakeRetriever()
    ans = ask("Which team won Super Bowl 50?", r, ExtractiveReader(), k=2)
    assert r.calls == [("Which team won Super Bowl 50?", 2)]
    assert ans.text == "The Denver Broncos won Super Bowl 50."
    c = ans.citations[0]
    assert (c.n, c.source, c.start, c.end) == (1, "nfl/super_bowl_50.txt", 10, 10 + len(SB50))
    assert set(ans.timings) >= {"retrieve_s", "generate_s", "first_token_s", "total_s"}
    assert ans.timings["first_token_s"] <= ans.timings["total_s"]


def test_ask_stream_pieces_join_to_raw_answer():
    s = ask_stream("Who won?", FakeRetriever(), PiecesReader(["Den", "ver Broncos", " [1]", "[9]"]))
    assert s.answer is None  # nothing generated until iterated
    assert "".join(s) == "Denver Broncos [1][9]"
    assert s.answer.text == "Denver Broncos" and [c.n for c in s.answer.citations] == [1]
    assert s.answer.supported and s.hits == HITS


def test_reader_without_streaming_still_works():
    class Plain:
        name = "plain"

        def answer(self, question, hits):
            return Answer(text="42", abstained=False, reader={"model": "plain", "adapter": None})

    ans = ask("What?", FakeRetriever(), Plain())
    assert ans.text == "42" and "first_token_s" in ans.timings


def test_bad_questions_and_k():
    with pytest.raises(BadInput, match="empty"):
        ask("   ", FakeRetriever(), ExtractiveReader())
    with pytest.raises(BadInput, match="-k must be at least 1"):
        ask("Who won?", FakeRetriever(), ExtractiveReader(), k=0)


def test_answer_to_json_shape():
    ans = ask("Who won?", FakeRetriever(), PiecesReader(["Mercury [2]"]))
    obj = answer_to_json(ans)
    assert set(obj) == {"answer", "abstained", "supported", "citations", "reader", "timings"}
    assert obj["citations"] == [{"n": 2, "source": "mercury.txt", "start": 0, "end": 31, "supported": True}]
    assert obj["reader"] == {"model": "fake", "adapter": None}
    json.dumps(obj)  # serialisable


# ---------------------------------------------------------------- CLI

runner = CliRunner()


@pytest.fixture
def index(tmp_path):
    register_embedder("fake-hash", HashEmbedder)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "super_bowl_50.txt").write_text(SB50)
    (docs / "mercury.txt").write_text("Mercury is a chemical element. It is liquid at room temperature.")
    (docs / "moon.txt").write_text("The Moon orbits the Earth. Apollo 11 landed on it in 1969.")
    r = runner.invoke(cli.app, ["index", str(docs), "--embedder", "fake-hash"])
    assert r.exit_code == 0, r.output
    return docs


def test_cli_ask_json_extractive_over_a_real_index(index):
    r = runner.invoke(
        cli.app, ["ask", "Which team won Super Bowl 50?", "--reader", "extractive", "--json", "-k", "2"]
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["answer"] == "The Denver Broncos won Super Bowl 50."
    assert obj["abstained"] is False and obj["supported"] is True
    assert obj["citations"][0]["source"].endswith("super_bowl_50.txt")
    assert obj["citations"][0]["start"] == 0 and obj["citations"][0]["end"] == len(SB50)
    assert obj["reader"] == {"model": "extractive", "adapter": None}
    assert set(obj["timings"]) >= {"retrieve_s", "generate_s", "first_token_s"}


@pytest.fixture
def scripted(monkeypatch):
    """Patch the CLI's reader factory to a tiny scripted LLM; returns the list of factory calls."""
    calls = []
    tok = make_tokenizer()

    def factory(name, model, adapter, max_new_tokens, **settings):
        calls.append((name, model, adapter, max_new_tokens))
        m = make_scripted(tok, "Denver Broncos [1]\nQuestion: who lost?")
        return LLMReader(m, tok, {"name": model}, adapter=None, max_new_tokens=max_new_tokens)

    monkeypatch.setattr(cli, "_ask_reader", factory)
    monkeypatch.setattr(cli, "_ask_retriever", lambda index, mode, cfg: FakeRetriever())
    return calls


def test_cli_ask_json_llm(scripted):
    r = runner.invoke(
        cli.app, ["ask", "Who won Super Bowl 50?", "--json", "--model", "tiny", "--adapter", "none"]
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["answer"] == "Denver Broncos" and obj["abstained"] is False and obj["supported"] is True
    assert obj["citations"] == [
        {"n": 1, "source": "nfl/super_bowl_50.txt", "start": 10, "end": 10 + len(SB50), "supported": True}
    ]
    assert obj["reader"] == {"model": "tiny", "adapter": None, "dtype": "float32", "decoding": "free"}
    assert obj["timings"]["new_tokens"] >= 1
    assert scripted == [("llm", "tiny", "none", 32)]


def test_cli_ask_streams_then_lists_sources(scripted):
    r = runner.invoke(cli.app, ["ask", "Who won Super Bowl 50?"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "Denver Broncos [1]"
    assert "Sources" in r.stdout and f"nfl/super_bowl_50.txt  chars 10-{10 + len(SB50)}" in r.stdout
    assert "The Denver Broncos won Super Bowl 50." in r.stdout  # snippet
    assert "Also retrieved: [2] mercury.txt" in r.stdout
    assert "reader: qwen2.5-0.5b (no adapter)" in r.stdout  # the default model, told


def test_cli_interactive_loads_reader_once(scripted):
    r = runner.invoke(cli.app, ["ask", "--json"], input="Who won?\nWho won it?\n\nnot asked\n")
    assert r.exit_code == 0, r.output
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["answer"] for a in answers] == ["Denver Broncos", "Denver Broncos"]  # stops at the empty line
    assert len(scripted) == 1


def test_cli_ask_errors_are_one_line(index):
    r = runner.invoke(cli.app, ["ask", "Who won?", "--reader", "bert"])
    assert r.exit_code == 1 and "choose one of llm, extractive" in r.stderr
    r = runner.invoke(cli.app, ["ask", "Who won?", "--reader", "extractive", "--index", str(index / "nope")])
    assert r.exit_code == 1 and "rag index" in r.stderr and "Traceback" not in r.output


def test_cli_ask_takes_retrieval_settings_from_rag_toml(scripted, tmp_path, monkeypatch):
    fake, seen = FakeRetriever(), {}

    def retriever(index, mode, cfg):
        seen.update(mode=mode, cfg=cfg)
        return fake

    monkeypatch.setattr(cli, "_ask_retriever", retriever)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text('[retrieval]\nmode = "dense"\nk = 1\nrrf_k = 7\ncandidates = 3\n')
    r = runner.invoke(cli.app, ["ask", "Who won?", "--json"])
    assert r.exit_code == 0, r.output
    assert seen["mode"] == "dense" and (seen["cfg"].rrf_k, seen["cfg"].candidates) == (7, 3)
    assert fake.calls == [("Who won?", 1)]


def test_interactive_error_line_keeps_brackets(scripted, monkeypatch):
    def fail(*a, **kw):
        raise BadInput("set [retrieval] k in rag.toml")

    monkeypatch.setattr(cli, "_ask_one", fail)
    r = runner.invoke(cli.app, ["ask"], input="Who won?\n\n")
    assert r.exit_code == 0 and "set [retrieval] k in rag.toml" in r.stderr  # rich ate "[retrieval]"
