"""Pure scoring functions: SQuAD v1.1 EM/F1, retrieval, abstention, citations, grounding, bootstrap.

EM/F1 are rag.text's, the official SQuAD v1.1 definition (huggingface/evaluate metrics/squad):
lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace; EM is equality of the
normalized strings, F1 the token-overlap F1; both take the max over the gold answers. The same functions
score the reader's validation during fine-tuning. Functions return 0..1; reports x100.

The one number a person understands, defined here once:
  answered correctly with a valid citation = the question is answerable, the system did not abstain,
  its answer has F1 >= 0.5 against the best gold answer (EM implies F1 = 1), and at least one passage
  it cites contains a gold answer (normalized, on token boundaries).
F1 >= 0.5 rather than EM because generative readers phrase spans slightly differently ("the Broncos"
vs "Denver Broncos" is F1 0.67, EM 0); half the tokens shared is the loosest match a reader would
still call right.

Grounding (the `grounding` column) is rag.text.support, the test the reader itself applies before it
calls an answer `supported`: the share of the answer's content words (stopwords and lone letters left
out, plurals folded) found in the union of the passages it cites; 1.0 for an answer without content
words, 0 for one that cites nothing. `supported_rate` is the same measure thresholded by the reader
(>= 0.8 of the words, rag.reader.SUPPORT_THRESHOLD), so the two columns measure one thing at two grains.
It checks words, not meaning: "not the Broncos" is grounded in a passage about the Broncos.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# SQuAD scoring lives in rag.text (fine-tuning validation uses it too); eval.metrics re-exports it.
from rag.text import em_f1 as em_f1
from rag.text import exact_match as exact_match
from rag.text import f1 as f1
from rag.text import max_over_golds as max_over_golds
from rag.text import normalize_answer, support

CORRECT_F1 = 0.5  # F1 threshold for "answered correctly" in the headline number


# ---------------------------------------------------------------- retrieval
def spans_overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    """Half-open spans [a_start, a_end) and [b_start, b_end) share at least one character.

    >>> spans_overlap(0, 10, 10, 20), spans_overlap(0, 11, 10, 20)
    (False, True)
    """
    return a_start < b_end and b_start < a_end


def same_source(doc: str, source: str) -> bool:
    """A chunk's doc path names the gold source file (doc may carry a folder prefix).

    >>> same_source("corpus/Super_Bowl_50.txt", "Super_Bowl_50.txt")
    True
    """
    doc, source = doc.replace("\\", "/"), source.replace("\\", "/")
    return doc == source or doc.endswith("/" + source) or source.endswith("/" + doc)


def first_relevant_rank(relevant: Sequence[bool]) -> int | None:
    """1-based rank of the first relevant hit, or None.

    >>> first_relevant_rank([False, True, True])
    2
    """
    for i, r in enumerate(relevant, 1):
        if r:
            return i
    return None


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose first relevant hit is within the top k.

    >>> recall_at_k([1, 3, None, 2], 2)
    0.5
    """
    if not ranks:
        return float("nan")
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mrr_at_k(ranks: Sequence[int | None], k: int = 10) -> float:
    """Mean reciprocal rank, counting a miss (or a rank beyond k) as 0.

    >>> mrr_at_k([1, 2, None, 20], 10)
    0.375
    """
    if not ranks:
        return float("nan")
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks)


# ---------------------------------------------------------------- abstention
def abstention_scores(abstained: Sequence[bool], unanswerable: Sequence[bool]) -> dict:
    """Abstention as a classifier of unanswerable questions.

    precision: share of abstentions that were on unanswerable questions; recall: share of unanswerable
    questions declined; wrong_rate: share of answerable questions declined. None when undefined.

    >>> abstention_scores([True, True, False, False], [True, False, True, False])
    {'precision': 0.5, 'recall': 0.5, 'wrong_rate': 0.5}
    """
    pairs = list(zip(abstained, unanswerable, strict=True))
    n_abs = sum(a for a, _ in pairs)
    n_un = sum(u for _, u in pairs)
    n_ans = len(pairs) - n_un
    tp = sum(a and u for a, u in pairs)
    wrong = sum(a and not u for a, u in pairs)
    return {
        "precision": tp / n_abs if n_abs else None,
        "recall": tp / n_un if n_un else None,
        "wrong_rate": wrong / n_ans if n_ans else None,
    }


# ---------------------------------------------------------------- citations and grounding
def contains_answer(passage: str, golds: Sequence[str]) -> bool:
    """A passage contains a gold answer on word boundaries: after SQuAD normalization, or as written
    (case-insensitive), since normalization glues hyphenated words ("Six-time" -> "sixtime").

    >>> contains_answer("The Denver Broncos won.", ["denver broncos", "Carolina"])
    True
    >>> contains_answer("Six-time Grammy winner", ["Six"])
    True
    >>> contains_answer("Broncos-mania", ["Bronco"])
    False
    """
    text = f" {normalize_answer(passage)} "
    low = passage.lower()
    for g in golds:
        ng = normalize_answer(g)
        if ng and f" {ng} " in text:
            return True
        g = g.strip().lower()
        if g and re.search(rf"(?<!\w){re.escape(g)}(?!\w)", low):
            return True
    return False


def grounding_score(answer: str, cited_passages: Sequence[str]) -> float:
    """Share of the answer's content words found in the passages it cites (rag.text.support).

    An answer that cites nothing scores 0: nothing backs it.

    >>> grounding_score("Denver Broncos in 2016", ["The Denver Broncos won the title."])
    0.6666666666666666
    >>> grounding_score("the Bronco", ["The Broncos won."]), grounding_score("Denver", [])
    (1.0, 0.0)
    """
    if not cited_passages:
        return 0.0
    return support(answer, " ".join(cited_passages))


def correct_with_citation(f1_score: float, abstained: bool, cites_gold: bool) -> bool:
    """The headline test: answered (not abstained), F1 >= 0.5, and a cited passage holds a gold answer."""
    return (not abstained) and f1_score >= CORRECT_F1 and cites_gold


# ---------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Bootstrap:
    diff: float  # mean(a) - mean(b) on the paired items
    lo: float  # lower end of the percentile CI
    hi: float  # upper end
    n: int  # paired items
    p_le_0: float  # share of bootstrap means <= 0 (a one-sided p-value for "a beats b")

    def as_dict(self) -> dict:
        return {"diff": self.diff, "lo": self.lo, "hi": self.hi, "n": self.n, "p_le_0": self.p_le_0}


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Bootstrap:
    """Percentile bootstrap CI for mean(a - b) over paired items (same questions, two systems).

    >>> r = paired_bootstrap([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    >>> (r.diff, r.lo, r.hi)
    (1.0, 1.0, 1.0)
    """
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if x.ndim != 1 or len(a) != len(b):
        raise ValueError("paired_bootstrap needs two sequences of the same length")
    n = len(x)
    if n == 0:
        nan = float("nan")
        return Bootstrap(nan, nan, nan, 0, nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for s in range(0, n_boot, 256):  # chunked so a large n does not allocate n_boot x n at once
        m = min(256, n_boot - s)
        means[s : s + m] = x[rng.integers(0, n, size=(m, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Bootstrap(float(x.mean()), float(lo), float(hi), n, float((means <= 0).mean()))


def percentile(values: Sequence[float], q: float) -> float | None:
    """q-th percentile (0..100, linear interpolation); None for no values.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return float(np.percentile(vals, q))


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values; None when there are none.

    >>> mean([1.0, None, 0.0])
    0.5
    """
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None
