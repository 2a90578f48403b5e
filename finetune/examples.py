"""The training example and the pure helpers both example builders share: finetune.data (the RAFT
examples) and finetune.nearmiss (near misses built by rule) take them from here, so nearmiss does not
import finetune.data (which calls it).

    >>> majority_answer(["Each brotherhood elects two delegates", "two delegates", "two delegates"])
    'two delegates'
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import asdict, dataclass

from rag.prompt import ABSTAIN, Passage, format_target


@dataclass
class Example:
    id: str  # question id from the source
    article: str  # article title: the unit of the train/validation split
    question: str
    passages: list[Passage]  # in the order the reader sees them
    gold: int | None  # 1-based position of the passage that answers, None when no passage does
    answers: list[str]  # all gold answer strings (for EM/F1); [] for a near miss no passage answers
    answer: str | None = None  # the target answer, None for abstention
    split: str = "train"
    kind: str = "raft"  # "raft", or a near miss (finetune/nearmiss.py): "swap", "disfluent", "twist"

    @property
    def target(self) -> str:
        """What the reader must generate (before EOS)."""
        if self.gold is None or self.answer is None:
            return ABSTAIN
        return format_target(self.answer, [self.gold])

    def to_json(self) -> dict:
        d = asdict(self)
        d["passages"] = [{"source": p.source, "text": p.text} for p in self.passages]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Example:
        d = dict(d)
        d["passages"] = [Passage(**p) for p in d["passages"]]
        return cls(**d)


def majority_answer(answers: list[str]) -> str:
    """The most frequent answer text, the shortest on ties.

    SQuADShifts' first answer is sometimes a whole sentence while the others are the short span; SQuAD
    scoring takes the best over the gold answers, so the short consensus span is the better target.

    >>> majority_answer(["the brotherhood of priests", "priests"])
    'priests'
    """
    texts = [a.strip() for a in answers if a.strip()]
    counts = Counter(texts)
    best = max(counts.values())
    return min((t for t in texts if counts[t] == best), key=len)


def contains_answer(norm_text: str, norm_answers: list[str]) -> bool:
    """Whole-word containment of any answer; both sides already normalize_answer()-ed.

    >>> contains_answer("denver broncos won", ["broncos"]), contains_answer("broncosx", ["broncos"])
    (True, False)
    """
    padded = f" {norm_text} "
    return any(a and f" {a} " in padded for a in norm_answers)


def source_name(title: str) -> str:
    """A passage's shown name: the article title as a file name ("nyt/Foo Bar" -> "Foo_Bar.txt")."""
    base = title.rsplit("/", 1)[-1].strip() or "document"
    return re.sub(r"[^\w.-]+", "_", base)[:60] + ".txt"


def negatives(
    cand: list[int],
    exclude: set[int],
    norm_answers: list[str],
    need: int,
    idx: list[int],
    norm_paras: list[str],
    rng: random.Random,
    stats: Counter,
) -> list[int]:
    """Up to `need` paragraphs that hold no answer: BM25 candidates first, then random ones of the split."""
    pool_neg = [j for j in cand if j not in exclude and not contains_answer(norm_paras[j], norm_answers)]
    rng.shuffle(pool_neg)
    negs = pool_neg[:need]
    if len(negs) < need:  # too few hard negatives: fill with random paragraphs of this split
        others = [j for j in idx if j not in exclude and j not in negs]
        rng.shuffle(others)
        for j in others:
            if len(negs) >= need:
                break
            if not contains_answer(norm_paras[j], norm_answers):
                negs.append(j)
                stats["random_fill"] += 1
    return negs
