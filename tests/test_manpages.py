"""Documentation-style QA rows from manual pages: the rules on rendered text, and groff on a real page."""

from __future__ import annotations

import gzip
import random
import shutil

import pytest

from finetune import manpages

RENDERED = """NAME
       frob - frobnicate text files

DESCRIPTION
       Frobnicate each FILE.

       -r, --reverse
              reverse the result of comparisons

       -q     do not print the file names; see below

       --with-l
              with -l, print the author of each file

       --version
              output version information and exit
"""


def test_entries_come_from_option_blocks_and_the_name_line():
    got = list(manpages.entries(RENDERED))
    assert manpages.Entry("command", ("frob",), "frobnicate text files") in got
    assert manpages.Entry("option", ("--reverse", "-r"), "reverse the result of comparisons") in got
    assert manpages.Entry("option", ("-q",), "do not print the file names") in got
    assert not [e for e in got if "--version" in e.names]  # boilerplate every page has


def test_questions_are_phrased_from_the_description_and_answered_verbatim():
    rows = []
    for seed in range(12):
        for e in manpages.entries(RENDERED):
            rows += list(manpages.questions("frob", e, random.Random(seed)))
    qs = {q for q, _ in rows}
    assert "Which command frobnicates text files?" in qs
    assert "Which frob option reverses the result of comparisons?" in qs
    assert "How do I make frob not print the file names?" in qs
    assert "What does the --reverse option of frob do?" in qs
    assert ("Which frob option reverses the result of comparisons?", ["--reverse"]) in rows  # the long one
    assert not [q for q in qs if "with -l" in q]  # not an imperative: no question reads right
    for _, answers in rows:
        assert all(a in RENDERED for a in answers)


def test_clause_keeps_a_short_first_clause_only():
    assert manpages.clause("list entries by columns; see below") == "list entries by columns"
    assert manpages.clause("use locale-defined grouping of digits, e.g., 1,000,000") == (
        "use locale-defined grouping of digits"
    )
    assert manpages.clause("do not list implied . and ..") is None  # cut mid-sentence
    assert manpages.clause("ignored") is None


def test_chunks_pack_blocks_without_splitting_them():
    text = "\n\n".join(f"block {i} " + "word " * 50 for i in range(7))
    out = manpages.chunks(text, chunk_words=120)
    assert "\n\n".join(out) == text
    assert all(len(c.split()) <= 120 for c in out) and len(out) == 4


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_a_real_page_renders_and_yields_rows(tmp_path):
    page = tmp_path / "frob.1.gz"
    page.write_bytes(
        gzip.compress(
            b'.TH FROB "1"\n.SH NAME\nfrob \\- frobnicate text files\n.SH DESCRIPTION\n.TP\n'
            b"\\fB\\-r\\fR, \\fB\\-\\-reverse\\fR\nreverse the result of comparisons\n"
        )
    )
    text = manpages.render(page)
    assert "frob - frobnicate text files" in text and "       -r, --reverse" in text
    assert manpages.Entry("option", ("--reverse", "-r"), "reverse the result of comparisons") in list(
        manpages.entries(text)
    )


def test_git_pages_are_never_read(tmp_path, monkeypatch):
    (tmp_path / "git-push.1.gz").write_bytes(b"")
    (tmp_path / "ls.1.gz").write_bytes(b"")

    class Listing:
        stdout = f"{tmp_path}/git-push.1.gz\n{tmp_path}/ls.1.gz\n"

    monkeypatch.setattr(manpages.subprocess, "run", lambda *a, **k: Listing())
    assert [p.name for _, p in manpages.pages(tmp_path, ["x"])] == ["ls.1.gz"]  # git's is the docs test set


def test_a_machine_without_groff_gets_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        manpages.shutil, "which", lambda tool: None if tool == "groff" else "/usr/bin/" + tool
    )
    assert manpages.main(["--out", str(tmp_path / "rows.jsonl")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: groff is not installed") and "\n" not in err
    assert not (tmp_path / "rows.jsonl").exists()


def test_validation_examples_hide_the_answer_only_where_they_say_so():
    rows = [
        {
            "id": f"man-{cmd}-{i}-{i}",
            "title": f"man/{cmd}",
            "question": f"Which {cmd} option does thing {i}?",
            "answers": [f"--opt{i}"],
            "context": f"       --opt{i}\n              does thing {i} (see also {cmd})",
        }
        for cmd in ("frob", "grob")
        for i in range(6)
    ]
    rows.append({**rows[0], "id": "man-solo-0-0", "title": "man/solo", "context": "solo --opt0 only"})
    ex = manpages.validation_examples(rows, 100)
    assert {e.article for e in ex} == {"man/frob", "man/grob"}  # a one-chunk page gives none
    assert all(sum(e.article == a for e in ex) <= 4 for a in ("man/frob", "man/grob"))
    absent = [e for e in ex if e.gold is None]
    assert 0 < len(absent) < len(ex) and all(e.kind == "docs-absent" and e.answers == [] for e in absent)
    by_id = {f"doc:{r['id']}": r for r in rows}
    for e in ex:
        r = by_id[e.id]
        texts = [p.text for p in e.passages]
        assert not any(a in t for a in r["answers"] for t in texts if t != r["context"])
        if e.gold is None:
            assert r["context"] not in texts
        else:
            assert texts[e.gold - 1] == r["context"] and e.answers == r["answers"]
    assert [e.id for e in manpages.validation_examples(rows, 100)] == [e.id for e in ex]  # seeded
