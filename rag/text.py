"""Text measures shared by serving, training and evaluation: words, grounding, and SQuAD EM/F1.

Two families, each defined once here (imports nothing of ours):

  words / content_words / stem / support -- is an answer grounded in a passage? The reader flags an
      answer `supported` from `support` (rag.reader.check_citations) and the eval's `grounding` column is
      `support` against the cited passages (eval.metrics.grounding_score): one definition, two uses.
  normalize_answer / exact_match / f1 / em_f1 -- the official SQuAD v1.1 scoring (huggingface/evaluate
      metrics/squad): lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace; EM is
      equality of the normalized strings, F1 the token-overlap F1, both maxed over the gold answers.

The two tokenize differently on purpose: SQuAD's normalization glues "24-10" into "2410" and keeps
"Broncos" apart from "Bronco", as the official script does; grounding splits on anything that is not a
letter or digit and folds plurals, so an answer is not called ungrounded over a hyphen or an "s".

    >>> content_words("The Denver Broncos won in 2016.")
    ['denver', 'broncos', 'won', '2016']
    >>> support("Denver Broncos", "The Bronco of Denver won.")
    1.0
    >>> em_f1("the Denver Broncos", ["Denver Broncos", "Broncos"])
    (1.0, 1.0)
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

# ---------------------------------------------------------------- words and grounding

# Function words that carry no content: an answer's other words must appear in what it cites.
STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or but nor not no is are was were be been being am
    as that this these those it its it's which who whom whose what when where why how did do does done
    has have had having i you he she we they them his her their our your my me us there here than then
    so such into onto over under about after before during while if else also only just very can could
    would should will shall may might must one ones any some all each both either neither other""".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def stem(w: str) -> str:
    """Crude plural folding so 'Broncos' matches 'Bronco' (and 'classes' matches 'class').

    >>> stem("broncos"), stem("classes"), stem("class"), stem("bus")
    ('bronco', 'class', 'class', 'bus')
    """
    if len(w) > 4 and w.endswith("es"):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


# soft hyphens and zero-width characters that HTML and PDF text put inside words ("JSON\u00adDecode")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")


def words(text: str) -> list[str]:
    """Lowercased alphanumeric tokens; identifiers keep their parts (`__lt__` -> lt).

    >>> words("Denver's 24–10 win!"), words("json.JSON\u00adDecode\u200bError, __lt__()"), words("Möngke")
    (['denver', 's', '24', '10', 'win'], ['json', 'jsondecodeerror', 'lt'], ['mongke'])
    """
    return _WORD.findall(_fold_accents(_INVISIBLE.sub("", text.lower())))


