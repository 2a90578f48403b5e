"""Build the default corpus and the bundled test sets from the `bigbench==1.0.0` sdist.

    python scripts/build_corpus.py            # writes corpus/ and eval/data/ (the committed outputs)
    python scripts/build_corpus.py --check    # rebuilds in memory, exits 1 if a committed file differs

Outputs:
    corpus/<Title>.txt        the 48 Wikipedia articles of SQuAD v1.1 dev: paragraphs joined by a blank line
    corpus/README.md          license (CC BY-SA 4.0), attribution, how it was built
    corpus/.ragignore         keeps README.md out of the index
    eval/data/squad_dev.jsonl  10,565 questions {id, question, answers, source, paragraph, start, end}
    eval/data/disfl_qa.jsonl   the unanswerable Disfl-QA questions, mapped onto the same paragraphs

A paragraph is the SQuAD context with surrounding whitespace stripped; `start`/`end` are its character
offsets in the file, so file_text[start:end] == paragraph. Needs the sdist once (RAG_BIGBENCH_SDIST, or
a pip download into RAG_HOME).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from assets.bigbench import (
    SDIST_REQUIREMENT,
    SDIST_SHA256,
    detokenize,
    disfl_qa,
    disfl_qa_parts,
    eval_passage_hashes,
    fetch_bigbench,
    passage_hash,
    squad_dev,
)
from rag.config import REPO_ROOT

SEP = "\n\n"
# Disfl-QA rows whose "question" is a spreadsheet error or a placeholder, not a question.
JUNK_QUESTIONS = {"#VALUE!", "question n/a"}


def build_corpus(articles: list[dict]) -> tuple[dict[str, str], dict[tuple[str, int], tuple[int, int]]]:
    """Return {file name: text} and {(file, paragraph index): (start, end)}."""
    files: dict[str, str] = {}
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for article in articles:
        title = article["title"]
        if not re.fullmatch(r"[\w,().'-]+", title):
            raise SystemExit(f"title {title!r} is not a safe file name")
        name = f"{title}.txt"
        if name in files:
            raise SystemExit(f"duplicate title {title!r}")
        parts, pos = [], 0
        for i, para in enumerate(article["paragraphs"]):
            text = para["context"].strip()
            if SEP in text or not text:
                raise SystemExit(f"{name} paragraph {i} is empty or holds a blank line")
            spans[name, i] = (pos, pos + len(text))
            parts.append(text)
            pos += len(text) + len(SEP)
        files[name] = SEP.join(parts) + "\n"
    return files, spans


def squad_rows(articles: list[dict], spans: dict) -> list[dict]:
    rows = []
    for article in articles:
        name = f"{article['title']}.txt"
        for i, para in enumerate(article["paragraphs"]):
            start, end = spans[name, i]
            for qa in para["qas"]:
                answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
                rows.append({"id": qa["id"], "question": qa["question"].strip(), "answers": answers,
                             "source": name, "paragraph": i, "start": start, "end": end})  # fmt: skip
    return rows


def disfl_rows(
    items: list[dict], by_hash: dict[str, tuple[str, int]], spans: dict
) -> tuple[list[dict], Counter]:
    rows, counts = [], Counter()
    for j, item in enumerate(items):
        if item["target"] != "unknown":
            continue
        counts["unanswerable"] += 1
        question, context = disfl_qa_parts(item)
        where = by_hash.get(passage_hash(context))
        if where is None:
            counts["unmapped"] += 1
            continue
        counts["mapped"] += 1
        text = detokenize(question)
        if text in JUNK_QUESTIONS:
            counts["junk"] += 1
            continue
        name, i = where
        start, end = spans[where]
        rows.append({"id": f"disfl_qa-{j:04d}", "question": text, "answers": [], "unanswerable": True,
                     "source": name, "paragraph": i, "start": start, "end": end})  # fmt: skip
    return rows, counts


def readme(n_files: int, n_paras: int, n_chars: int, n_squad: int, n_disfl: int) -> str:
    return f"""# Default corpus: the 48 Wikipedia articles of SQuAD v1.1 dev

{n_files} UTF-8 text files, one per article, named after the Wikipedia title; {n_paras:,} paragraphs
({n_chars:,} characters), separated by a blank line. These are the passages of the SQuAD v1.1 development
set, so `rag eval --testset` can score answers against its {n_squad:,} questions
(`eval/data/squad_dev.jsonl`) and {n_disfl:,} unanswerable Disfl-QA questions on the same paragraphs
(`eval/data/disfl_qa.jsonl`). Each test row gives its paragraph's file, index and character offsets.

## License and attribution
- Text: Wikipedia contributors, from the articles as they stood when SQuAD was built (2016), licensed
  CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Changes: only the paragraphs SQuAD
  kept, stripped of surrounding whitespace; no other edits.
- Selection and questions: SQuAD v1.1, Rajpurkar, Zhang, Lopyrev and Liang (2016), "SQuAD: 100,000+
  Questions for Machine Comprehension of Text", EMNLP; CC BY-SA 4.0.
