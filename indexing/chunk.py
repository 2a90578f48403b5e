"""Documents -> chunks sized in embedder tokens, each with exact character offsets.

Sizes are counted with the embedder's own tokenizer, so no chunk is silently truncated when it is
embedded (all-MiniLM-L6-v2 stops reading at 256 tokens). Splitting prefers paragraph breaks, then
lines, then sentences, then words, then characters.

The splitter is LangChain's RecursiveCharacterTextSplitter (keep_separator="end",
strip_whitespace=True) rewritten over (start, end) spans, and gives the same chunk texts (tests
compare the two). LangChain's merge copies its window list on every pop (`current_doc[1:]`), so a
run of zero-token pieces (whitespace) made it quadratic: 500 KB of space-padded words took 20 s. It
also counts every piece twice and hands back strings that we had to find again in the text. Here
the window is a deque, counts of short pieces are memoised, and offsets come for free.

Invariant: for every chunk c of document d, d.text[c.start:c.end] == c.text.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator

from rag.types import Chunk

SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
MEMO_MAX_CHARS = 64  # words and characters repeat a lot; long pieces rarely do
MEMO_MAX_ENTRIES = 200_000  # bound the memo's memory on huge vocabularies

Span = tuple[int, int]


def _memoised(count_tokens: Callable[[str], int]) -> Callable[[str], int]:
    """count_tokens with a bounded memo for short strings (exact: a token count is a pure function)."""
    memo: dict[str, int] = {}

    def count(text: str) -> int:
        if len(text) > MEMO_MAX_CHARS:
            return count_tokens(text)
        n = memo.get(text)
        if n is None:
            if len(memo) >= MEMO_MAX_ENTRIES:
                memo.clear()
            n = memo[text] = count_tokens(text)
        return n

    return count


class RecursiveSplitter:
    """Split text into spans of at most `chunk_tokens` tokens that overlap by about `overlap` tokens.

    >>> s = RecursiveSplitter(lambda t: len(t.split()), chunk_tokens=4, overlap=0)
    >>> s.split_text("one two\\n\\nthree four five six")
    ['one two', 'three four five six']
    """

    def __init__(
        self,
        count_tokens: Callable[[str], int],
        chunk_tokens: int,
        overlap: int,
        separators: list[str] = SEPARATORS,
    ):
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
        self.count = _memoised(count_tokens)
        self.size = chunk_tokens
        self.overlap = overlap if 0 <= overlap < chunk_tokens else chunk_tokens // 4
        self.separators = separators
        self.sep_len = count_tokens("")  # LangChain adds this between pieces; 0 for real tokenizers

    def split_text(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.spans(text)]

    def spans(self, text: str) -> Iterator[Span]:
        """(start, end) of every chunk, in document order."""
        return self._split(text, 0, len(text), 0)

    def _pick(self, text: str, a: int, b: int, level: int) -> tuple[str, int | None]:
        """The first separator present in text[a:b], and the level its over-long pieces recurse at."""
        seps = self.separators[level:]
        for i, sep in enumerate(seps):
            if not sep:
                return sep, None
            if text.find(sep, a, b) != -1:
                nxt = level + i + 1
                return sep, (nxt if nxt < len(self.separators) else None)
        return seps[-1], None

    def _split(self, text: str, a: int, b: int, level: int) -> Iterator[Span]:
        sep, deeper = self._pick(text, a, b, level)
        merger = _Merger(text, self.size, self.overlap, self.sep_len)
        for s0, s1 in _pieces(text, a, b, sep):
            n = self.count(text[s0:s1])
            if n < self.size:
                yield from merger.add(s0, s1, n)
                continue
            yield from merger.flush()
            if deeper is None:
                yield s0, s1  # an unsplittable piece, kept whole (and unstripped), as LangChain does
            else:
                yield from self._split(text, s0, s1, deeper)
        yield from merger.flush()


def _pieces(text: str, a: int, b: int, sep: str) -> Iterator[Span]:
    """text[a:b] cut after every occurrence of sep (the separator stays at the end of its piece);
    an empty separator cuts between characters.

    >>> list(_pieces("a. b. c", 0, 7, ". "))
    [(0, 3), (3, 6), (6, 7)]
    """
    if not sep:
        yield from ((i, i + 1) for i in range(a, b))
        return
    pos = a
    while (j := text.find(sep, pos, b)) != -1:
        yield pos, j + len(sep)
        pos = j + len(sep)
    if pos < b:
        yield pos, b


class _Merger:
    """LangChain's _merge_splits, fed one piece at a time: pack consecutive pieces into windows of at
    most `size` tokens, starting each window with up to `overlap` tokens of the previous one."""

    def __init__(self, text: str, size: int, overlap: int, sep_len: int):
        self.text, self.size, self.overlap, self.sep_len = text, size, overlap, sep_len
        self.window: deque[tuple[int, int, int]] = deque()  # (start, end, tokens) of consecutive pieces
        self.total = 0

    def add(self, s0: int, s1: int, n: int) -> Iterator[Span]:
        win = self.window
        if self.total + n + (self.sep_len if win else 0) > self.size and win:
            yield from self._emit()
            while self.total > self.overlap or (
                self.total + n + (self.sep_len if win else 0) > self.size and self.total > 0
            ):
                self.total -= win[0][2] + (self.sep_len if len(win) > 1 else 0)
                win.popleft()
        win.append((s0, s1, n))
        self.total += n + (self.sep_len if len(win) > 1 else 0)

    def flush(self) -> Iterator[Span]:
        if self.window:
            yield from self._emit()
        self.window.clear()
        self.total = 0

    def _emit(self) -> Iterator[Span]:
        span = _strip(self.text, self.window[0][0], self.window[-1][1])
        if span is not None:
            yield span


def _strip(text: str, a: int, b: int) -> Span | None:
    """The span of text[a:b].strip(), or None if that is empty.

    >>> _strip("  hi \\n", 0, 6)
    (2, 4)
    """
    piece = text[a:b]
    left = piece.lstrip()
    if not left:
        return None
    start = a + len(piece) - len(left)
    return start, start + len(left.rstrip())


def make_splitter(count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int) -> RecursiveSplitter:
    return RecursiveSplitter(count_tokens, chunk_tokens, overlap)


def chunk_text(doc: str, text: str, splitter) -> list[Chunk]:
    """Split one document into chunks with their offsets.

    `splitter` is ours (it gives spans) or anything with LangChain's `split_text` (its pieces are
    then located in the text, as the benchmark does for the LangChain baseline).

    >>> s = make_splitter(lambda t: len(t.split()), chunk_tokens=4, overlap=0)
    >>> [(c.text, c.start) for c in chunk_text("a.txt", "one two\\n\\nthree four five six", s)]
    [('one two', 0), ('three four five six', 9)]
    """
    spans = (
        splitter.spans(text) if hasattr(splitter, "spans") else _locate(doc, text, splitter.split_text(text))
    )
    return [Chunk(id=f"{doc}:{a}-{b}", doc=doc, text=text[a:b], start=a, end=b) for a, b in spans]


def _locate(doc: str, text: str, pieces: list[str]) -> Iterator[Span]:
    """Offsets of split_text's pieces: each comes after the previous one and reaches past it."""
    prev_start, prev_end = -1, 0
    for piece in pieces:
        # In repetitive text the first match after the previous start can be an earlier copy: skip those.
        start = text.find(piece, prev_start + 1)
        while start != -1 and start + len(piece) <= prev_end:
            start = text.find(piece, start + 1)
        if start == -1:
            raise ValueError(f"chunk not found in {doc}: {piece[:40]!r}")
        prev_start, prev_end = start, start + len(piece)
        yield prev_start, prev_end