def _fold_accents(text: str) -> str:
    """ "Möngke" -> "Mongke", "Beyoncé" -> "Beyonce": the words a plain-ASCII question would use."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def content_words(text: str) -> list[str]:
    """Words that carry meaning: not stopwords, not a lone letter (possessive 's'), in order, no repeats.

    >>> content_words("It was the Broncos' 3rd title, the Broncos' s")
    ['broncos', '3rd', 'title']
    """
    seen: list[str] = []
    for w in words(text):
        if w in STOPWORDS or (len(w) == 1 and not w.isdigit()) or w in seen:
            continue
        seen.append(w)
    return seen


def support(answer: str, passage: str) -> float:
    """Share of the answer's content words found in the passage, plurals folded (1.0 when it has none).

    >>> support("Denver Broncos", "The Broncos of Denver won.")
    1.0
    >>> support("Denver Broncos in Miami", "The Denver Broncos defeated the Carolina Panthers 24-10.")
    0.6666666666666666
    >>> support("Carolina Panthers", "The Broncos of Denver won.")
    0.0
    >>> support("`JSONDecodeError`", "exception json.JSON\u00adDecodeError(msg, doc, pos)")
    1.0
    >>> support("__lt__", "rich comparison: object.__lt__(self, other)"), support("a", "b")
    (1.0, 1.0)
    """
    cw = content_words(answer)
    if not cw:
        return 1.0
    have = {stem(w) for w in words(passage)}
    return sum(stem(w) in have for w in cw) / len(cw)


_TERM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.'\-]*")


def names(question: str) -> list[str]:
    """The question's names: words with a capital letter (a capitalized function word such as the
    opening "What" aside), a digit or an underscore; in order, no repeats. A question about a name no
    passage mentions cannot be answered from them.

    >>> names("When did Beyonce release Lemonade in 2016?"), names("What does __lt__ return in Python 3?")
    (['Beyonce', 'Lemonade', '2016'], ['__lt__', 'Python', '3'])
    >>> names("What is the boiling point of mercury?"), names("Name the NFL team that won.")
    ([], ['NFL'])
    """
    out: list[str] = []
    for i, t in enumerate(_TERM.findall(_INVISIBLE.sub("", question))):
        t = t.rstrip(".'-")
        if not t or t.lower() in STOPWORDS or t in out or not words(t):
            continue
        # the first word is capitalized by grammar ("Name the ...", "Besides ..."): a name only when it
        # has a capital past its first letter, a digit or an underscore ("NFL", "JSONDecodeError")
        rest = t[1:] if i == 0 else t
        if any(c.isupper() for c in rest) or any(c.isdigit() or c == "_" for c in t):
            out.append(t)
    return out


NAMES_RULE = "names-v2"  # bump when `names` / `missing_names` change: eval keys saved answers by it
_TITLES = frozenset("mr mrs ms dr prof st jr sr sir gen col lt sgt rev".split())  # "Mr." names no one
_NUMBERS = dict(
    enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
)
_ORDINALS = dict(
    enumerate(
        "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth".split()
    )
)
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
_CAPS = re.compile(r"[A-Z][\w'\-]*")
_JOINERS = frozenset("of the and for de du la von van".split())


def _close(a: str, b: str) -> bool:
    """A misspelt or inflected copy: one names the other ("christians"/"christianity") or they are
    within an edit or two ("rommey"/"romney", "cheasepeake"/"chesapeake"); words of 5+ letters only."""
    if len(a) < 5 or len(b) < 5 or a[0] != b[0] or abs(len(a) - len(b)) > 3:
        return a == b
    if a.startswith(b) or b.startswith(a):
        return True
    limit = 1 if min(len(a), len(b)) < 8 else 2
    if len(a) == len(b):  # one swap of neighbours ("gaurd"/"guard") is one slip, not two
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        ):
            return True
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if min(cur) > limit:
            return False
        prev = cur
    return prev[-1] <= limit


def _initials(passages: Sequence[str]) -> set[str]:
    """Acronyms the passages spell out: initials of runs of capitalized words ("United States of
    America" -> usa, us, sa, ...), joiners such as "of" skipped."""
    out: set[str] = set()
    for p in passages:
        run: list[str] = []
        for tok in re.findall(r"[\w'\-]+", p):
            if _CAPS.fullmatch(tok):
                run.append(tok[0].lower())
            elif tok.lower() in _JOINERS and run:
                continue
            else:
                run = []
                continue
            for i in range(max(0, len(run) - 6), len(run) - 1):
                out.add("".join(run[i:]))
    return out


def missing_names(question: str, passages: Sequence[str]) -> list[str]:
    """The question's names (see `names`) that none of the passages contains. Case, hyphens, plurals
    and possessives aside; a misspelling within an edit or two, an acronym the passages spell out and a
    number written as a word ("3"/"three") count as contained; titles such as "Mr." are not names.

    >>> missing_names("When did Rihanna release Lemonade?", ["Beyonce released Lemonade in 2016."])
    ['Rihanna']
    >>> missing_names("Which NFL team won Super Bowl 50?", ["Super Bowl 50 was an NFL game."])
    []
    >>> missing_names("Which 5th Gaurd did Möngke send?", ["Mongke sent the fifth Guard."])
    []
    >>> missing_names("What did Mr. Rommey's USA buy 3 times?", ["Romney of the United States of America",
    ...                                                         "bought three."])
    []
    """
    have = {stem(w) for p in passages for w in words(p)}
    acronyms: set[str] | None = None

    def contained(w: str) -> bool:
        nonlocal acronyms
        if stem(w) in have or (w.isdigit() and _NUMBERS.get(int(w)) in have):
            return True
        ordinal = _ORDINAL.fullmatch(w)
        if ordinal and _ORDINALS.get(int(ordinal.group(1))) in have:
            return True
        if w.isalpha() and 2 <= len(w) <= 6:
            acronyms = _initials(passages) if acronyms is None else acronyms
            if w in acronyms:
                return True
        return any(_close(stem(w), h) for h in have)

    out = []
    for t in names(question):
        # a possessive's lone "s" is not part of the name ("Chauvin's" is named where "Chauvin" is)
        parts = [w for w in words(t) if (len(w) > 1 or w.isdigit()) and w not in _TITLES]
        if parts and not all(contained(w) for w in parts):
            out.append(t)
    return out


# ---------------------------------------------------------------- SQuAD v1.1 EM/F1
_NO_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Official SQuAD v1.1 normalization: lowercase, drop punctuation and articles, squeeze spaces.

    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    >>> normalize_answer("A-ha! U.S. theater")
    'aha us theater'
    """
    s = s.lower().translate(_NO_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalized strings are equal.

    >>> exact_match("the Broncos.", "Broncos"), exact_match("Broncos", "Denver Broncos")
    (1.0, 0.0)
    """
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalized strings (official definition: a Counter intersection).

    >>> round(f1("the Denver Broncos", "Broncos"), 3), f1("Broncos won", "Denver Broncos")
    (0.667, 0.5)
    """
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(fn: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    """Best score of `prediction` against any gold answer; 0.0 with no golds.

    >>> max_over_golds(f1, "Broncos", ["Carolina", "Broncos"]), max_over_golds(f1, "Broncos", [])
    (1.0, 0.0)
    """
    return max((fn(prediction, g) for g in golds), default=0.0)


def em_f1(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) in 0..1, each maxed over the gold answers.

    >>> em_f1("Denver Broncos", ["Denver Broncos", "The Broncos"])
    (1.0, 1.0)
    >>> em_f1("Broncos won", ["Denver Broncos"])
    (0.0, 0.5)
    """
    return max_over_golds(exact_match, prediction, golds), max_over_golds(f1, prediction, golds)
