"""Test sets: load JSONL or SQuAD JSON questions, check every row first, sample stratified subsets.

A JSONL row (one per line):

    {"id": "56be4db0acb8001400a502ec", "question": "Which NFL team represented the AFC at Super Bowl 50?",
     "answers": ["Denver Broncos"], "source": "Super_Bowl_50.txt", "paragraph": 0, "start": 0, "end": 695}

`answers: []` or `"unanswerable": true` marks a question the documents cannot answer. `source`,
`paragraph`, `start`, `end` (the gold paragraph's character span in the source file) are optional; with
them we can score retrieval and run the oracle reader. An optional `context` gives the gold paragraph text
directly. SQuAD JSON ({"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}) is read too; its
questions carry their paragraph as `context` (no file offsets), and `is_impossible` marks SQuAD 2.0 style
unanswerables.

Every row is validated before anything else runs: a bad row raises BadInput naming the file and line.
A `source` must stay inside the corpus root (no absolute path, no ".."): @gold runs read that file, and
a test set from elsewhere could otherwise put /etc/passwd into the predictions.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from rag.config import REPO_ROOT
from rag.errors import BadInput

BUNDLED_DIR = REPO_ROOT / "eval" / "data"
BUNDLED_FILES = ("squad_dev.jsonl", "disfl_qa.jsonl")  # the default test set, matching corpus/
DEFAULT_CORPUS = REPO_ROOT / "corpus"
DISFL_ORIGIN = "disfl_qa"  # the bundled near-miss unanswerables: a twisted question on an indexed paragraph
ABSENT_ORIGIN = "corpus_absent"  # SQuAD questions on an article left out of the index (eval.absent)


@dataclass(frozen=True)
class Question:
    id: str  # unique within the test set; predictions are keyed by it
    question: str
    answers: tuple[str, ...]  # gold answers (any one counts); empty when unanswerable
    unanswerable: bool  # True when the documents do not contain the answer
    source: str | None = None  # gold document, relative to the indexed root (e.g. "Super_Bowl_50.txt")
    paragraph: int | None = None  # index of the gold paragraph in its source
    start: int | None = None  # gold paragraph's character span in the source file
    end: int | None = None
    context: str | None = None  # gold paragraph text, when the file carries it (SQuAD JSON)
    origin: str = ""  # file stem the question came from ("squad_dev", "disfl_qa"), or "corpus_absent"

    @property
    def has_gold_span(self) -> bool:
        return self.source is not None and self.start is not None and self.end is not None


@dataclass
class TestSet:
    name: str  # "bundled" or the file names joined by "+"
    files: list[str]  # absolute paths that were read
    sha256: str  # hash over the files' bytes, in order (and the corpus-absent questions, when added)
    questions: list[Question] = field(default_factory=list)
    corpus_root: Path | None = None  # where `source` paths are resolved for oracle contexts
    absent: dict | None = None  # the corpus-absent questions added (eval.absent): {held_out, n, pool}

    def __len__(self) -> int:
        return len(self.questions)

    @property
    def n_unanswerable(self) -> int:
        return sum(q.unanswerable for q in self.questions)

    def describe(self) -> dict:
        """A JSON-able summary for logs: {name, files, sha256, n, n_answerable, n_unanswerable, absent}."""
        n_un = self.n_unanswerable
        return {
            "name": self.name,
            "files": [Path(f).name for f in self.files],
            "sha256": self.sha256,
            "n": len(self.questions),
            "n_answerable": len(self.questions) - n_un,
            "n_unanswerable": n_un,
            "absent": self.absent,
        }


def _bad(path: Path, line: int | None, why: str) -> BadInput:
    where = f"{path}:{line}" if line is not None else str(path)
    return BadInput(f"{where}: {why}; fix or remove that row, then rerun `rag eval`")


def _opt_int(row: dict, key: str, path: Path, line: int | None) -> int | None:
    v = row.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(path, line, f"'{key}' must be a non-negative integer, got {v!r}")
    return v


def escapes_root(source: str) -> bool:
    """True when a relative `source` could point outside the folder it is joined to.

    >>> escapes_root("nfl/Super_Bowl_50.txt"), escapes_root("../../../etc/passwd"), escapes_root("/etc/passwd")
    (False, True, True)
    """
    p = PurePosixPath(source.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or bool(re.match(r"[A-Za-z]:", source)) or "\x00" in source


def parse_row(row: object, path: Path, line: int | None, origin: str = "") -> Question:
    """One JSON object -> Question, or BadInput naming the file and line.

    >>> parse_row({"id": "q1", "question": "Who?", "answers": ["Ann"]}, Path("t.jsonl"), 1).answers
    ('Ann',)
    """
    if not isinstance(row, dict):
        raise _bad(path, line, f"expected a JSON object, got {type(row).__name__}")
    qid = row.get("id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    if not isinstance(qid, str) or not qid.strip():
        raise _bad(path, line, "missing 'id' (a non-empty string)")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _bad(path, line, "missing 'question' (a non-empty string)")
    answers = row.get("answers", [])
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list):
        raise _bad(path, line, "'answers' must be a list of strings")
    golds: list[str] = []
    for a in answers:
        if isinstance(a, dict) and isinstance(a.get("text"), str):  # SQuAD-style {"text", "answer_start"}
            a = a["text"]
        if not isinstance(a, str):
            raise _bad(path, line, f"'answers' must be a list of strings, found {a!r}")
        if a.strip():
            golds.append(a)
    unanswerable = row.get("unanswerable", False)
    if not isinstance(unanswerable, bool):
        raise _bad(path, line, f"'unanswerable' must be true or false, got {unanswerable!r}")
    if unanswerable and golds:
        raise _bad(path, line, "a row marked unanswerable must have no answers")
    unanswerable = unanswerable or not golds
    source = row.get("source")
    if source is not None and (not isinstance(source, str) or not source):
        raise _bad(path, line, "'source' must be a file name")
    if source is not None and escapes_root(source):
        raise _bad(
            path, line, f"'source' {source!r} points outside the corpus folder: give the path relative to it"
        )
    start, end = _opt_int(row, "start", path, line), _opt_int(row, "end", path, line)
    if (start is None) != (end is None):
        raise _bad(path, line, "'start' and 'end' go together")
    if start is not None and end is not None and end <= start:
        raise _bad(path, line, f"'end' ({end}) must be greater than 'start' ({start})")
    context = row.get("context")
    if context is not None and not isinstance(context, str):
        raise _bad(path, line, "'context' must be a string")
    return Question(
        id=qid,
        question=question.strip(),
        answers=tuple(golds),
        unanswerable=unanswerable,
        source=source,
        paragraph=_opt_int(row, "paragraph", path, line),
        start=start,
        end=end,
        context=context,
        origin=origin,
    )


def _load_jsonl(path: Path, data: bytes) -> list[Question]:
    out = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(path, None, f"not UTF-8 text ({e})") from e
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, i, f"not valid JSON ({e.msg} at column {e.colno})") from e
        out.append(parse_row(row, path, i, origin=path.stem))
    return out


def _load_squad_json(path: Path, data: bytes) -> list[Question]:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        line = getattr(e, "lineno", None)
        raise _bad(path, line, f"not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise _bad(
            path, None, "a SQuAD JSON file needs a top-level 'data' list (or use JSONL, one question a line)"
        )
    out = []
    for ai, article in enumerate(doc["data"]):
        title = article.get("title") if isinstance(article, dict) else None
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise _bad(path, None, f"data[{ai}] has no 'paragraphs' list")
        for pi, para in enumerate(paragraphs):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise _bad(path, None, f"data[{ai}].paragraphs[{pi}] has no 'context' string")
            for qi, qa in enumerate(para.get("qas", [])):
                if not isinstance(qa, dict):
                    raise _bad(path, None, f"data[{ai}].paragraphs[{pi}].qas[{qi}] is not an object")
                row = {
                    "id": qa.get("id"),
                    "question": qa.get("question"),
                    "answers": qa.get("answers", []),
                    "unanswerable": bool(qa.get("is_impossible", False)),
                    "context": para["context"],
                    "paragraph": pi,
                }
                if row["unanswerable"]:
                    row["answers"] = []
                q = parse_row(row, path, None, origin=path.stem)
                # No file offsets: the source is the article title, matched to chunks by text.
                out.append(replace(q, source=title if isinstance(title, str) else None))
    return out


def load_file(path: Path) -> tuple[list[Question], bytes]:
    """Read one JSONL or SQuAD JSON file; returns its questions and raw bytes (for hashing)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"test set {path} not found: pass an existing .jsonl or SQuAD .json file to --testset")
    data = path.read_bytes()
    head = data.lstrip()[:1]
    if path.suffix == ".json" or (head == b"{" and b'"data"' in data[:200] and path.suffix != ".jsonl"):
        return _load_squad_json(path, data), data
    return _load_jsonl(path, data), data


