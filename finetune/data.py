"""RAFT-style grounded QA examples for training the reader.

Each example is one question with a few passages, formatted exactly as the reader is served
(`rag.prompt`). With probability P (default 0.8) the gold paragraph is among the passages, at a random
position, and the target is the short answer plus its citation, e.g. "two delegates [3]". Otherwise
the gold paragraph is left out and the target is the abstention sentence. The other passages are hard
negatives: paragraphs from the same pool that BM25 ranks high for the question but that do not
contain any gold answer (so an abstention target is never a lie).

Distractor count: each example draws k uniformly from [min_distractors, distractors] (default 1..4,
so 2 to 5 passages, mean 3.5). RAFT uses a fixed 1 + 4. A CPU hour buys a fixed number of tokens, and
the cost per example is linear in passages; a range keeps the mean prompt ~30% shorter than a fixed
1 + 4 while still covering what the reader is served: a single gold paragraph (the eval setting) up
to the five retrieved chunks of `rag ask` (citation numbers 1-5 all appear as targets).

Near misses (DataConfig.swap_rate, disfluent_rate): extra examples in which a passage is about almost
what is asked. An entity swap replaces a named entity of a question (a person, place, year, ... found by
rule) with one of the same kind from the same article or source that no shown passage mentions, over the
question's own passages: "What does Mr. Jeffries consider stop-and-frisk?" -> "What does Mr. Bloomberg
consider stop-and-frisk?" with the Jeffries paragraph shown, "How many people were homeless in 2009?"
-> "... in 2006?"; the target is the abstention sentence. A disfluent question, in
Disfl-QA's style, starts one training question and switches to another ("Who founded X, no wait, when
did Y open?"); the target is the answer to the final one when its paragraph is shown, else the
abstention sentence, so the reader learns to follow the final intent rather than to decline on
disfluency. The RAFT examples do not depend on these settings (the near misses draw from their own
seeded generator), and Dataset.stats counts each kind (train_swap, train_disfluent_answer, ...).

Sources: "squadshifts" (SQuADShifts new_wiki + nyt), "squadshifts:new_wiki,reddit", a SQuAD JSON
file, or a JSONL file of {question, context, answers[, title, id]} rows.

    >>> majority_answer(["Each brotherhood elects two delegates", "two delegates", "two delegates"])
    'two delegates'
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rag.config import data_dir
from rag.errors import BadInput, DataLeak
from rag.prompt import ABSTAIN, Passage, format_target
from rag.text import STOPWORDS, normalize_answer, stem

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump when the example layout or selection logic changes (invalidates caches)
DEFAULT_SHIFTS = ("new_wiki", "nyt")


@dataclass(frozen=True)
class DataConfig:
    source: str = (
        "squadshifts"  # "squadshifts[:a,b]", a SQuAD JSON file or a JSONL {question, context, answers}
    )
    distractors: int = 4  # most distractor passages per example (RAFT: 4)
    min_distractors: int = 1  # fewest distractor passages per example; k is drawn uniformly in between
    p_gold: float = 0.8  # fraction of examples that include the gold paragraph (RAFT's P)
    val_fraction: float = 0.05  # fraction of articles held out for validation
    candidates: int = 12  # BM25 hits per question to draw hard negatives from
    seed: int = 0  # one seed for split, distractor choice, positions and gold-less draws
    leakage_guard: bool = True  # refuse passages that appear in SQuAD dev / Disfl-QA
    swap_rate: float = 0.05  # entity-swap near misses (target: abstain) added, per RAFT example
    disfluent_rate: float = 0.08  # Disfl-QA-style disfluent questions added, per RAFT example
    disfluent_answered: float = 0.5  # share of the disfluent ones whose final question a passage answers


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
    kind: str = "raft"  # "raft", "swap" (entity swapped: abstain) or "disfluent" (module docstring)

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


@dataclass
class Dataset:
    train: list[Example]
    val: list[Example]
    source: str  # the DataConfig.source it was built from
    hash: str  # sha256 of the cached JSONL (stable for the same source and config)
    stats: dict = field(default_factory=dict)  # counts for the manifest
    path: Path | None = None  # the cache file


# ---------------------------------------------------------------- small pure helpers
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


def _contains_answer(norm_text: str, norm_answers: list[str]) -> bool:
    """Whole-word containment of any answer; both sides already normalize_answer()-ed.

    >>> _contains_answer("denver broncos won", ["broncos"]), _contains_answer("broncosx", ["broncos"])
    (True, False)
    """
    padded = f" {norm_text} "
    return any(a and f" {a} " in padded for a in norm_answers)


# ---------------------------------------------------------------- reading sources
@dataclass
class _Question:
    id: str
    question: str
    answers: list[str]
    para: int  # index into the paragraph pool


@dataclass
class _Pool:
    paragraphs: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    questions: list[_Question] = field(default_factory=list)
    raw_hash: str = ""  # sha256 of the raw source content


def _answers_of(a) -> list[str]:
    """Accept ["x"], [{"text": "x"}], {"text": ["x"]} (HF datasets), or "x"."""
    if isinstance(a, str):
        return [a]
    if isinstance(a, dict):
        t = a.get("text", [])
        return [t] if isinstance(t, str) else list(t)
    out = []
    for x in a or []:
        out.append(x["text"] if isinstance(x, dict) else str(x))
    return out


def _articles_from_source(source: str) -> tuple[list[dict], str]:
    """SQuAD-format articles plus a content hash of what was read."""
    from assets import bigbench  # the data sets: bigbench sdist members, cached

    if source == "squadshifts" or source.startswith("squadshifts:"):
        names = source.split(":", 1)[1].split(",") if ":" in source else list(DEFAULT_SHIFTS)
        articles: list[dict] = []
        for name in names:
            arts = bigbench.squadshifts(name.strip())
            for a in arts:  # titles can repeat across sets: keep articles apart
                articles.append({**a, "title": f"{name.strip()}/{a.get('title', '')}"})
        h = hashlib.sha256(json.dumps(articles, sort_keys=True).encode()).hexdigest()
        return articles, h
    path = Path(source).expanduser()
    if not path.exists():
        raise BadInput(f"no training data at {path}: pass --data squadshifts, a SQuAD JSON or a JSONL file")
    if not path.is_file():
        raise BadInput(f"--data {path} is a folder: pass a SQuAD JSON or a JSONL file, or --data squadshifts")
    raw = path.read_bytes()
    h = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BadInput(
            f"{path}:{line} is not UTF-8 text (byte 0x{raw[e.start]:02x}): save the file as UTF-8"
        ) from e
    if path.suffix == ".jsonl":
        return _articles_from_jsonl(path, text), h
    try:
        return bigbench.load_squad_json(path), h
    except (ValueError, KeyError) as e:
        raise BadInput(f"{path} is not SQuAD JSON ({e}): use SQuAD v1.1 layout or JSONL rows") from e


def _articles_from_jsonl(path: Path, text: str) -> list[dict]:
    by_title: dict[str, dict[str, list]] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q, ctx = row["question"], row["context"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"{path}:{i}: need a JSON object with question, context, answers ({e})") from e
        if not isinstance(q, str) or not isinstance(
            ctx, str
        ):  # a number here crashed later, far from the row
            raise BadInput(f"{path}:{i}: 'question' and 'context' must be strings: fix that row")
        answers = _answers_of(row.get("answers"))
        title = str(row.get("title") or "ctx-" + hashlib.sha1(ctx.encode()).hexdigest()[:10])
        qa = {
            "id": str(row.get("id", f"{path.stem}-{i}")),
            "question": q,
            "answers": [{"text": a} for a in answers],
        }
        by_title.setdefault(title, {}).setdefault(ctx, []).append(qa)
    return [
        {"title": t, "paragraphs": [{"context": c, "qas": qas} for c, qas in paras.items()]}
        for t, paras in by_title.items()
    ]


def _pool_from_articles(articles: list[dict]) -> tuple[_Pool, dict]:
    """Flatten articles, deduplicating paragraphs (by passage hash) and questions."""
    from assets.bigbench import passage_hash

    pool = _Pool()
    seen_para: dict[str, int] = {}
    seen_q: set[tuple[str, int]] = set()
    dropped = Counter()
    for art in articles:
        title = str(art.get("title", ""))
        for para in art.get("paragraphs", []):
            ctx = para["context"].strip()
            h = passage_hash(ctx)
            if h in seen_para:
                dropped["duplicate_paragraphs"] += 1
                idx = seen_para[h]
            else:
                idx = seen_para[h] = len(pool.paragraphs)
                pool.paragraphs.append(ctx)
                pool.titles.append(title)
            for qa in para.get("qas", []):
                answers = [a for a in _answers_of(qa.get("answers")) if a.strip()]
                if not answers or qa.get("is_impossible"):
                    dropped["no_answer"] += 1
                    continue
                key = (normalize_answer(qa["question"]), idx)
                if key in seen_q:
                    dropped["duplicate_questions"] += 1
                    continue
                seen_q.add(key)
                pool.questions.append(
                    _Question(str(qa.get("id", len(pool.questions))), qa["question"].strip(), answers, idx)
                )
    return pool, dict(dropped)


def check_leakage(paragraphs: list[str]) -> None:
    """Raise DataLeak if any paragraph also appears in SQuAD v1.1 dev or Disfl-QA (normalized hash)."""
    from assets.bigbench import eval_passage_hashes, passage_hash

    held = eval_passage_hashes()
    overlap = sum(1 for p in paragraphs if passage_hash(p) in held)
    if overlap:
        raise DataLeak(
            f"{overlap} of {len(paragraphs)} training passages also appear in the evaluation sets "
            "(SQuAD v1.1 dev / Disfl-QA): remove them from the training data, or train on --data squadshifts"
        )


# ---------------------------------------------------------------- hard negatives
def _bm25_candidates(pool: _Pool, idx: list[int], questions: list[_Question], n: int) -> list[list[int]]:
    """For each question, pool indices (within `idx`) of the top-n BM25 paragraphs."""
    from rag.types import Chunk

    chunks = [
        Chunk(id=str(i), doc=pool.titles[i], text=pool.paragraphs[i], start=0, end=len(pool.paragraphs[i]))
        for i in idx
    ]
    from indexing.retrieve import memory_retriever

    retriever = memory_retriever(chunks, mode="bm25")
    bm = getattr(retriever, "bm25", None)
    if bm is None or not chunks:  # not the plain BM25 retriever: one query at a time
        return [[int(h.chunk.id) for h in retriever.search(q.question, n)] for q in questions]
    # Same index and tokenizer as retriever.search, but one batched call (17k questions: 2 min -> seconds).
    from indexing.store import bm25_tokenize

    docs, scores = bm.retrieve(
        bm25_tokenize([q.question for q in questions]), k=min(n, len(chunks)), show_progress=False
    )
    return [
        [idx[int(j)] for j, sc in zip(row, srow, strict=True) if sc > 0]
        for row, srow in zip(docs, scores, strict=True)
    ]


# ---------------------------------------------------------------- near misses: entities by rule
# The reader answers questions that are almost, but not, about a shown passage ("boiling point of
# mercury" over oxygen's paragraph) and reads disfluent questions by their first intent. Two extra
# kinds of example target that, built from the training questions only: an entity swap, and
# Disfl-QA-style disfluent questions whose final intent a passage answers (answer it) or does not
# (abstain). Entities are found by rule, not by a model: capitalized phrases, typed by how the corpus
# uses them (after "Mr." -> person, after "in" -> place), plus years and numbers with a unit.

_MONTHS = frozenset(
    "January February March April May June July August September October November December".split()
)
_WEEKDAYS = frozenset("Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())
_HONORIFICS = frozenset(
    """Mr Mr. Mrs Mrs. Ms Ms. Dr Dr. Prof. Gov. Sen. Rep. Gen. Lt. Col. Capt. Sgt. Rev. President Senator
    Governor Judge Justice Coach Professor Mayor Sir Lady Pope Prince Princess Queen King Tsar Czar
    Admiral Chancellor Rabbi Bishop Cardinal Sheikh Ayatollah Chairman Commissioner Detective""".split()
)
_CONNECT = frozenset("of for de da del di van von der den la le du al bin".split())
_PLACE_PREP = frozenset("in near across throughout outside".split())
_SPAN_WORDS = frozenset("since between from until till through after before".split())
# Names a passage often means under another name: never used as a swapped-in entity.
_ALIAS_PRONE = frozenset(
    """us usa america american americans uk britain british england english europe european
    united_states united_kingdom great_britain""".replace("_", " ").split()
)
_ABBREV = re.compile(  # a dot that does not end a sentence: U.S., J., Mr., Gov., Sept.
    r"(?:[A-Z]\.)+|(?:Mrs?|Ms|Dr|St|Jr|Sr|Gov|Sen|Rep|Gen|Lt|Col|Capt|Sgt|Prof|Mt|Ft|Co|Corp|Inc|Ltd|Bros"
    r"|Jan|Feb|Mar|Apr|Aug|Sept?|Oct|Nov|Dec|No|Vol)\."
)
_TOKEN = re.compile(r"[\w'’.&-]+")
_INITIAL = re.compile(r"[.?!:;\"“”(\[]")  # a word after one of these may be capitalized for position only
_MONEY = re.compile(r"[$£€]\s?\d[\d,]*(?:\.\d+)?(?:\s(?:million|billion|trillion))?")
_PERCENT = re.compile(r"\b\d[\d,]*(?:\.\d+)?(?:\s?%|\s(?:percent|per cent)\b)")
_NUM_UNIT = re.compile(
    r"(?<![\d,.$£€])\b\d[\d,]*(?:\.\d+)?(?:\s(?:million|billion|thousand|hundred))?\s([a-z]+)\b"
)
_DECADE = re.compile(r"\b(?:1[5-9]|20)\d0s\b")
_YEAR = re.compile(r"(?<![\d,.$£€])\b(?:1[5-9]\d\d|20[0-3]\d)\b(?![\d,%]|\.\d)")
_DISFLUENT = (  # abandoned part, an interruption, the question meant
    "{a}, no, {b}",
    "{a} no {b}",
    "{a}, no wait, {b}",
    "{a}, sorry, I mean {b}",
    "{a} sorry I mean {b}",
    "{a}, um, rather {b}",
    "{a} uh I mean {b}",
    "{a}, no, actually {b}",
    "{a} or rather {b}",
    "{a}, er, make that {b}",
    "{a} no no {b}",
    "{a}, I meant {b}",
    "{a}, scratch that, {b}",
    "{a} wait no {b}",
    "{a} um no {b}",
)
_RESTARTS = (  # only before a whole new question
    "{a}, no, what I want to know is {b}",
    "{a}, never mind that, {b}",
    "{a}, let me rephrase, {b}",
)


def fold(text: str) -> str:
    """Words for matching names across spellings: no accents, no dots or commas inside, lowercase.

    >>> fold("Beyoncé's U.S. tour drew 29,000")
    'beyonce s us tour drew 29000'
    """
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c))
    t = re.sub(r"(?<=\w)\.(?=\w)|(?<=\d),(?=\d)", "", t)
    return " ".join(re.findall(r"[a-z0-9]+", t.lower()))


def disfluent_question(first: str, final: str, template: str, cut: int = 0) -> str:
    """An abandoned question (its first `cut` words, or all of it) run into the question meant.

    >>> disfluent_question("When did Beyonce release Lemonade?", "Who produced it?", "{a}, no, {b}", cut=3)
    'When did Beyonce, no, who produced it?'
    >>> disfluent_question("Who won?", "In which year was it?", "{a} or rather {b}")
    'Who won or rather in which year was it?'
    """
    a = first.strip().rstrip("?").strip()
    if cut:
        a = " ".join(a.split()[:cut])
    head = final.strip().split(" ", 1)[0]
    b = final.strip()
    if head.lower() in STOPWORDS and not head.isupper():  # "Who ..." -> "who ...", "Beyonce ..." stays
        b = head.lower() + b[len(head) :]
    return template.format(a=a.rstrip(",;: "), b=b)


def replace_span(text: str, start: int, end: int, new: str) -> str:
    """text[start:end] replaced by `new`, with a/an before it agreeing.

    >>> replace_span("What might an Indian surname denote?", 14, 20, "Jewish")
    'What might a Jewish surname denote?'
    """
    head = text[:start]
    m = re.search(r"\b([Aa]n?) $", head)
    if m:
        vowel = new[:1].lower() in "aeiou" and not new.lower().startswith(("eu", "uni", "one"))
        article = ("an" if vowel else "a") if m.group(1).islower() else ("An" if vowel else "A")
        head = head[: m.start(1)] + article + " "
    return head + new + text[end:]


def corrected_question(question: str, start: int, end: int, first: str, template: str) -> str:
    """`question` with `first` said where question[start:end] stands, then corrected to it.

    >>> corrected_question("When did Beyonce release Lemonade?", 9, 16, "Rihanna", "{a}, no, {b}")
    'When did Rihanna, no, Beyonce release Lemonade?'
    """
    return template.format(a=question[:start] + first, b=question[start:end]) + question[end:]


@dataclass(frozen=True)
class _Mention:
    text: str
    start: int
    end: int
    kind: str  # person speaker place adjective month weekday acronym the-name | year decade money percent num:<u>
    words: int = 1

    @property
    def key(self) -> str:
        """What a replacement must match: the kind, and for names the word count (1, 2, 3+)."""
        named = self.kind in ("person", "the-name")
        return f"{self.kind}{min(self.words, 3)}" if named else self.kind


@dataclass
class _Span:  # a run of capitalized words, before typing
    text: str
    start: int
    end: int
    words: list[str]
    honorific: bool
    prev: str  # the word just before (lowercased), "" after punctuation
    next: str  # the word just after, "" before punctuation


@dataclass
class _Lexicon:
    lower: set[str] = field(default_factory=set)  # words the corpus writes in lower case
    common: set[str] = field(default_factory=set)  # ... at least twice ("central", "class", "china")
    persons: set[str] = field(
        default_factory=set
    )  # folded names seen after "Mr."/"President" or before "said"
    surnames: set[str] = field(default_factory=set)  # last words of those
    first_names: set[str] = field(default_factory=set)  # first words of many-word names ending in a surname
    places: set[str] = field(default_factory=set)  # folded names after "in" (twice, >= 35% of mentions)
    title_words: set[str] = field(default_factory=set)  # one-word names as written ("Washington")
    speakers: set[str] = field(default_factory=set)  # one-word names before "said" ("Beyonce", "Google")
    the_names: set[str] = field(default_factory=set)  # folded names written after "the" in >= 50% ("the FBI")
    adjectives: set[str] = field(default_factory=set)  # "Scottish", "Chinese": before a lowercase noun
    units: set[str] = field(default_factory=set)  # words that follow many different numbers ("points")


_SPEECH = frozenset(
    "said says told wrote added explained argued recalled noted asked insisted replied".split()
)


def _is_cap(w: str) -> bool:
    """A word that can be part of a name: capitalized, not a capitalized function word, not "PResident"."""
    if len(w) < 2 or not w[0].isupper() or any(c.isdigit() for c in w):
        return False
    if w.isupper():
        return True
    if len(w) > 2 and w[1].isupper() and not w.startswith(("Mc", "O'", "O’")):
        return False
    return w in _MONTHS or w.lower() not in STOPWORDS


def _name_spans(text: str, lower: set[str]) -> list[_Span]:
    """Runs of capitalized words ("Fund for Public Schools"), without a leading sentence-start word.

    A possessive or punctuation ends a run; "of", "de", ... may join two capitalized words; a word that
    only starts a sentence ("Tin fluoride ...") is dropped when the corpus also writes it in lower case.
    """
    toks: list[tuple[str, int, int]] = []
    for m in _TOKEN.finditer(text):
        w, s = m.group(), m.start()
        lead = len(w) - len(w.lstrip("'’.-&"))
        w, s = w[lead:], s + lead
        core = re.sub(r"(?:['’]s?|-+)$", "", w)
        if core.endswith(".") and not _ABBREV.fullmatch(core):
            core = core.rstrip(".")
        if core:
            toks.append((core, s, s + len(core)))
    n = len(toks)

    def gap(i: int) -> str:  # text between word i-1 and word i
        return text[toks[i - 1][2] : toks[i][1]] if i else text[: toks[0][1]]

    def brk(i: int) -> bool:
        return bool(gap(i).strip())

    def initial(i: int) -> bool:
        return i == 0 or bool(_INITIAL.search(gap(i))) or toks[i - 1][0].endswith(".")

    spans: list[_Span] = []
    i = 0
    while i < n:
        if not _is_cap(toks[i][0]):
            i += 1
            continue
        j = i
        while j + 1 < n and not brk(j + 1):
            if _is_cap(toks[j + 1][0]):
                j += 1
                continue
            k = j + 1
            while k < n and k - j <= 2 and toks[k][0] in (_CONNECT | {"the"}) and not brk(k):
                k += 1
            if j + 1 < k < n and toks[j + 1][0] != "the" and not brk(k) and _is_cap(toks[k][0]):
                j = k
                continue
            break
        a = i
        while a <= j and (toks[a][0] in _CONNECT or (a == i and initial(a) and toks[a][0].lower() in lower)):
            a += 1
        honorific = False
        if a < j and toks[a][0] in _HONORIFICS and _is_cap(toks[a + 1][0]):
            honorific, a = True, a + 1
        if a <= j:
            words = [t[0] for t in toks[a : j + 1]]
            prev = toks[a - 1][0].lower() if a and not brk(a) else ""
            nxt = toks[j + 1][0] if j + 1 < n and not brk(j + 1) else ""
            spans.append(
                _Span(text[toks[a][1] : toks[j][2]], toks[a][1], toks[j][2], words, honorific, prev, nxt)
            )
        i = j + 1
    return spans


def _lexicon(texts: list[str]) -> _Lexicon:
    """Corpus statistics that type a capitalized phrase without a model."""
    low = Counter(re.findall(r"(?<![\w'’-])[a-z][a-z'’-]*", " ".join(texts)))
    lex = _Lexicon(lower=set(low), common={w for w, c in low.items() if c >= 2})
    spans = [sp for t in texts for sp in _name_spans(t, lex.lower)]
    seen, after_in, after_the, speech = Counter(), Counter(), Counter(), Counter()
    single, before_lower = Counter(), Counter()
    for sp in spans:
        f = fold(sp.text)
        seen[f] += 1
        after_in[f] += sp.prev in _PLACE_PREP
        after_the[f] += sp.prev == "the"
        speech[f] += sp.next in _SPEECH
        if len(sp.words) == 1:
            single[sp.words[0]] += 1
            before_lower[sp.words[0]] += bool(sp.next) and sp.next.islower() and sp.next not in STOPWORDS
    lex.places = {f for f, c in seen.items() if after_in[f] >= 2 and after_in[f] >= 0.35 * c}
    lex.the_names = {f for f, c in seen.items() if after_the[f] >= 2 and after_the[f] >= 0.5 * c}
    for sp in spans:  # "Mr. Neale", "Katie Goldstein said"; not "the Bank said", "Germany said"
        f = fold(sp.text)
        many = len(sp.words) > 1 and not set(sp.words) & _CONNECT
        if sp.honorific or (speech[f] and many and not after_in[f] and not after_the[f]):
            lex.persons.add(f)
            lex.surnames.add(sp.words[-1])
    lex.surnames -= {w for w in lex.surnames if after_in[fold(w)] >= 2}  # "in Germany" (and "Mr. Germany"?)
    for sp in spans:
        if 1 < len(sp.words) <= 3 and sp.words[-1] in lex.surnames and not set(sp.words) & _CONNECT:
            lex.first_names.add(sp.words[0])
    # A first name is a plain capitalized word the corpus never writes in lower case ("Great Purge").
    things = {f.split()[0] for f in lex.places | lex.the_names}  # "Academy Awards", "Arlington County"
    lex.first_names = {
        w
        for w in lex.first_names
        if w.isalpha() and w.istitle() and w.lower() not in lex.common and w.lower() not in things
    }
    lex.title_words = set(single)
    lex.speakers = {  # one-word names that speak: "Beyonce said", "Google said" (not "Democrats said")
        f
        for f, c in speech.items()
        if c >= 2 and " " not in f and not after_in[f] and not after_the[f] and f not in lex.common
    }
    lex.adjectives = {
        w
        for w, c in single.items()
        if c >= 3 and before_lower[w] >= 0.6 * c and re.search(r"(an|ese|ish|ic|i|ch)$", w)
    } - lex.surnames
    lex.first_names -= lex.adjectives
    numbers: dict[str, set[str]] = {}
    for t in texts:
        for m in _NUM_UNIT.finditer(t):
            numbers.setdefault(m.group(1), set()).add(m.group(0).split()[0])
    # A unit follows many different numbers, and a number is what usually comes before it.
    lex.units = {
        w
        for w, nums in numbers.items()
        if len(nums) >= max(4, 0.25 * low[w]) and w not in STOPWORDS and w.title() not in _MONTHS
    }
    lex.units -= {"percent", "million", "billion", "thousand", "hundred", "per"}
    return lex


def _name_kind(sp: _Span, lex: _Lexicon) -> str | None:
    """person, speaker, place, month, weekday, acronym, adjective, the-name; None: not worth swapping.

    A name with no evidence of its kind ("Apple", "Cobb", "Citi Field") is skipped: swapped for
    another such name it reads as nonsense ("When did Internet release the iPhone?"), and so is a
    capitalized common word ("Central", "Class").
    """
    w, n, f = sp.words, len(sp.words), fold(sp.text)
    joined = set(w) & _CONNECT
    if sp.honorific or f in lex.persons:
        return "person"
    if n == 1 and w[0] in _MONTHS:
        return "month"
    if n == 1 and w[0] in _WEEKDAYS:
        return "weekday"
    if n == 1 and (w[0].lower() in lex.common or f in lex.common):  # "Central", "O.K."
        return None
    if n == 1 and w[0].replace(".", "").replace("&", "").isupper():  # not "BP" -> "BC", not "WASHINGTON"
        letters = w[0].replace(".", "")
        return "acronym" if 3 <= len(letters) <= 6 and letters.title() not in lex.title_words else None
    if f in lex.places:
        return "place"
    if n <= 3 and not joined and (w[-1] in lex.surnames and (n == 1 or w[0] in lex.first_names)):
        return "person"
    if 1 < n <= 3 and not joined and w[0] in lex.first_names:
        return "person"
    if f in lex.speakers:
        return "speaker"
    if n == 1 and w[0] in lex.adjectives:
        return "adjective"
    if f in lex.the_names:  # not from one "the California coast": that "the" belongs to "coast"
        return "the-name"
    return None


def _mentions(text: str, lex: _Lexicon) -> list[_Mention]:
    """Typed entities in `text`: names, then numbers where no name is."""
    out: list[_Mention] = []
    for sp in _name_spans(text, lex.lower):
        kind = _name_kind(sp, lex)
        if kind:
            out.append(_Mention(sp.text, sp.start, sp.end, kind, len(sp.words)))
    taken = [(m.start, m.end) for m in out]

    def add(m: re.Match, kind: str) -> None:
        s, e = m.span()
        if not any(s < b and a < e for a, b in taken):
            taken.append((s, e))
            out.append(_Mention(m.group(0), s, e, kind))

    for m in _MONEY.finditer(text):
        add(m, "money")
    for m in _PERCENT.finditer(text):
        add(m, "percent")
    for m in _NUM_UNIT.finditer(text):
        if m.group(1) in lex.units:
            add(m, "num:" + stem(m.group(1)))
    for m in _DECADE.finditer(text):
        add(m, "decade")
    for m in _YEAR.finditer(text):
        before = text[max(0, m.start() - 9) : m.start()].lower().split()
        around = text[max(0, m.start() - 12) : m.end() + 12]
        if (before and before[-1] in _SPAN_WORDS) or len(re.findall(r"\d{4}", around)) > 1:
            continue  # "between 1917 and 1939", "since 2006": another year would still overlap
        add(m, "year")
    return sorted(out, key=lambda m: m.start)


class _NearMisses:
    """Builds the swap and disfluent examples of one split (see the section comment above).

    The passages are drawn as for RAFT examples (gold + k hard negatives, shuffled), so a near miss
    looks like any other example; only the question, and so the target, differ.
    """

    def __init__(self, pool, lex, norm_paras, folded, idx, qs, cands, cfg, rng, stats, split):
        self.pool, self.lex, self.norm_paras, self.folded = pool, lex, norm_paras, folded
        self.idx, self.qs, self.cands, self.cfg, self.rng = idx, qs, cands, cfg, rng
        self.stats, self.split = stats, split
        self.norm_answers = [[normalize_answer(a) for a in q.answers] for q in qs]
        self.by_para: dict[int, list[int]] = {}
        self.by_article: dict[str, list[int]] = {}
        for i, q in enumerate(qs):
            self.by_para.setdefault(q.para, []).append(i)
            self.by_article.setdefault(pool.titles[q.para], []).append(i)
        # Replacement entities by kind: from the same article, else from the same source (new_wiki, nyt).
        self.article_inv: dict[str, dict[str, list[str]]] = {}
        self.source_inv: dict[str, dict[str, list[str]]] = {}
        for j in idx:
            title = pool.titles[j]
            ms = _mentions(pool.paragraphs[j], lex)
            for inv in (
                self.article_inv.setdefault(title, {}),
                self.source_inv.setdefault(_source_of(title), {}),
            ):
                for m in ms:
                    lst = inv.setdefault(m.key, [])
                    if m.text not in lst:
                        lst.append(m.text)

    # -------------------------------------------------------- shared steps
    def passages(self, i: int) -> list[int]:
        """Pool indices shown with qs[i]: its gold paragraph and k hard negatives, shuffled."""
        q = self.qs[i]
        k = self.rng.randint(self.cfg.min_distractors, self.cfg.distractors)
        negs = _negatives(
            self.cands[i], {q.para}, self.norm_answers[i], k, self.idx, self.norm_paras, self.rng, self.stats
        )
        order = [*negs, q.para]
        self.rng.shuffle(order)
        return order

    def swap(self, question: str, gold: int, shown: list[int]) -> tuple[_Mention, str] | None:
        """(an entity of `question` that the gold paragraph mentions, a same-kind entity no shown passage has)."""
        in_gold = f" {self.folded[gold]} "
        ms = [m for m in _mentions(question, self.lex) if f" {fold(m.text)} " in in_gold]
        if not ms:
            self.stats["swap_no_entity"] += 1
            return None
        self.rng.shuffle(ms)
        ms.sort(key=lambda m: m.kind == "the-name")  # the surer kinds read as better near misses
        shown_text = " | ".join(self.folded[j] for j in shown)
        shown_words = set(shown_text.split())
        prefixes = {w[:5] for w in shown_words if len(w) >= 5}
        q_fold = f" {fold(question)} "
        title = self.pool.titles[gold]
        for m in ms:
            near = list(self.article_inv.get(title, {}).get(m.key, []))
            self.rng.shuffle(near)
            far = self.source_inv.get(_source_of(title), {}).get(m.key, [])
            if m.kind in ("year", "decade"):  # a near year reads as the near miss: 2009 -> 2008, not 1624
                y = int(m.text[:4])
                far = list(far)
                self.rng.shuffle(far)
                far.sort(key=lambda r: abs(int(r[:4]) - y) // 5)
                near = []
            else:
                far = self.rng.sample(far, min(len(far), 40))
            e_words = fold(m.text).split()
            for r in near + far[:40]:
                r_fold = fold(r)
                r_words = r_fold.split()
                if (
                    not r_words
                    or r_fold == " ".join(e_words)
                    or r_words[-1] == e_words[-1]  # "Michelle Obama" for "Barack Obama": same person?
                    or r_fold in _ALIAS_PRONE
                    or f" {r_fold} " in q_fold
                    or f" {r_fold} " in f" {shown_text} "
                ):
                    continue
                if any(
                    w not in e_words
                    and (w.isdigit() or w not in self.lex.lower)
                    and (w in shown_words or (len(w) >= 5 and not w.isdigit() and w[:5] in prefixes))
                    for w in r_words
                ):
                    continue  # a shown passage names it, or a near form of it ("Scottish" / "Scotland")
                self.stats[f"swap_entity_{m.kind.split(':')[0]}"] += 1
                return m, r
        self.stats["swap_no_replacement"] += 1
        return None

    def example(self, id_: str, question: str, order: list[int], gold: int | None, q, kind: str) -> Example:
        """q: the question the passages were drawn for; its answer is the target when `gold` is set."""
        pool = self.pool
        return Example(
            id=id_,
            article=pool.titles[q.para],
            question=question,
            passages=[Passage(source=_source_name(pool.titles[j]), text=pool.paragraphs[j]) for j in order],
            gold=order.index(gold) + 1 if gold is not None else None,
            answers=list(q.answers) if gold is not None else [],
            answer=majority_answer(q.answers) if gold is not None else None,
            split=self.split,
            kind=kind,
        )

    def partner(self, i: int, same_para: bool, shown: list[int] | None = None) -> int | None:
        """Another question: of the same paragraph with other answers, or of another paragraph (same
        article first, then the same source) whose answers no shown passage holds."""
        q, titles = self.qs[i], self.pool.titles
        if same_para:
            cands = [c for c in self.by_para[q.para] if c != i]
            self.rng.shuffle(cands)
        else:
            cands = [c for c in self.by_article[titles[q.para]] if self.qs[c].para != q.para]
            self.rng.shuffle(cands)
            src = _source_of(titles[q.para])
            far = self.rng.sample(range(len(self.qs)), min(len(self.qs), 30))
            cands += [c for c in far if _source_of(titles[self.qs[c].para]) == src]
        mine = self.norm_answers[i]
        for c in cands:
            theirs = self.norm_answers[c]
            if normalize_answer(self.qs[c].question) == normalize_answer(q.question):
                continue
            if any(_contains_answer(a, [b]) or _contains_answer(b, [a]) for a in mine for b in theirs):
                continue  # the two questions share an answer: the final intent would not matter
            if shown is not None and (
                self.qs[c].para in shown or any(_contains_answer(self.norm_paras[j], theirs) for j in shown)
            ):
                continue  # a shown passage answers the final question after all
            return c
        return None

    # -------------------------------------------------------- the three kinds
    def make_swap(self, i: int) -> Example | None:
        q = self.qs[i]
        order = self.passages(i)
        found = self.swap(q.question, q.para, order)
        if found is None:
            return None
        m, r = found
        question = replace_span(q.question, m.start, m.end, r)
        return self.example(f"{q.id}~swap", question, order, None, q, "swap")

    def style(self) -> tuple[str, str]:
        x = self.rng.random()
        kind = "correction" if x < 0.35 else "restart" if x < 0.7 else "full"
        templates = _DISFLUENT + (_RESTARTS if kind == "full" else ())
        return kind, self.rng.choice(templates)

    def cut(self, question: str, style: str) -> int:
        n = len(question.split())
        return self.rng.randint(2, n - 1) if style == "restart" and n >= 4 else 0

    def make_disfluent(self, i: int, answered: bool) -> Example | None:
        """answered: the final question is qs[i] and its gold passage is shown; else qs[i] is abandoned."""
        q = self.qs[i]
        style, template = self.style()
        if style == "correction":
            order = self.passages(i)
            found = self.swap(q.question, q.para, order)
            if found is not None:
                m, r = found
                if answered:
                    question = corrected_question(q.question, m.start, m.end, r, template)
                else:
                    swapped = q.question[: m.start] + r + q.question[m.end :]
                    question = corrected_question(swapped, m.start, m.start + len(r), m.text, template)
                return self._disfluent(f"{q.id}~fix", question, order, q, answered, style)
            style, template = "restart", self.rng.choice(_DISFLUENT)
        if answered:
            j = self.partner(i, same_para=True)
            if j is None:
                self.stats["disfluent_no_partner"] += 1
                return None
            order = self.passages(i)
            first = self.qs[j]
            question = disfluent_question(
                first.question, q.question, template, self.cut(first.question, style)
            )
            return self._disfluent(f"{first.id}~{q.id}", question, order, q, answered, style)
        order = self.passages(i)
        j = self.partner(i, same_para=False, shown=order)
        if j is None:
            self.stats["disfluent_no_partner"] += 1
            return None
        final = self.qs[j]
        question = disfluent_question(q.question, final.question, template, self.cut(q.question, style))
        return self._disfluent(f"{q.id}~{final.id}", question, order, q, answered, style)

    def _disfluent(self, id_, question, order, q, answered, style) -> Example:
        self.stats[f"{self.split}_disfluent_{style}"] += 1
        return self.example(id_, question, order, q.para if answered else None, q, "disfluent")

    def build(self, n_base: int) -> list[Example]:
        """round(rate x n_base) examples of each kind, from questions drawn in a seeded order."""
        n_dis = round(self.cfg.disfluent_rate * n_base)
        n_ans = round(n_dis * self.cfg.disfluent_answered)
        plan = (
            ("swap", round(self.cfg.swap_rate * n_base), self.make_swap),
            ("disfluent_answer", n_ans, lambda i: self.make_disfluent(i, answered=True)),
            ("disfluent_abstain", n_dis - n_ans, lambda i: self.make_disfluent(i, answered=False)),
        )
        out: list[Example] = []
        for name, want, make in plan:
            order = list(range(len(self.qs)))
            self.rng.shuffle(order)
            made = 0
            for i in order:
                if made >= want:
                    break
                ex = make(i)
                if ex is not None:
                    out.append(ex)
                    made += 1
            self.stats[f"{self.split}_{name}"] = made
            if made < want:
                self.stats[f"{self.split}_{name}_short"] = want - made
        return out


def _source_of(title: str) -> str:
    """The data set an article came from: "nyt/https://..." -> "nyt"; "" for a single-file source."""
    return title.split("/", 1)[0] if "/" in title else ""


# ---------------------------------------------------------------- building
def _split_articles(titles: list[str], frac: float, rng: random.Random) -> set[str]:
    uniq = sorted(set(titles))
    rng.shuffle(uniq)
    n_val = max(1, round(len(uniq) * frac)) if len(uniq) > 1 and frac > 0 else 0
    return set(uniq[:n_val])


def _source_name(title: str) -> str:
    """A passage's shown name: the article title as a file name ("nyt/Foo Bar" -> "Foo_Bar.txt")."""
    base = title.rsplit("/", 1)[-1].strip() or "document"
    return re.sub(r"[^\w.-]+", "_", base)[:60] + ".txt"


