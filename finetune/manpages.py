"""Documentation-style QA rows for the reader, built by rule from the manual pages installed here.

SQuADShifts (Wikipedia and news) is prose about named things; users index manuals full of commands and
options, and a reader trained further on prose alone drifted away from them (segment 2: -4.9 F1 on the
git docs test set). This module turns section-1 manual pages of a fixed list of Debian packages into
rows for `rag finetune --data` (JSONL {question, context, answers, title, id}), one row per option or
command entry, with the question phrased from the entry's own description:

    -r, --reverse            ->  "Which sort option reverses the result of comparisons?"  --reverse
           reverse the result of comparisons
                                 "What does the --reverse option of sort do?"  reverse the result of ...
    sort - sort lines of text files  ->  "Which command sorts lines of text files?"  sort

The context is the rendered page chunk (about `chunk_words` words, cut at blank lines) that holds the
entry, so every answer is a verbatim span of it. Git's pages are never read: the git manuals are the
documentation test set, which must stay out of training.

    >>> third_person("reverse the result"), third_person("do not list implied entries")
    ('reverses the result', 'does not list implied entries')
    >>> third_person("with -l, print the author") is None
    True
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rag.errors import BadInput

log = logging.getLogger(__name__)

# Packages whose section-1 pages are read (Debian 12). Licenses: GPL-2/3 (coreutils, findutils, grep,
# sed, tar, gzip, diffutils, make, util-linux, procps, less, bash, patch, dpkg, apt, man-db, iproute2),
# BSD-style (openssh-client, bzip2, zstd, file, unzip/zip Info-ZIP), MIT-like (curl), public domain
# (xz-utils, sqlite3), PostgreSQL (postgresql-client-15). The rows are built on the user's machine
# and never shipped.
PACKAGES = (
    "coreutils findutils grep sed tar gzip bzip2 xz-utils util-linux procps openssh-client curl wget make "
    "diffutils less bash zstd unzip zip file patch dpkg apt man-db sqlite3 postgresql-client-15"
).split()

_NOT_VERBS = set(
    "with likewise when if the a an same like equivalent implies alias deprecated synonym this for in on "
    "by as default obsolete ignored only each all no any see also and or to of is are it its from at "
    "currently normally usually note this these that such one two".split()
)
_ES = ("s", "sh", "ch", "x", "z", "o")
_IRREGULAR = {"do": "does", "be": "is", "have": "has", "go": "goes"}
_OPTION = re.compile(r"^ {7}(-{1,2}[A-Za-z0-9?][\w-]*)(?:[=\[ ][^,]*)?(?:, *(-{1,2}[A-Za-z0-9][\w-]*)\S*)*")
_BOILERPLATE = re.compile(r"^(output|display|print|show) (version|this help|help)\b")  # in every page
_NAME = re.compile(r"^ {7}([\w.+-]+(?:, [\w.+-]+)*) +- +(.+)$")


def third_person(desc: str) -> str | None:
    """The imperative description in the third person ("print X" -> "prints X"), or None if it is not one."""
    words = desc.split(" ", 1)
    w = words[0]
    if not w.isalpha() or not w.islower() or w in _NOT_VERBS or len(w) < 2:
        return None
    if w in _IRREGULAR:
        v = _IRREGULAR[w]
    elif w.endswith("y") and w[-2] not in "aeiou":
        v = w[:-1] + "ies"
    elif w.endswith(_ES):
        v = w + "es"
    else:
        v = w + "s"
    return " ".join([v, *words[1:]])


def clause(desc: str, max_words: int = 18) -> str | None:
    """The description's first clause (up to ';', ':' or '. '), if it is 3 to max_words words long."""
    c = re.split(r"; |: |\. |\s\(|,? (?:e\.g|i\.e|Example)\b", desc.strip(), maxsplit=1)[0].strip()
    c = c.rstrip(".,")
    n = len(c.split())
    dangling = desc.strip()[len(c) :].startswith(" .")  # "do not list implied . and .." cut at " ."
    return c if 3 <= n <= max_words and not dangling and "\u2010" not in c else None