def bundled_files() -> list[Path]:
    """The default test set files (SQuAD v1.1 dev over corpus/ plus Disfl-QA unanswerables)."""
    return [BUNDLED_DIR / f for f in BUNDLED_FILES]


def load_testset(paths: list[Path] | None = None, corpus_root: Path | None = None) -> TestSet:
    """Load and validate test set files (None = the bundled set); ids must be unique across files."""
    bundled = not paths
    files = bundled_files() if bundled else [Path(p) for p in paths]
    if bundled:
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise BadInput(
                f"bundled test set missing ({', '.join(str(m) for m in missing)}): "
                "build it with the script in scripts/ or pass --testset FILE"
            )
    h = hashlib.sha256()
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for f in files:
        qs, data = load_file(f)
        h.update(hashlib.sha256(data).digest())
        for q in qs:
            if q.id in seen:
                raise BadInput(
                    f"{f}: question id {q.id!r} repeats (first in {seen[q.id]}); ids must be unique"
                )
            seen[q.id] = str(f)
        questions.extend(qs)
    if not questions:
        raise BadInput(
            f"test set {', '.join(map(str, files))} holds no questions: add rows or pick another file"
        )
    if corpus_root is None:
        corpus_root = DEFAULT_CORPUS if bundled else files[0].resolve().parent
    name = "bundled" if bundled else "+".join(f.name for f in files)
    return TestSet(
        name=name,
        files=[str(f.resolve()) for f in files],
        sha256=h.hexdigest(),
        questions=questions,
        corpus_root=corpus_root,
    )