def _negatives(
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
    pool_neg = [j for j in cand if j not in exclude and not _contains_answer(norm_paras[j], norm_answers)]
    rng.shuffle(pool_neg)
    negs = pool_neg[:need]
    if len(negs) < need:  # too few hard negatives: fill with random paragraphs of this split
        others = [j for j in idx if j not in exclude and j not in negs]
        rng.shuffle(others)
        for j in others:
            if len(negs) >= need:
                break
            if not _contains_answer(norm_paras[j], norm_answers):
                negs.append(j)
                stats["random_fill"] += 1
    return negs


def _build(pool: _Pool, cfg: DataConfig) -> tuple[list[Example], list[Example], dict]:
    rng = random.Random(cfg.seed)
    norm_paras = [normalize_answer(p) for p in pool.paragraphs]  # once, not once per candidate
    val_titles = _split_articles(pool.titles, cfg.val_fraction, rng)
    stats: Counter = Counter()
    out: dict[str, list[Example]] = {"train": [], "val": []}
    near_miss = cfg.swap_rate > 0 or cfg.disfluent_rate > 0
    if near_miss:  # its own generator, so the RAFT examples do not depend on the near-miss settings
        nm_rng = random.Random(f"near-miss-{cfg.seed}")
        lex = _lexicon(pool.paragraphs + [q.question for q in pool.questions])
        folded = [fold(p) for p in pool.paragraphs]
    for split in ("train", "val"):
        idx = [i for i, t in enumerate(pool.titles) if (t in val_titles) == (split == "val")]
        qs = [q for q in pool.questions if (pool.titles[q.para] in val_titles) == (split == "val")]
        if not qs:
            continue
        cands = _bm25_candidates(pool, idx, qs, cfg.candidates + 1)
        for q, cand in zip(qs, cands, strict=True):
            norm_answers = [normalize_answer(a) for a in q.answers]
            k = rng.randint(cfg.min_distractors, cfg.distractors)
            with_gold = rng.random() < cfg.p_gold
            need = k if with_gold else k + 1  # same passage count either way: length must not give it away
            negs = _negatives(cand, {q.para}, norm_answers, need, idx, norm_paras, rng, stats)
            if len(negs) < need:  # a tiny pool: fewer passages rather than no example
                stats["short_of_negatives"] += 1
                if not negs and not with_gold:
                    continue
            order = list(negs) + ([q.para] if with_gold else [])
            rng.shuffle(order)
            passages = [Passage(source=_source_name(pool.titles[j]), text=pool.paragraphs[j]) for j in order]
            gold = order.index(q.para) + 1 if with_gold else None
            out[split].append(
                Example(
                    id=q.id,
                    article=pool.titles[q.para],
                    question=q.question,
                    passages=passages,
                    gold=gold,
                    answers=q.answers,
                    answer=majority_answer(q.answers) if with_gold else None,
                    split=split,
                )
            )
        if near_miss:
            maker = _NearMisses(pool, lex, norm_paras, folded, idx, qs, cands, cfg, nm_rng, stats, split)
            out[split] += maker.build(n_base=len(out[split]))
    for split, exs in out.items():
        stats[f"{split}_examples"] = len(exs)
        stats[f"{split}_abstain"] = sum(e.gold is None for e in exs)
        stats[f"{split}_articles"] = len({e.article for e in exs})
    return out["train"], out["val"], dict(stats)


def _cache_key(cfg: DataConfig, raw_hash: str) -> str:
    payload = json.dumps({"cfg": asdict(cfg), "raw": raw_hash, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_jsonl(path: Path, examples: list[Example]) -> str:
    lines = [json.dumps(e.to_json(), sort_keys=True, ensure_ascii=False) for e in examples]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return hashlib.sha256(text.encode()).hexdigest()


def load_examples(path: Path) -> list[Example]:
    """Read examples written by build_dataset (a cache JSONL)."""
    return [
        Example.from_json(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()
    ]


def build_dataset(cfg: DataConfig = DataConfig(), cache_dir: Path | None = None) -> Dataset:
    """Read the source, guard against leakage, build train/val examples and cache them as JSONL.

    The cache file name carries a hash of the config and of the raw source, so a changed source or
    setting rebuilds; Dataset.hash is the sha256 of the cached JSONL itself.
    """
    if not 0.0 <= cfg.p_gold <= 1.0:
        raise BadInput(f"p_gold must be within [0, 1], got {cfg.p_gold}")
    for name in ("swap_rate", "disfluent_rate", "disfluent_answered"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= (1.0 if name == "disfluent_answered" else 2.0):
            raise BadInput(f"{name} must be a fraction (0 = off), got {value}")
    if not 0 <= cfg.min_distractors <= cfg.distractors:
        raise BadInput(
            f"need 0 <= min_distractors <= distractors, got {cfg.min_distractors}..{cfg.distractors}"
        )
    articles, raw_hash = _articles_from_source(cfg.source)
    cache_dir = Path(cache_dir) if cache_dir else data_dir() / "finetune"
    path = cache_dir / f"examples-{_cache_key(cfg, raw_hash)}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        text = path.read_text()
        if hashlib.sha256(text.encode()).hexdigest() == meta["hash"]:
            exs = load_examples(path)
            log.info("loaded %d cached examples from %s", len(exs), path)
            return Dataset(
                train=[e for e in exs if e.split == "train"],
                val=[e for e in exs if e.split == "val"],
                source=cfg.source,
                hash=meta["hash"],
                stats=meta["stats"],
                path=path,
            )
        log.warning("cache %s does not match its hash: rebuilding", path)
    pool, dropped = _pool_from_articles(articles)
    if not pool.questions:
        raise BadInput(f"{cfg.source} holds no answerable questions: check the file layout")
    if cfg.leakage_guard:
        check_leakage(pool.paragraphs)
    train, val, stats = _build(pool, cfg)
    stats.update(dropped)
    stats.update(paragraphs=len(pool.paragraphs), questions=len(pool.questions), source_sha256=raw_hash)
    digest = _write_jsonl(path, train + val)
    meta_path.write_text(json.dumps({"hash": digest, "stats": stats, "config": asdict(cfg)}, indent=1))
    log.info("built %d train / %d val examples into %s", len(train), len(val), path)
    return Dataset(train=train, val=val, source=cfg.source, hash=digest, stats=stats, path=path)
