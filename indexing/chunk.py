"""Documents -> chunks sized in embedder tokens, each with exact character offsets.

Sizes are counted with the embedder's own tokenizer, so no chunk is silently truncated when it is
embedded (all-MiniLM-L6-v2 stops reading at 256 tokens). Splitting prefers paragraph breaks, then
lines, then sentences, then words (LangChain's RecursiveCharacterTextSplitter).

Invariant: for every chunk c of document d, d.text[c.start:c.end] == c.text.
"""

from __future__ import annotations

from typing import Callable

from rag.types import Chunk

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if overlap >= chunk_tokens:
        overlap = chunk_tokens // 4
    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        chunk_size=chunk_tokens,
        chunk_overlap=overlap,
        length_function=count_tokens,
        keep_separator="end",
        strip_whitespace=True,
    )


def chunk_text(doc: str, text: str, splitter) -> list[Chunk]:
    """Split one document and locate every piece in the original text.

    >>> from indexing.chunk import make_splitter
    >>> s = make_splitter(lambda t: len(t.split()), chunk_tokens=4, overlap=0)
    >>> [(c.text, c.start) for c in chunk_text("a.txt", "one two\\n\\nthree four five six", s)]
    [('one two', 0), ('three four five six', 9)]
    """
    chunks: list[Chunk] = []
    prev_start, prev_end = -1, 0
    for piece in splitter.split_text(text):
        # Pieces come in document order and each reaches past the previous one; in repetitive text
        # the first match after the previous start can be an earlier copy, so skip those.
        start = text.find(piece, prev_start + 1)
        while start != -1 and start + len(piece) <= prev_end:
            start = text.find(piece, start + 1)
        if start == -1:
            raise ValueError(f"chunk not found in {doc}: {piece[:40]!r}")
        end = start + len(piece)
        chunks.append(Chunk(id=f"{doc}:{start}-{end}", doc=doc, text=piece, start=start, end=end))
        prev_start, prev_end = start, end
    return chunks
