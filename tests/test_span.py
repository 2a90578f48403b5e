"""Span-faithful decoding and the calibrated abstention choice, on a tiny in-process Llama whose logits
rank tokens as a test says (no downloads)."""

from __future__ import annotations

import math

import pytest
import torch
from fakes import HG, SB50, hit, make_tokenizer, prompt_length, tiny_llama_config

from rag.errors import BadInput
from rag.pipeline import answer_to_json
from rag.prompt import ABSTAIN
from rag.reader import LLMReader
from rag.span import SpanGrammar

HITS = [hit("docs/super_bowl_50.txt", SB50, 120), hit("docs/mercury.txt", HG, 40)]
Q = "Who won Super Bowl 50?"


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def ranked_model(tok, texts: list[str], abstain_first: float | None = None):
    """A tiny Llama (real forward pass and KV cache) whose choice at answer position i ranks the i-th token
    of texts[0] first, of texts[1] second, and so on. `abstain_first` puts the abstention sentence's first
    token at that logit, and makes the rest of the sentence certain.

    Positions come from the KV cache length, so a cache that was not cut back after the abstention
    sentence was scored would shift every later choice."""
    from transformers import LlamaForCausalLM

    scripts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    abstain = tok(ABSTAIN, add_special_tokens=False)["input_ids"]

    class Ranked(LlamaForCausalLM):
        def forward(self, input_ids=None, cache=None, **kw):
            out = super().forward(input_ids=input_ids, cache=cache, **kw)
            prompt_len = prompt_length(self, cache, out)
            logits = torch.full_like(out.logits, -20.0)
            scoring_abstention = input_ids.shape[1] == len(abstain) - 1 and int(input_ids[0, 0]) == abstain[0]
            end = out.cache.get_seq_length() - prompt_len  # answer position after the last input
            for j in range(logits.shape[1]):  # every returned position (the abstention pass returns all)
                i = end - logits.shape[1] + j + 1
                for rank, s in enumerate(scripts):
                    if 0 <= i < len(s) and logits[0, j, s[i]] == -20.0:
                        logits[0, j, s[i]] = 10.0 - 5 * rank
                if scoring_abstention and 0 < i < len(abstain):
                    logits[0, j, abstain[i]] = 30.0  # once started, the sentence is certain
            if abstain_first is not None and end == 0:
                logits[0, -1, abstain[0]] = abstain_first
            out.logits = logits
            return out

    torch.manual_seed(0)
    return Ranked(tiny_llama_config(tok)).eval()


def span_reader(tok, texts, threshold=0.0, abstain_first=None, max_new_tokens=32):
    model = ranked_model(tok, texts, abstain_first)
    return LLMReader(
        model,
        tok,
        {"name": "tiny"},
        adapter=None,
        max_new_tokens=max_new_tokens,
        span=True,
        abstain_threshold=threshold,
    )


def test_grammar_holds_answers_to_passages_and_citations_to_holders():
    g = SpanGrammar([SB50, HG], allow_abstain=False)
    assert g.allows("Denver Bro") and g.allows("denver  broncos [1")
    assert not g.allows("Denver Broncos [2") and not g.allows("Denver Broncos [1] and")
    assert g.allows("liquid at room [2]") and not g.allows("Miami")
    assert not g.allows("The documents do not contain")  # abstaining is the score's choice, not a span
    assert g.complete("liquid at ROOM temperature") == "liquid at room temperature [2]"
    assert g.complete("Miami") is None


def test_answer_is_copied_and_cited_where_it_is(tok):
    r = span_reader(tok, ["Denver Broncos [2]"], threshold=math.inf)
    ans = r.answer(Q, HITS)
    assert (ans.text, [c.n for c in ans.citations]) == ("Denver Broncos", [1])  # [2] does not hold it
    assert ans.supported and all(c.supported for c in ans.citations)


def test_the_citation_the_grammar_forces_does_not_count_against_the_answer(tok):
    # the model's span is its first choice throughout, but it would cite [2], which does not hold it: the
    # grammar forces [1], a low-probability token, and that must not make abstaining look better
    texts = ["Denver Broncos [2]", "Denver Broncos [1]"]
    ans = span_reader(tok, texts, threshold=1.0, abstain_first=9.5).answer(Q, HITS)
    d = ans.decision
    assert not ans.abstained and d["span"] == "Denver Broncos [1]"
    assert d["answer_logprob"] == pytest.approx(sum(d["span_token_logprobs"]), abs=1e-3)
    assert d["answer_logprob"] > -1 and d["citation_logprob"] < -4
    # counting the forced citation, as the first version did, would have declined
    assert d["abstain_logprob"] - d["answer_logprob"] - d["citation_logprob"] > 1.0


def test_words_the_passages_lack_are_replaced_by_the_next_choice(tok):
    # first choice "Carolina Broncos": "Carolina" is there, "Carolina Broncos" is not
    r = span_reader(tok, ["Carolina Broncos [1]", "Carolina Panthers [1]"], threshold=math.inf)
    ans = r.answer(Q, HITS)
    assert ans.text.startswith("Carolina") and ans.text in SB50
    assert ans.decision["span"].endswith("[1]")


def test_kv_cache_is_cut_back_after_scoring_the_abstention(tok):
    # positions come from the cache length: a cache left holding the sentence would shift the script
    r = span_reader(tok, ["Carolina Panthers [1]"], threshold=math.inf)
    assert r.answer(Q, HITS).text == "Carolina Panthers"