- Disfl-QA: Gupta, Jolly, Kaur, Ghosh, Bhattacharya and Kumar (2021), "Disfl-QA: A Benchmark Dataset for
  Understanding Disfluencies in Question Answering", Findings of ACL; CC BY 4.0. Its questions are
  stored space-tokenized; ours are detokenized by `assets.bigbench.detokenize`.
- All three files come from the BIG-bench package (`{SDIST_REQUIREMENT}` sdist on PyPI, sha256
  {SDIST_SHA256}), whose copies carry BIG-bench's canary string: do not train on this corpus.

## How it was built
`python scripts/build_corpus.py` (reads the sdist once; set RAG_BIGBENCH_SDIST to a local copy to skip
the 358 MB download). `python scripts/build_corpus.py --check` rebuilds everything and compares it
with the committed files. This README is excluded from indexing by `.ragignore`.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO_ROOT / "corpus", help="corpus output folder")
    ap.add_argument("--eval-data", type=Path, default=REPO_ROOT / "eval" / "data", help="test set folder")
    ap.add_argument("--check", action="store_true", help="compare with the files on disk; write nothing")
    args = ap.parse_args()

    fetch_bigbench(say=lambda m: print(m, file=sys.stderr))
    articles = squad_dev()
    files, spans = build_corpus(articles)
    by_hash: dict[str, tuple[str, int]] = {}
    for article in articles:
        for i, para in enumerate(article["paragraphs"]):
            h = passage_hash(para["context"])
            if h in by_hash:
                raise SystemExit(
                    f"two SQuAD dev paragraphs share a hash: {by_hash[h]} and {article['title']} {i}"
                )
            by_hash[h] = (f"{article['title']}.txt", i)
    squad = squad_rows(articles, spans)
    items = disfl_qa()
    disfl, counts = disfl_rows(items, by_hash, spans)

    # How well does detokenize() undo the tokenization? Measured on the contexts, whose originals we have.
    contexts = {disfl_qa_parts(it)[1] for it in items}
    originals = {
        passage_hash(p["context"]): " ".join(p["context"].split()) for a in articles for p in a["paragraphs"]
    }
    restored = sum(detokenize(c) == originals[passage_hash(c)] for c in contexts)

    # Leakage guard coverage: every eval passage must be in eval_passage_hashes().
    guard = eval_passage_hashes()
    assert set(by_hash) <= guard and len(guard) == len(by_hash), (
        "eval_passage_hashes() disagrees with SQuAD dev"
    )

    n_chars = sum(len(t) for t in files.values())
    outputs: dict[Path, str] = {args.corpus / name: text for name, text in files.items()}
    outputs[args.corpus / "README.md"] = readme(len(files), len(spans), n_chars, len(squad), len(disfl))
    outputs[args.corpus / ".ragignore"] = "README.md\n"
    for name, rows in (("squad_dev.jsonl", squad), ("disfl_qa.jsonl", disfl)):
        outputs[args.eval_data / name] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    if args.check:
        stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        extra = sorted(set(args.corpus.glob("*.txt")) - set(outputs))
        for p in stale + extra:
            print(f"differs: {p}")
        if stale or extra:
            return 1
        print(f"all {len(outputs)} files match")
    else:
        args.corpus.mkdir(parents=True, exist_ok=True)
        args.eval_data.mkdir(parents=True, exist_ok=True)
        for old in set(args.corpus.glob("*.txt")) - set(outputs):
            old.unlink()
        for path, text in outputs.items():
            path.write_bytes(text.encode("utf-8"))  # bytes: no newline translation, offsets stay exact

    # Verify from disk what a reader of the committed files will see.
    by_file = {f"{a['title']}.txt": a for a in articles}
    on_disk = {name: (args.corpus / name).read_text(encoding="utf-8") for name in files}
    for row in squad + disfl:
        text = on_disk[row["source"]]
        got = text[row["start"] : row["end"]]
        assert got == by_file[row["source"]]["paragraphs"][row["paragraph"]]["context"].strip(), row["id"]
        assert got == text.rstrip("\n").split(SEP)[row["paragraph"]], row["id"]

    print(f"articles:            {len(files)}")
    print(f"paragraphs:          {len(spans):,}")
    print(f"corpus characters:   {n_chars:,} ({sum(len(t.encode()) for t in files.values()):,} bytes)")
    print(
        f"SQuAD dev questions: {len(squad):,} (answers per question: {sum(len(r['answers']) for r in squad) / len(squad):.2f} unique)"
    )
    print(f"Disfl-QA items:      {len(items):,}, unanswerable {counts['unanswerable']:,}: mapped to a paragraph "
          f"{counts['mapped']:,}, unmapped (dropped) {counts['unmapped']:,}, junk questions (dropped) {counts['junk']:,}; "
          f"written {len(disfl):,}")  # fmt: skip
    print(f"detokenize() restores {restored:,} of {len(contexts):,} distinct Disfl-QA contexts exactly "
          f"({restored / len(contexts):.1%}; whitespace collapsed)")  # fmt: skip
    print(f"eval passage hashes: {len(guard):,}")
    print("offsets verified: file[start:end] == paragraph for every row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
