"""The reranker: wiring with a fake scorer (order, both scores, candidates, BM25 mode, flags, rag.toml),
and the real int8 ONNX cross-encoder in marked integration tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import HashEmbedder, hit
from typer.testing import CliRunner

import indexing.rerank as rr
from indexing.embed import register_embedder
from indexing.retrieve import memory_retriever, open_retriever
from rag import cli
from rag.config import RetrievalConfig
from rag.errors import ModelUnavailable
from rag.types import Chunk

runner = CliRunner()
CORPUS = Path(__file__).resolve().parent.parent / "corpus"
QUERY = "Which NFL team represented the AFC at Super Bowl 50?"


class FakeScorer:
    """Scores a text by how often it says 'Broncos'; records every call."""

    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query, texts):
        self.calls.append((query, list(texts)))
        return [float(t.count("Broncos")) for t in texts]


class FakeRetriever:
    def __init__(self, hits):
        self.hits, self.asked = hits, []

    def search(self, query, k):
        self.asked.append(k)
        return self.hits[:k]


def _chunks(n: int = 30) -> list[Chunk]:
    texts = [f"filler passage number {i} about football" for i in range(n)]
    texts[25] = "Broncos Broncos: the Denver Broncos represented the AFC"  # fused rank 26: out of reach
    texts[12] = "the Denver Broncos football team"
    texts[3] = "Broncos Broncos football"
    return [Chunk(f"d:{i}", "d.txt", t, i, i + 1) for i, t in enumerate(texts)]


def test_rerank_reorders_hits_and_keeps_both_scores():
    hits = [hit("a", "nothing here", score=0.9), hit("b", "Broncos", score=0.5), hit("c", "Broncos Broncos")]
    out = rr.rerank(FakeScorer(), "q", hits, top_k=2)
    assert [h.chunk.text for h in out] == ["Broncos Broncos", "Broncos"]
    assert [h.score for h in out] == [1.0, 0.5] and [h.rerank_score for h in out] == [2.0, 1.0]
    assert rr.rerank(FakeScorer(), "q", [], 5) == []


def test_reranking_retriever_rescores_exactly_the_top_candidates():
    hits = [hit("d", c.text, score=1 / (i + 1)) for i, c in enumerate(_chunks())]
    inner, scorer = FakeRetriever(hits), FakeScorer()
    r = rr.RerankingRetriever(inner, scorer, candidates=20)
    out = r.search("q", 2)
    assert inner.asked == [20] and len(scorer.calls[0][1]) == 20  # N fused candidates rescored
    assert [h.chunk.text for h in out] == ["Broncos Broncos football", "the Denver Broncos football team"]
    r.search("q", 25)  # k above N: k candidates
    assert inner.asked[-1] == 25
    assert [len(b) for b in r.search_batch(["q", "q"], 3)] == [3, 3]  # no search_batch inside: per query


def test_names_put_the_document_name_before_each_passage(tmp_path, monkeypatch):
    hits = [hit("docs/Denver_Broncos.txt", "they won", score=0.9), hit("mercury.md", "Broncos", score=0.5)]
    scorer = FakeScorer()
    out = rr.RerankingRetriever(FakeRetriever(hits), scorer, candidates=5, names=True).search("q", 2)
    assert scorer.calls[-1][1] == ["Denver Broncos. they won", "mercury. Broncos"]
    assert [h.chunk.text for h in out] == ["they won", "Broncos"]  # the hits keep their own text
    assert [h.rerank_score for h in out] == [1.0, 1.0]
    rr.RerankingRetriever(FakeRetriever(hits), scorer, candidates=5).search("q", 2)
    assert scorer.calls[-1][1] == ["they won", "Broncos"]  # off by default
    from eval.retrieval import hits_key, retrieval_config
    from eval.run import EvalConfig

    named = EvalConfig(rerank_names=True)
    assert retrieval_config(named).rerank_names and not retrieval_config(EvalConfig()).rerank_names  # off
    assert hits_key("i", named, 10) != hits_key("i", EvalConfig(), 10)  # other scores: other saved hits
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("[retrieval]\nrerank_names = true\n")
    from rag.config import load_config

    assert load_config().retrieval.rerank_names is True


def test_bm25_mode_reranks_without_vectors(monkeypatch):
    import indexing.retrieve

    scorer = FakeScorer()
    monkeypatch.setattr(indexing.retrieve, "load_scorer", lambda cfg: scorer)
    cfg = RetrievalConfig(rerank=True, rerank_candidates=5, rerank_names=False)  # the scorer sees the text
    r = memory_retriever(_chunks(), mode="bm25", cfg=cfg)  # no embedder is ever loaded in bm25 mode
    out = r.search("Broncos football", 2)
    assert isinstance(r, rr.RerankingRetriever) and r.candidates == 5
    assert len(scorer.calls[0][1]) == 5  # the BM25 top 5, rescored
    best = max(scorer.calls[0][1], key=lambda t: t.count("Broncos"))
    assert out[0].chunk.text == best and out[0].rerank_score == 3.0 and out[0].score > 0
    plain = memory_retriever(_chunks(), mode="bm25")
    assert not isinstance(plain, rr.RerankingRetriever)  # in memory (training data): off unless asked
    assert all(h.rerank_score is None for h in plain.search("Broncos", 3))


def test_config_fields_are_validated():
    from rag.errors import BadInput

    assert RetrievalConfig().rerank is True and RetrievalConfig().rerank_candidates == 15
    assert RetrievalConfig().k == 3  # reranked passages: 3 read as well as 5
    with pytest.raises(BadInput, match="rerank_candidates must be at least 1"):
        RetrievalConfig(rerank_candidates=0)
    with pytest.raises(BadInput, match="rerank must be true or false"):
        RetrievalConfig(rerank="yes")


@pytest.fixture
def index(tmp_path):
    register_embedder("fake-hash", HashEmbedder)
    d = tmp_path / "docs"
    d.mkdir()
    (d / "broncos.txt").write_text("The Denver Broncos won Super Bowl 50. Broncos fans cheered.")
    (d / "mercury.md").write_text("Mercury is the smallest planet, and Super Bowl 50 was watched there.")
    assert runner.invoke(cli.app, ["index", str(d), "--embedder", "fake-hash"]).exit_code == 0
    return tmp_path / "rag_home" / "index"


def _search(*args):
    r = runner.invoke(cli.app, ["search", "Super Bowl 50 planet", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_search_flags_and_rag_toml_reach_the_reranker(index, tmp_path, monkeypatch):
    import indexing.retrieve

    scorer = FakeScorer()
    monkeypatch.setattr(indexing.retrieve, "load_scorer", lambda cfg: scorer)
    monkeypatch.chdir(tmp_path)
    plain = _search("--no-rerank")
    assert plain[0]["source"] == "mercury.md" and plain[0]["rerank_score"] is None and not scorer.calls
    reranked = _search()  # on by default
    assert [h["source"] for h in reranked] == ["broncos.txt", "mercury.md"]
    assert reranked[0]["rerank_score"] == 2.0 and reranked[0]["score"] > 0  # both scores shown
    assert _search("--rerank") == reranked
    (tmp_path / "rag.toml").write_text("[retrieval]\nrerank = false\n")
    assert _search() == plain
    assert _search("--rerank") == reranked  # the flag wins over the file
    r = open_retriever(index, mode="bm25", cfg=RetrievalConfig(rerank=True))
    assert r.search("Super Bowl 50 planet", 1)[0].chunk.doc == "broncos.txt"


def test_ask_and_eval_flags_reach_the_retrieval_config(tmp_path, monkeypatch):
    from eval.retrieval import hits_key, retrieval_config
    from eval.run import EvalConfig

    seen = {}

    def retriever(index, mode, cfg):
        seen["cfg"] = cfg
        raise ModelUnavailable("stop here")

    monkeypatch.setattr(cli, "_ask_retriever", retriever)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("[retrieval]\nrerank = true\nrerank_candidates = 7\n")
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert seen["cfg"].rerank and seen["cfg"].rerank_candidates == 7
    runner.invoke(cli.app, ["ask", "Who won?", "--no-rerank"])
    assert not seen["cfg"].rerank

    on = EvalConfig(rerank=True, rerank_candidates=7)
    assert retrieval_config(on).rerank and retrieval_config(on).rerank_candidates == 7
    assert hits_key("i", on, 10) != hits_key("i", EvalConfig(), 10)  # saved hits are not mixed up
    got = {}
    monkeypatch.setattr(
        cli, "_eval_with_bar", lambda ts, qs, specs, cfg: got.setdefault("cfg", cfg) and 1 / 0
    )
    runner.invoke(cli.app, ["eval", "--limit", "2", "--absent", "0", "-s", "extractive", "--no-rerank"])
    assert got["cfg"].rerank is False
    assert EvalConfig().rerank is RetrievalConfig().rerank is True  # eval follows the default pipeline
    assert EvalConfig().k == RetrievalConfig().k
    got.clear()
    runner.invoke(cli.app, ["eval", "--limit", "2", "--absent", "0", "-s", "extractive"])
    assert got["cfg"].rerank is True and got["cfg"].rerank_candidates == 7


def test_missing_reranker_files_name_the_pull_command(rag_home, monkeypatch):
    monkeypatch.setattr(rr, "_CACHE", {})  # a real reranker another test loaded is not this store's
    folder = rag_home / "models" / "minilm-reranker"
    folder.mkdir(parents=True)
    (folder / "rag_model.json").write_text("{}")  # pulled once, then model.onnx was deleted
    with pytest.raises(
        ModelUnavailable, match=r"model.onnx is missing: run `rag models pull minilm-reranker"
    ):
        rr.load_reranker("minilm-reranker")
    (folder / "model.onnx").write_bytes(b"corrupt")
    (folder / "tokenizer.json").write_text((CORPUS.parent / "tests" / "fakes.py").read_text()[:0] or "{}")
    with pytest.raises(ModelUnavailable, match=r"rag models pull minilm-reranker --force"):
        rr.load_reranker("minilm-reranker")


# ---------------------------------------------------------------- the real model


@pytest.fixture
def reranker(real_models):
    return rr.load_reranker("minilm-reranker")


def _passages() -> list[str]:
    relevant = (CORPUS / "Super_Bowl_50.txt").read_text()[:1000]
    distractor = (
        "Super Bowl XLIX was played in Glendale, Arizona, where the New England Patriots defeated the "
        "Seattle Seahawks 28-24 to win their fourth Super Bowl title."
    )
    unrelated = "Photosynthesis converts light energy into chemical energy stored in glucose."
    return [relevant, distractor, unrelated]


@pytest.mark.integration
def test_real_reranker_orders_relevant_distractor_unrelated(reranker):
    rel, dis, unrel = reranker.score(QUERY, _passages())
    assert rel > 0 and rel > dis > unrel, (rel, dis, unrel)  # NOTES: 9.24 / -4.04 / -10.7
    assert max(len(e.ids) for e in reranker.encode_pairs(QUERY, _passages())) <= reranker.max_tokens


@pytest.mark.integration
def test_real_reranker_runs_each_pair_alone_with_the_real_mask(reranker, monkeypatch):
    from indexing.onnx import feed

    texts = _passages()
    feeds = []
    sessions = reranker.pool.sessions(8)

    class Spy:
        def __init__(self, session):
            self.session = session

        def run(self, names, inputs):
            feeds.append(inputs)
            return self.session.run(names, inputs)

    monkeypatch.setattr(reranker.pool, "_sessions", [Spy(s) for s in sessions])
    together = reranker.score(QUERY, texts)
    alone = [reranker.score(QUERY, [t])[0] for t in texts]
    lengths = [len(e.ids) for e in reranker.encode_pairs(QUERY, texts)]
    assert len(feeds) == 2 * len(texts) and all(
        f["input_ids"].shape[0] == 1 for f in feeds
    )  # one pair a call
    assert sorted(int(f["attention_mask"].sum()) for f in feeds[:3]) == sorted(lengths)  # nothing padded
    assert set(feeds[0]) == {"input_ids", "attention_mask", "token_type_ids"}  # what the graph declares
    assert together == alone  # a score does not depend on the other candidates
    # what batching did, and why the mask matters: one padded batch with the real mask moves the scores a
    # little (the int8 graph quantizes activations per batch tensor); with an all-ones mask, a lot
    session = sessions[0]
    padded = feed(reranker.encode_pairs(QUERY, texts), reranker.pad_id, reranker.inputs)
    batch = session.run(["logits"], padded)[0].ravel()
    assert np.allclose(batch, alone, atol=0.5) and np.argsort(batch).tolist() == np.argsort(alone).tolist()
    ones = session.run(["logits"], {**padded, "attention_mask": np.ones_like(padded["attention_mask"])})[0]
    assert abs(ones.ravel()[2] - alone[2]) > max(0.5, 10 * abs(batch[2] - alone[2])), (ones, batch, alone)
