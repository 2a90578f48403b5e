"""Span-faithful decoding: which generations keep the answer a copy of a passage, cited where it is.

The reader's greedy loop asks `SpanGrammar.allows(text)` for each candidate continuation (the model's own
top choices first) and takes the first one allowed. A text is allowed while it is

    - the start of an answer that occurs in at least one passage (case and runs of spaces aside), from
      the start of a word there (and, once finished, up to the end of a word),
    - that answer followed by " [" and the digits of a passage that contains it, then "]",
    - or the start of the abstention sentence (when abstaining is allowed at all).

So an answer can only be words the passages hold, and its citation can only point at a passage that
holds it. The texts compared are the passage texts as the model saw them (rag.prompt.shown_text).

    >>> g = SpanGrammar(["The Denver Broncos beat the Carolina Panthers.", "Denver is in Colorado."])
    >>> g.allows("Denver Bron"), g.allows("Denver Broncos [1"), g.allows("Denver Broncos [2")
    (True, True, False)
    >>> g.allows("Miami"), g.allows("The documents do not"), g.holders("denver")
    (False, True, [1, 2])
    >>> g.closed("Denver Broncos [1]"), g.complete("denver  broncos"), g.complete("denver [2]")
    (True, 'Denver Broncos [1]', 'Denver [2]')
"""

from __future__ import annotations

import re

from rag.prompt import ABSTAIN

_PARTS = re.compile(r"^(?P<answer>[^\[]*?)\s*(?:\[(?P<digits>\d{0,3})(?P<close>\])?)?$")
_SPACES = re.compile(r"\s+")


def fold(text: str) -> str:
    """What two copies of a span must share: lowercase, one space between words, no ends.

    >>> fold("  The  Denver\\nBroncos ")
    'the denver broncos'
    """
    return _SPACES.sub(" ", text.lower()).strip()


class SpanGrammar:
    """The allowed generations for a set of passages (1-based numbers, in prompt order)."""

    def __init__(self, passages: list[str], allow_abstain: bool = True):
        self.originals = list(passages)
        self.passages = [fold(p) for p in passages]
        self.allow_abstain = allow_abstain

    def holders(self, answer: str, whole: bool = False) -> list[int]:
        """Numbers of the passages that contain `answer` (folded), starting at a word boundary; with
        `whole`, ending at one too ("mi" is not copied from "chemical").

        >>> g = SpanGrammar(["a chemical element"])
        >>> g.holders("chem"), g.holders("chem", whole=True), g.holders("mi"), g.holders("chemical", True)
        ([1], [], [], [1])
        """
        a = fold(answer)
        if not a:
            return []
        pattern = re.compile(
            (r"(?<!\w)" if a[0].isalnum() or a[0] == "_" else "")
            + re.escape(a)
            + (r"(?!\w)" if whole and (a[-1].isalnum() or a[-1] == "_") else "")
        )
        return [i for i, p in enumerate(self.passages, 1) if a in p and pattern.search(p)]

    def _split(self, text: str):
        """(answer, digits or None, closed) of a generation, or None when it has another shape."""
        m = _PARTS.match(text.strip())
        if m is None:
            return None
        return m.group("answer"), m.group("digits"), bool(m.group("close"))

    def is_abstaining(self, text: str) -> bool:
        t = text.strip()
        return bool(t) and (ABSTAIN.startswith(t) or t.startswith(ABSTAIN))

    def _located(self, text: str, whole: bool | None = None):
        """(answer, digits, closed, passages holding the answer) of a span-shaped text, or None when it
        is not span-shaped or no passage holds it. The answer must end a word when `whole`, or (None)
        when a citation follows it."""
        parts = self._split(text)
        if parts is None:
            return None
        answer, digits, closed = parts
        where = self.holders(answer, whole=digits is not None if whole is None else whole)
        return (answer, digits, closed, where) if where else None

    def allows(self, text: str) -> bool:
        """True when `text` (the generation so far) can still become an allowed answer."""
        if not text.strip():
            return True
        if self.allow_abstain and self.is_abstaining(text):
            return True
        found = self._located(text)
        if found is None:
            return False
        answer, digits, closed, where = found
        if digits is None:
            return True
        if closed:
            return digits != "" and int(digits) in where
        return any(str(n).startswith(digits) for n in where)

    def closed(self, text: str) -> bool:
        """True when `text` is a whole answer: a span with its citation closed, or the whole abstention."""
        if self.allow_abstain and text.strip().startswith(ABSTAIN):
            return True
        parts = self._split(text)
        return parts is not None and parts[2] and self.allows(text)

    def copy(self, answer: str, n: int) -> str:
        """The span as passage `n` writes it (its case and spacing), or `answer` stripped if not found.

        >>> SpanGrammar(["The Denver  Broncos won."]).copy("denver broncos", 1)
        'Denver  Broncos'
        """
        words = fold(answer).split(" ")
        pattern = r"\s+".join(map(re.escape, words))
        m = re.search(pattern, self.originals[n - 1], re.IGNORECASE) if words != [""] else None
        return m.group(0) if m else answer.strip()

    def complete(self, text: str) -> str | None:
        """`text` finished as "span [n]", the span copied from passage n: a bare span gets the citation of
        the first passage holding it. The whole abstention stays; None when there is no span to cite."""
        t = text.strip()
        if self.allow_abstain and t.startswith(ABSTAIN):
            return ABSTAIN
        found = self._located(t, whole=True)
        if found is None:
            return None
        answer, digits, closed, where = found
        n = int(digits) if closed and digits and int(digits) in where else where[0]
        return f"{self.copy(answer, n)} [{n}]"
