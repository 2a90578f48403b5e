"""Near-miss training examples, built by rule: entity swaps, Disfl-QA-style disfluent questions and
SQuAD 2.0-style twists.

The reader should decline a question that is almost, but not, about a shown passage ("boiling point of
mercury" over oxygen's paragraph), and read a disfluent question by its final intent rather than decline
it. finetune.data adds two kinds of example for that, per split, from the training questions only; the
passages are drawn as for a RAFT example (the gold paragraph + k hard negatives, shuffled), so only the
question, and so the target, differ.

- swap: a named entity of the question that its gold paragraph also names is replaced by one of the
  same kind (and, for names, word count) that no shown passage names, nor a near form of it (a shared
  5-letter prefix: "Scottish" / "Scotland"); the target is the abstention sentence. "What does Mr.
  Jeffries consider stop-and-frisk?" -> "What does Mr. Bloomberg consider stop-and-frisk?" over the
  Jeffries paragraph. The replacement comes from the same article, else the same source (new_wiki,
  nyt); a year from the source, the nearest first ("in 2009?" -> "in 2006?").
- disfluent: one question run into another with an interruption (18 templates: "{a}, no wait, {b}").
  A restart abandons the first question after a few words, a full one says it whole, a correction
  names a swapped entity and corrects it ("When did Rihanna, no, Beyonce release Lemonade?").
  Answered: the final question is of the shown gold paragraph; the target is its answer with the
  citation. Abstain: the final question is from another paragraph of the article (or source) whose
  answers no shown passage holds, while the abandoned question's paragraph is shown.

- twist (off unless DataConfig.twist_rate > 0): the question turned into one its shown gold paragraph
  no longer answers, the way SQuAD 2.0's writers (and so Disfl-QA's unanswerable questions) did it: an
  antonym ("the largest city" -> "the smallest city", "after the war" -> "before the war"; the new word
  in no shown passage) or a negation ("What is acknowledged ...?" -> "What is not acknowledged ...?",
  only over a paragraph with no negation word of its own). Half of them are then said disfluently, as
  Disfl-QA does: "What is the, no wait, what is not acknowledged ...?". The target is the abstention.

Entities are found without a model: runs of capitalized words, typed by how the corpus uses them
(after "Mr." or before "said" -> person, after "in" -> place, after "the" -> the-name, "Scottish"
before a lowercase noun -> adjective), months, weekdays, 3-6 letter acronyms, money, percentages,
numbers with a unit, decades and years. A name with no evidence of its kind, a capitalized common
word, and a year in a range ("between 1917 and 1939") are not swapped: the swap would read as nonsense
or still overlap.

Counts: round(rate x the split's RAFT examples) of each kind (DataConfig.swap_rate, disfluent_rate,
twist_rate; a disfluent_answered share of the disfluent ones answered), from questions drawn in a seeded order, with
a generator of their own so the RAFT examples do not depend on these settings. Dataset.stats counts
each kind (train_swap, train_disfluent_answer/_abstain, train_disfluent_restart/_full/_correction,
swap_entity_<kind>, train_twist, twist_antonym/_negation/_disfluent) and the shortfalls (train_swap_short, swap_no_replacement, ...).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from finetune.examples import Example, contains_answer, majority_answer, negatives, source_name
from rag.prompt import Passage
from rag.text import STOPWORDS, normalize_answer, stem

# ---------------------------------------------------------------- entities and disfluencies by rule
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


# ---------------------------------------------------------------- SQuAD 2.0-style twists by rule
# Word pairs whose swap turns a question about a passage into one it does not answer (both directions).
_ANTONYM_PAIRS = """first/last largest/smallest biggest/smallest most/least highest/lowest higher/lower
    more/less greater/lesser increase/decrease increased/decreased increases/decreases before/after
    earliest/latest earlier/later oldest/youngest older/younger longest/shortest longer/shorter best/worst
    better/worse north/south east/west northern/southern eastern/western northeast/southwest
    maximum/minimum won/lost win/lose wins/loses rise/fall rose/fell positive/negative inside/outside
    above/below upper/lower major/minor top/bottom strongest/weakest stronger/weaker heaviest/lightest
    widest/narrowest deepest/shallowest ancient/modern public/private male/female allowed/prohibited
    accepted/rejected supported/opposed success/failure import/export imported/exported imports/exports
    buy/sell bought/sold beginning/end start/end started/ended entered/left richest/poorest
    hottest/coldest warmest/coldest fastest/slowest faster/slower cheapest/most-expensive"""
_ANTONYMS: dict[str, str] = {}
for _pair in _ANTONYM_PAIRS.split():
    _a, _b = _pair.replace("-", " ").split("/")
    _ANTONYMS.setdefault(_a, _b)
    _ANTONYMS.setdefault(_b, _a)
# A paragraph with one of these may answer the negated question: no negation twist over it.
_NEGATIONS = frozenset("not no never neither nor none nobody nothing without cannot unable".split())
_BE = frozenset("is are was were".split())
_MODALS = frozenset("can could will would should must may might".split())
_NOT_AFTER = frozenset(
    "not never the a an this that these those he she it they we you i his her its their there".split()
)
_PARTICIPLES = frozenset(
    """known made built given taken born found held seen written called named used done brought led won
    lost sold bought paid sent kept left told meant shown grown drawn chosen spoken broken driven worn
    begun run put set cut read""".split()
)


def _is_participle(word: str) -> bool:
    w = word.lower()
    return w in _PARTICIPLES or (len(w) > 4 and w.endswith("ed") and w.isalpha())


def antonym_twists(question: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) for each word of `question` with an antonym, the case kept. A word whose
    antonym the question already holds is left alone: "increase or decrease" would become "decrease or
    decrease", a question the passage still answers (twist rules v2; segment 4 was trained on v1).

    >>> q = "Which is the largest city after the war?"
    >>> [(q[a:b], r) for a, b, r in antonym_twists(q)]
    [('largest', 'smallest'), ('after', 'before')]
    >>> antonym_twists("Did prices increase or decrease?")
    []
    """
    out = []
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", question)}
    for m in re.finditer(r"[A-Za-z]+", question):
        w = m.group(0)
        r = _ANTONYMS.get(w.lower())
        if r is None or (w[0].isupper() and m.start() > 0):  # "Last Supper", "North Carolina": names
            continue
        if set(r.split()) <= words:  # "most expensive" counts when both words are there
            continue
        out.append((m.start(), m.end(), r[0].upper() + r[1:] if w[0].isupper() else r))
    return out