def render(page: Path) -> str:
    """A manual page as plain text, one line per paragraph (groff, wide lines, no overstrikes)."""
    raw = gzip.decompress(page.read_bytes()) if page.suffix == ".gz" else page.read_bytes()
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-rLL=3000n", "-P-cbou"],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )
    text = out.stdout.decode("utf-8", "replace")
    lines = [ln.rstrip() for ln in text.splitlines()]
    if lines and re.match(r"^\S+\(\d\w*\)\s", lines[0]):  # the running header and footer
        lines = lines[1:-1]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def chunks(text: str, chunk_words: int = 160) -> list[str]:
    """Blank-line separated blocks packed into chunks of about chunk_words words (a block is never split)."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for block in text.split("\n\n"):
        w = len(block.split())
        if cur and n + w > chunk_words:
            out.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(block)
        n += w
    if cur:
        out.append("\n\n".join(cur))
    return out


@dataclass(frozen=True)
class Entry:
    kind: str  # "option" or "command"
    names: tuple[str, ...]  # the option's spellings, long first; or the command's name
    desc: str  # its description's first clause


def entries(chunk: str) -> Iterator[Entry]:
    """Option entries ("       -r, --reverse" then the description) and NAME lines in a rendered chunk."""
    lines = chunk.split("\n")
    for i, line in enumerate(lines):
        m = _NAME.match(line)
        if m and i > 0 and lines[i - 1].strip() == "NAME":
            c = clause(m.group(2))
            if c:
                yield Entry("command", tuple(n.strip() for n in m.group(1).split(",")), c)
            continue
        m = _OPTION.match(line)
        if not m:
            continue
        head = line[7:]
        names = re.findall(
            r"(?:^|, *)(-{1,2}[A-Za-z0-9?][\w-]*)", head.split("  ")[0] if "  " in head else head
        )
        rest = head.split("  ", 1)[1].strip() if "  " in head.strip() else ""
        if not rest and i + 1 < len(lines) and lines[i + 1].startswith(" " * 14):
            rest = lines[i + 1].strip()
        c = clause(rest) if rest else None
        if names and c and not _BOILERPLATE.match(c):
            yield Entry("option", tuple(sorted(set(names), key=lambda s: (-len(s), s))), c)


def questions(cmd: str, e: Entry, rng: random.Random) -> Iterator[tuple[str, list[str]]]:
    """(question, answers) pairs for one entry; the templates are drawn with rng.

    An option's answer is its longest spelling only (`--reverse`, not `-r`): the training target is the
    shortest of the most common answers (finetune.examples.majority_answer), and segment 3, trained
    with both spellings as answers, learned to answer `-b` where a manual's reader wants `--branch`."""
    tp = third_person(e.desc)
    opt = [e.names[0]]
    if e.kind == "command":
        if tp and cmd in e.names:
            yield f"Which command {tp}?", [cmd]
        return
    imperative = e.desc[len("do not ") :] if e.desc.startswith("do not ") else None
    if tp:
        t = rng.randrange(3)
        if t == 0:
            yield f"Which {cmd} option {tp}?", opt
        elif t == 1:
            how = f"not {imperative}" if imperative else e.desc
            yield f"How do I make {cmd} {how}?", opt
        else:
            yield (
                f"What option tells {cmd} to {'not ' + imperative if imperative else e.desc}?",
                opt,
            )
    if tp and rng.random() < 0.3:  # a verb-initial description reads as an answer to "what does it do"
        yield f"What does the {e.names[0]} option of {cmd} do?", [e.desc]


def pages(man_dir: Path, packages: list[str]) -> list[tuple[str, Path]]:
    """(package, page) for each section-1 page of the packages; git's pages are never included."""
    out = []
    for pkg in packages:
        res = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False)
        for line in res.stdout.splitlines():
            p = Path(line)
            if p.parent == man_dir and p.is_file() and not p.name.startswith("git"):
                out.append((pkg, p))
    return out