def sample(
    questions: list[Question], limit: int | None, seed: int = 0, unanswerable: int | None = None
) -> list[Question]:
    """A seeded subset of `limit` questions that keeps the answerable/unanswerable mix; order preserved.

    `unanswerable` fixes how many of the `limit` are unanswerable instead (e.g. 1,000 + 300). Subsets are
    nested: with the same seed, a smaller sample is part of a larger one, so a quick run on a few systems
    pairs with a headline run on the rest (and reuses its saved predictions).

    >>> qs = [Question(str(i), "q?", ("a",) if i % 4 else (), i % 4 == 0) for i in range(100)]
    >>> sub = sample(qs, 20, seed=1)
    >>> len(sub), sum(q.unanswerable for q in sub)
    (20, 5)
    >>> sum(q.unanswerable for q in sample(qs, 20, seed=1, unanswerable=10))
    10
    >>> {q.id for q in sub} <= {q.id for q in sample(qs, 60, seed=1)}
    True
    """
    if limit is None or limit >= len(questions):
        if unanswerable is None:
            return list(questions)
        limit = len(questions)
    if limit <= 0:
        raise BadInput(f"--limit must be positive, got {limit}")
    groups = {
        False: [i for i, q in enumerate(questions) if not q.unanswerable],
        True: [i for i, q in enumerate(questions) if q.unanswerable],
    }
    if unanswerable is not None:
        if not 0 <= unanswerable <= min(limit, len(groups[True])):
            raise BadInput(
                f"--unanswerable {unanswerable} is not possible: the test set has {len(groups[True])} "
                f"unanswerable questions and --limit is {limit}"
            )
        n_un = unanswerable
    else:
        n_un = round(limit * len(groups[True]) / len(questions))
        if groups[True] and groups[False] and limit >= 2:  # both kinds present: keep at least one of each
            n_un = min(max(n_un, 1), limit - 1)
        n_un = min(n_un, len(groups[True]))
    n_ans = min(limit - n_un, len(groups[False]))
    picked = []
    for kind, n in ((False, n_ans), (True, n_un)):
        order = list(groups[kind])
        random.Random(f"{seed}:{kind}").shuffle(
            order
        )  # a seeded order per kind: samples are prefixes, nested
        picked += order[:n]
    return [questions[i] for i in sorted(picked)]


def gold_context(q: Question, corpus_root: Path | None, _cache: dict | None = None) -> str | None:
    """The gold paragraph text: the row's `context`, else corpus_root/source[start:end]; None if unknown."""
    if q.context:
        return q.context
    if not q.has_gold_span or corpus_root is None:
        return None
    if escapes_root(q.source):  # parse_row refuses these; a Question built in code gets the same guard
        raise BadInput(
            f"question {q.id}: source {q.source!r} points outside the corpus folder {corpus_root}: "
            "give the path relative to it"
        )
    path = Path(corpus_root) / q.source  # type: ignore[operator]
    cache = _cache if _cache is not None else {}
    if path not in cache:
        cache[path] = path.read_text(encoding="utf-8") if path.is_file() else None
    text = cache[path]
    if text is None or q.end > len(text):  # type: ignore[operator]
        return None
    return text[q.start : q.end]
