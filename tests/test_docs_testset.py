"""The git documentation test set (eval/data/docs): every gold span holds its answer, as our loader reads it.

Fast and offline: it reads the 28 corpus files and the JSONL, nothing else. `check` returns the list of
problems so the last test can show it catches a shifted span, a wrong source and an answer that leaked
into the corpus.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from eval.testset import Question, gold_context, load_testset
from indexing.load import SUPPORTED, load_file

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "eval" / "data" / "docs"
CORPUS = DOCS / "corpus"
QUESTIONS = DOCS / "questions.jsonl"


def _absent_pattern(term: str) -> re.Pattern:
    # "lfs" must not match inside "CRLFs", "--follow" not inside "--follow-tags"
    return re.compile(r"(?<![A-Za-z0-9-])" + re.escape(term) + r"(?![A-Za-z0-9-])", re.I)


def _loaded_texts() -> dict[str, str]:
    """Corpus file name -> the text indexing/load.py produces (the text chunk offsets refer to)."""
    texts = {}
    for p in sorted(CORPUS.iterdir()):
        docs = load_file(p, p.name)
        assert len(docs) == 1, f"{p.name}: expected one document, got {len(docs)}"
        texts[p.name] = docs[0].text
    return texts


def check(questions: list[Question], texts: dict[str, str], absent: dict[str, list[str]]) -> list[str]:
    """Problems with the set: answer not verbatim in its [start, end) span, bad source, leaked answers."""
    problems = []
    corpus = "\n".join(texts.values())
    for q in questions:
        if q.unanswerable:
            if q.answers or q.source is not None:
                problems.append(f"{q.id}: unanswerable rows carry no answers and no source")
            if not absent.get(q.id):
                problems.append(f"{q.id}: unanswerable row lists no absent_from_corpus terms")
            for term in absent.get(q.id, []):
                if _absent_pattern(term).search(corpus):
                    problems.append(f"{q.id}: {term!r} occurs in the corpus: the question is answerable")
            continue
        if not q.has_gold_span or q.source not in texts:
            problems.append(f"{q.id}: source {q.source!r} with a span is needed (a file of the corpus)")
            continue
        text = texts[q.source]
        if q.end > len(text):
            problems.append(f"{q.id}: span {q.start}:{q.end} runs past the end of {q.source} ({len(text)})")
            continue
        span = text[q.start : q.end]
        for a in q.answers:
            if a not in span:
                problems.append(f"{q.id}: answer {a!r} is not in {q.source}[{q.start}:{q.end}]")
        if span != span.strip("\n") or len(span) > 1500:
            problems.append(
                f"{q.id}: span {q.start}:{q.end} is not one paragraph (no edge newlines, <= 1500 chars)"
            )
    return problems


def _absent_terms() -> dict[str, list[str]]:
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r.get("absent_from_corpus", []) for r in rows}


def test_corpus_is_small_plain_text_our_loader_reads_verbatim():
    files = sorted(CORPUS.iterdir())
    assert 15 <= len(files) <= 30
    assert sum(p.stat().st_size for p in files) < 1_500_000
    assert all(p.suffix in SUPPORTED for p in files)
    # .txt is loaded as the file itself, so gold_context (read_text) and chunk offsets agree
    for name, text in _loaded_texts().items():
        assert text == (CORPUS / name).read_text(encoding="utf-8"), name


def test_every_answer_is_verbatim_in_its_gold_span():
    ts = load_testset([QUESTIONS], corpus_root=CORPUS)
    n_un = ts.n_unanswerable
    assert 60 <= len(ts) <= 100
    assert 0.15 <= n_un / len(ts) <= 0.20, f"{n_un} of {len(ts)} unanswerable"
    assert len({q.id for q in ts.questions}) == len(ts)
    assert check(ts.questions, _loaded_texts(), _absent_terms()) == []
    # the path `rag eval --corpus eval/data/docs/corpus` takes for @gold runs gives the same paragraphs
    texts = _loaded_texts()
    for q in ts.questions:
        if not q.unanswerable:
            assert gold_context(q, ts.corpus_root) == texts[q.source][q.start : q.end]


def test_the_checker_catches_broken_rows():
    ts = load_testset([QUESTIONS], corpus_root=CORPUS)
    texts, absent = _loaded_texts(), _absent_terms()
    q = next(q for q in ts.questions if q.answers == ("refs/bisect/bad",))
    u = next(q for q in ts.questions if q.unanswerable)
    shifted = replace(q, start=q.start + 3000, end=q.end + 3000)
    wrong_file = replace(q, source="git-stash.txt")
    missing = replace(q, source="git-lfs.txt")
    problems = check([shifted, wrong_file, missing, u], texts, {**absent, u.id: ["refs/bisect/bad"]})
    assert len(problems) == 4, problems
    assert check([replace(u, source="git-push.txt")], texts, absent)


def test_no_training_data_source_points_at_the_docs_set():
    """Kept out of training: nothing under finetune/ names this folder or its files."""
    # plain "docs" is a variable name in finetune/data.py, so look for the paths and names themselves
    leak = re.compile(r"eval/data/docs|data/docs|docs/corpus|docs/questions|gitdoc|git-doc")
    hits = [
        f"{p.relative_to(REPO)}:{i}"
        for p in sorted((REPO / "finetune").rglob("*"))
        if p.is_file() and p.suffix in {".py", ".toml", ".json", ".jsonl", ".txt", ".md", ".yaml", ".yml"}
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if leak.search(line)
    ]
    assert hits == []


def test_manual_page_training_rows_leave_git_out():
    """finetune/manpages.py reads section-1 pages: none of git's packages, and no git* page (see its test)."""
    from finetune import manpages

    assert not [p for p in manpages.PACKAGES if p.startswith("git")]
