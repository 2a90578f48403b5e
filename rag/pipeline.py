"""retrieve -> read -> cite. The retriever and reader are arguments, so any pair can be swapped or faked.

    ans = ask("Which NFL team represented the AFC at Super Bowl 50?", retriever, reader, k=5)
    ans.text, [c.source for c in ans.citations], ans.timings
    # 'Denver Broncos', ['super_bowl_50.txt'], {'retrieve_s': .., 'first_token_s': .., 'generate_s': ..}

`ask_stream` is the same with the answer's text pieces as they are generated (for the CLI);
the final Answer is on the stream object once it is exhausted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

from rag.errors import BadInput
from rag.types import Answer, Hit, Reader, Retriever, StreamingReader


class AskStream:
    """Iterate for answer text pieces; afterwards `.answer` holds the checked Answer, `.hits` the passages.

    timings: retrieve_s (search), first_token_s (from the question to the first piece of the answer,
    retrieval included: what a user waits before text appears), generate_s (reading), total_s.
    """

    def __init__(self, question: str, retriever: Retriever, reader: Reader, k: int = 5):
        question = question.strip()
        if not question:
            raise BadInput("the question is empty: type a question")
        if k < 1:
            raise BadInput(f"-k must be at least 1 (got {k})")
        self.question, self.reader = question, reader
        self.answer: Answer | None = None
        self._t0 = time.perf_counter()
        self.hits: list[Hit] = retriever.search(question, k)
        self.retrieve_s = time.perf_counter() - self._t0

    def __iter__(self) -> Iterator[str]:
        t1 = time.perf_counter()
        first = None
        reader = self.reader
        streaming = isinstance(reader, StreamingReader)
        if not streaming:  # a reader without streaming support: one piece
            ans = reader.answer(self.question, self.hits)
            first = time.perf_counter()
            yield ans.text
        else:
            pieces = []
            for piece in reader.stream(self.question, self.hits):
                if first is None:
                    first = time.perf_counter()
                pieces.append(piece)
                yield piece
            used = reader.last_passages
            if used is not None and used < len(self.hits):
                # passages that did not fit the prompt were never read: not citable, not listed as sources
                self.hits = self.hits[:used]
            ans = reader.finish(self.question, self.hits, "".join(pieces))
        end = time.perf_counter()
        extra = {k: v for k, v in (ans.timings or {}).items() if k not in ("generate_s",)}
        ans.timings = {
            "retrieve_s": self.retrieve_s,
            "first_token_s": (first if first is not None else end) - self._t0,
            "generate_s": end - t1,
            "total_s": end - self._t0,
            **extra,
        }
        new_tokens = reader.last_new_tokens if streaming else None
        if new_tokens is not None and "new_tokens" not in ans.timings:
            ans.timings["new_tokens"] = new_tokens
        self.answer = ans


def ask_stream(question: str, retriever: Retriever, reader: Reader, k: int = 5) -> AskStream:
    """Retrieve now; iterate the result to generate. See AskStream."""
    return AskStream(question, retriever, reader, k)


def ask(question: str, retriever: Retriever, reader: Reader, k: int = 5) -> Answer:
    """Answer a question from the top-k retrieved passages, with checked citations and timings."""
    s = ask_stream(question, retriever, reader, k)
    for _ in s:
        pass
    assert s.answer is not None
    return s.answer


def answer_to_json(ans: Answer, question: str | None = None) -> dict[str, Any]:
    """The `rag ask --json` object."""
    obj: dict[str, Any] = {} if question is None else {"question": question}
    obj.update(
        {
            "answer": ans.text,
            "abstained": ans.abstained,
            "supported": ans.supported,
            "citations": [
                {"n": c.n, "source": c.source, "start": c.start, "end": c.end, "supported": c.supported}
                for c in ans.citations
            ],
            "reader": {k: v for k, v in ans.reader.items() if k in ("model", "adapter", "dtype", "decoding")},
            "timings": {k: round(v, 4) if isinstance(v, float) else v for k, v in ans.timings.items()},
        }
    )
    if ans.decision:  # an infinite threshold (a rule turned off) is null: JSON has no Infinity
        obj["decision"] = {k: _json_number(v) for k, v in ans.decision.items()}
    return obj


def _json_number(v: Any) -> Any:
    """Floats rounded to 4 places, infinities as None; anything else as is.

    >>> _json_number(1.23456), _json_number(float("inf")), _json_number("x")
    (1.2346, None, 'x')
    """
    if not isinstance(v, float):
        return v
    return round(v, 4) if math.isfinite(v) else None


def hits_to_json(hits: list[Hit]) -> list[dict[str, Any]]:
    """The `rag search --json` list: rank, scores, source, offsets and text of each hit."""
    return [
        {
            "rank": i,
            "score": round(h.score, 6),
            "rerank_score": None if h.rerank_score is None else round(h.rerank_score, 4),
            "source": h.chunk.doc,
            "start": h.chunk.start,
            "end": h.chunk.end,
            "text": h.chunk.text,
        }
        for i, h in enumerate(hits, 1)
    ]


def snippet(text: str, answer: str | None = None, width: int = 160) -> str:
    """A one-line excerpt of a passage, centred on the answer when it occurs in it.

    >>> snippet("a " * 100 + "Denver Broncos won." + " b" * 100, "denver broncos", width=30)
    '... a a a a Denver Broncos won. b ...'
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    i = flat.lower().find(answer.lower()) if answer else -1
    if i < 0:
        return flat[:width].rstrip() + " ..."
    start = max(0, i - (width - len(answer)) // 2)
    end = min(len(flat), start + width)
    start = max(0, end - width)
    return ("... " if start else "") + flat[start:end].strip() + (" ..." if end < len(flat) else "")