def test_the_threshold_decides_and_the_models_own_choice_is_recorded(tok):
    texts = ["Denver Broncos [1]"]
    # the model's own first choice is the abstention sentence: recorded; the threshold still decides
    own = span_reader(tok, texts, threshold=math.inf, abstain_first=12.0).answer(Q, HITS)
    assert not own.abstained and own.decision["model_declines"] and own.text == "Denver Broncos"
    assert span_reader(tok, texts, threshold=0.0, abstain_first=12.0).answer(Q, HITS).abstained
    # the span comes first, the sentence close behind: the threshold makes the choice
    close = span_reader(tok, texts, threshold=0.0, abstain_first=9.5).answer(Q, HITS)
    d = close.decision
    gap = d["abstain_logprob"] - d["answer_logprob"]
    assert not d["model_declines"] and -1.0 < gap < 0 and not close.abstained
    assert span_reader(tok, texts, threshold=gap - 0.1, abstain_first=9.5).answer(Q, HITS).abstained
    unlikely = span_reader(tok, texts, threshold=0.0).answer(Q, HITS)
    assert not unlikely.abstained and unlikely.decision["abstain_logprob"] < -10
    assert answer_to_json(unlikely)["decision"]["span"] == "Denver Broncos [1]"


def test_no_span_in_any_passage_abstains(tok):
    r = span_reader(tok, ["Miami Dolphins [1]"], threshold=math.inf, max_new_tokens=4)
    # lower-ranked tokens are all tied: whatever they spell must still be a copy, or it abstains
    ans = r.answer(Q, HITS)
    assert ans.abstained or (ans.text.lower() in SB50.lower() + HG.lower() and ans.supported)


def test_free_decoding_is_unchanged(tok):
    r = span_reader(tok, ["Denver Broncos [2]"])
    r.span = False
    ans = r.answer(Q, HITS)
    assert [c.n for c in ans.citations] == [2] and not ans.supported and ans.decision == {}


def test_flags_and_rag_toml_reach_the_reader(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rag import cli

    got = []

    def factory(name, model, adapter, max_new_tokens, **settings):
        got.append(settings)
        raise BadInput("stop here")

    monkeypatch.setattr(cli, "_ask_reader", factory)
    monkeypatch.setattr(cli, "_ask_retriever", lambda index, mode, cfg: None)
    runner = CliRunner()
    runner.invoke(cli.app, ["ask", "Who won?", "--span", "--abstain-threshold", "-1.5"])
    assert (got[-1]["span"], got[-1]["abstain_threshold"]) == (True, -1.5)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text("[reader]\nspan = true\nabstain_threshold = 2.0\n")
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert (got[-1]["span"], got[-1]["abstain_threshold"]) == (True, 2.0)
    runner.invoke(cli.app, ["ask", "Who won?", "--no-span"])
    assert got[-1]["span"] is False
    assert got[-1]["decline_missing_names"] is True  # the default
    (tmp_path / "rag.toml").write_text("[reader]\ndecline_missing_names = false\n")
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert got[-1]["decline_missing_names"] is False
    assert got[-1]["min_rerank_score"] == -3.5  # the default
    (tmp_path / "rag.toml").write_text("[reader]\nmin_rerank_score = -inf\n")
    runner.invoke(cli.app, ["ask", "Who won?"])
    assert got[-1]["min_rerank_score"] == -math.inf


@pytest.mark.parametrize("span", [True, False])
def test_a_name_no_passage_holds_is_declined_before_generating(tok, span):
    r = span_reader(tok, ["Denver Broncos [1]"], threshold=math.inf)
    r.span, r.decline_missing_names = span, True
    ans = r.answer("Who won Super Bowl 51 in Houston?", HITS)
    assert ans.abstained and r.last_new_tokens == 0
    assert ans.decision == {"missing_names": ["51", "Houston"]}
    # names the passages hold pass through to the model; with the rule off nothing is declined by it
    assert not r.answer("Who won Super Bowl 50 for Denver?", HITS).abstained
    r.decline_missing_names = False
    assert not r.answer("Who won Super Bowl 51 in Houston?", HITS).abstained


@pytest.mark.parametrize("span", [True, False])
def test_passages_the_reranker_scores_low_are_declined_before_generating(tok, span):
    import dataclasses

    r = span_reader(tok, ["Denver Broncos [1]"], threshold=math.inf)
    r.span, r.min_rerank_score = span, -3.0
    low = [dataclasses.replace(h, rerank_score=s) for h, s in zip(HITS, (-3.5, -7.0))]
    ans = r.answer(Q, low)
    assert ans.abstained and r.last_new_tokens == 0
    assert ans.decision == {"rerank_score": -3.5, "min_rerank_score": -3.0}
    # one passage at the cut is enough to read; hits that were never reranked are read whatever the cut
    high = [dataclasses.replace(h, rerank_score=s) for h, s in zip(HITS, (-7.0, -3.0))]
    assert r.answer(Q, high).text == "Denver Broncos"
    assert r.answer(Q, HITS).text == "Denver Broncos"
    r.min_rerank_score = -math.inf  # off
    assert r.answer(Q, low).text == "Denver Broncos"