def negated_question(question: str) -> str | None:
    """`question` with "not" where English puts it, or None when no safe place is found: before the
    participle of an early "is/was/are/were" (passive), right after an early modal, or after an early
    "is/was" before "the/a" ("Who was not the first ...?"). "do/does/did" questions are left alone (the
    verb's place needs a parser).

    >>> negated_question("What is acknowledged between member states?")
    'What is not acknowledged between member states?'
    >>> negated_question("When was the treaty signed?")
    'When was the treaty not signed?'
    >>> negated_question("Who will lead the team?"), negated_question("What did Tesla invent?")
    ('Who will not lead the team?', None)
    """
    words = question.split(" ")
    low = [w.lower().strip("?,.;:") for w in words]
    if any(w in _NEGATIONS or w.endswith("n't") for w in low):
        return None
    for i, w in enumerate(low[:4]):
        if i == 0:
            continue
        if w in _BE:
            for j in range(i + 1, min(i + 6, len(words))):
                if _is_participle(low[j]):
                    return " ".join(words[:j] + ["not"] + words[j:])
            if i + 1 < len(words) and low[i + 1] in ("the", "a", "an"):
                return " ".join(words[: i + 1] + ["not"] + words[i + 1 :])
            return None
        if w in _MODALS:
            if i + 1 < len(words) and low[i + 1] not in _NOT_AFTER and low[i + 1].isalpha():
                return " ".join(words[: i + 1] + ["not"] + words[i + 1 :])
            return None
    return None


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


def lexicon(texts: list[str]) -> _Lexicon:
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


# ---------------------------------------------------------------- the examples
class NearMisses:
    """Builds the swap and disfluent examples of one split (see the module docstring).

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
        negs = negatives(
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
            passages=[Passage(source=source_name(pool.titles[j]), text=pool.paragraphs[j]) for j in order],
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
            if any(contains_answer(a, [b]) or contains_answer(b, [a]) for a in mine for b in theirs):
                continue  # the two questions share an answer: the final intent would not matter
            if shown is not None and (
                self.qs[c].para in shown or any(contains_answer(self.norm_paras[j], theirs) for j in shown)
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

    def make_twist(self, i: int) -> Example | None:
        """qs[i] twisted by an antonym or a negation over its own gold paragraph (shown), half of them
        said disfluently after an abandoned question of the same paragraph; the target is the abstention."""
        q = self.qs[i]
        order = self.passages(i)
        shown = set(" | ".join(self.folded[j] for j in order).split())
        options = [
            ("antonym", replace_span(q.question, a, b, r))
            for a, b, r in antonym_twists(q.question)
            if not set(fold(r).split()) & shown
        ]
        negated = negated_question(q.question)
        if negated is not None and not set(self.folded[q.para].split()) & (_NEGATIONS | {"t"}):
            options.append(("negation", negated))  # "t": fold() splits "isn't" into "isn t"
        if not options:
            self.stats["twist_none"] += 1
            return None
        rule, question = self.rng.choice(options)
        self.stats[f"twist_{rule}"] += 1
        if self.rng.random() < 0.5:
            j = self.partner(i, same_para=True)
            if j is not None:
                first = self.qs[j].question
                n = len(first.split())
                cut = self.rng.randint(2, n - 1) if n >= 4 else 0
                question = disfluent_question(first, question, self.rng.choice(_DISFLUENT), cut)
                self.stats["twist_disfluent"] += 1
        return self.example(f"{q.id}~twist", question, order, None, q, "twist")

    def build(self, n_base: int) -> list[Example]:
        """round(rate x n_base) examples of each kind, from questions drawn in a seeded order."""
        n_dis = round(self.cfg.disfluent_rate * n_base)
        n_ans = round(n_dis * self.cfg.disfluent_answered)
        plan = (
            ("swap", round(self.cfg.swap_rate * n_base), self.make_swap),
            ("disfluent_answer", n_ans, lambda i: self.make_disfluent(i, answered=True)),
            ("disfluent_abstain", n_dis - n_ans, lambda i: self.make_disfluent(i, answered=False)),
            ("twist", round(self.cfg.twist_rate * n_base), self.make_twist),
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