def build_rows(
    packages: list[str] = PACKAGES, man_dir: Path = Path("/usr/share/man/man1"), seed: int = 0
) -> list[dict]:
    """One JSONL row per (question, chunk) for the packages' pages, in a stable order."""
    for tool in ("dpkg", "groff"):
        if shutil.which(tool) is None:
            raise BadInput(
                f"{tool} is not installed: this builder reads Debian's manual pages (apt-get install {tool})"
            )
    found = pages(man_dir, list(packages))
    if not found:
        raise BadInput(f"no manual pages of {', '.join(packages)} under {man_dir}: apt-get install them")
    with ThreadPoolExecutor(max_workers=2) as ex:
        texts = list(ex.map(lambda pp: render(pp[1]), found))
    rows: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for (pkg, page), text in zip(found, texts, strict=True):
        cmd = page.name.split(".")[0]
        rng = random.Random(f"{seed}-{cmd}")
        for ci, chunk in enumerate(chunks(text)):
            for e in entries(chunk):
                for q, answers in questions(cmd, e, rng):
                    if (q, chunk) in seen or not all(a in chunk for a in answers):
                        continue
                    seen.add((q, chunk))
                    rows.append(
                        {
                            "id": f"man-{cmd}-{ci}-{len(rows)}",
                            "title": f"man/{cmd}",
                            "question": q,
                            "context": chunk,
                            "answers": answers,
                            "package": pkg,
                        }
                    )
    return rows


def validation_examples(rows: list[dict], n: int, seed: int = 0, shown: int = 3, per_page: int = 4) -> list:
    """Documentation-style examples for calibrating the reader's abstain rules (benchmarks/bench_abstain.py
    --docs): every other one answerable (the entry's chunk among other chunks of the same page), the rest
    unanswerable (only other chunks of the same page, none holding any of the answers: the manual is
    about the command but does not say), which is how a question about a feature the manual does not
    cover looks to the reader. At most `per_page` per page, seeded; chunks holding an answer are never
    distractors, so a page whose every chunk names the answer (the command's own name) gives none.

    >>> page = [{"id": f"q{i}", "title": "man/sort", "question": f"Which option {i}?", "answers": [f"--o{i}"],
    ...          "context": f"-o{i}, --o{i} does thing {i}"} for i in range(4)]
    >>> [(e.gold, len(e.passages), e.answers) for e in validation_examples(page, 2)]
    [(2, 3, ['--o3']), (None, 3, [])]
    """
    from finetune.examples import Example
    from rag.prompt import Passage

    by_page: dict[str, list[str]] = {}
    for r in rows:
        ctxs = by_page.setdefault(r["title"], [])
        if r["context"] not in ctxs:
            ctxs.append(r["context"])
    rng = random.Random(f"docs-validation-{seed}")
    order = list(rows)
    rng.shuffle(order)
    out: list[Example] = []
    used: dict[str, int] = {}
    for r in order:
        if len(out) >= n:
            break
        others = [
            c for c in by_page[r["title"]] if c != r["context"] and not any(a in c for a in r["answers"])
        ]
        if not others or used.get(r["title"], 0) >= per_page:
            continue
        used[r["title"]] = used.get(r["title"], 0) + 1
        unanswerable = len(out) % 2 == 1
        texts = rng.sample(others, min(len(others), shown if unanswerable else shown - 1))
        if not unanswerable:
            texts.append(r["context"])
        rng.shuffle(texts)
        name = r["title"].rsplit("/", 1)[-1] + ".1"
        out.append(
            Example(
                id=f"doc:{r['id']}",
                article=r["title"],
                question=r["question"],
                passages=[Passage(name, t) for t in texts],
                gold=None if unanswerable else texts.index(r["context"]) + 1,
                answers=[] if unanswerable else list(r["answers"]),
                answer=None if unanswerable else r["answers"][0],
                split="val",
                kind="docs-absent" if unanswerable else "docs",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    ap.add_argument("--packages", nargs="*", default=list(PACKAGES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rows = build_rows(args.packages, seed=args.seed)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tmp = args.out.with_suffix(".tmp")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(args.out)
    cmds = len({r["title"] for r in rows})
    print(f"{len(rows)} questions from {cmds} manual pages -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
