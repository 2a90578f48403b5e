"""The small dataclasses and protocols the components talk through."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol


@dataclass(frozen=True)
class Chunk:
    id: str  # stable id: "<doc>#<start>-<end>"
    doc: str  # source path, relative to the indexed root when possible
    text: str  # the chunk text, exactly source_text[start:end]
    start: int  # character offset of the chunk in the document text
    end: int  # character offset one past the chunk's last character


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # higher is better; scale depends on the retrieval mode


@dataclass(frozen=True)
class Citation:
    n: int  # 1-based passage number as shown to the reader
    source: str  # the cited chunk's document
    start: int
    end: int
    supported: bool = True  # False when the answer's content words are absent from this passage


@dataclass
class Answer:
    text: str  # the answer without citation markers
    abstained: bool  # True when the reader said the documents do not contain the answer
    citations: list[Citation] = field(default_factory=list)
    reader: dict = field(default_factory=dict)  # {"model": ..., "adapter": ...}
    timings: dict = field(default_factory=dict)  # {"retrieve_s", "generate_s", "first_token_s"}
    raw: str = ""  # the reader's raw output, before parsing
    supported: bool = True  # False when the answer is not found in the passages it cites


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...


class Reader(Protocol):
    name: str

    def answer(self, question: str, hits: list[Hit]) -> Answer: ...

    def stream(self, question: str, hits: list[Hit]) -> Iterator[str]: ...
