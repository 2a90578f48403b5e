"""Public QA data sets from the `bigbench==1.0.0` sdist: SQuAD v1.1 dev, SQuADShifts and Disfl-QA.

The sdist is the one place these sets come from, so everything is reproducible and offline except for
one `pip download` (358 MB, once). Only the members we read are extracted, to `data_dir()/bigbench/`;
after that the sdist may be deleted. Set RAG_BIGBENCH_SDIST to an existing copy to skip the download.

    squad_dev()          SQuAD v1.1 dev: 48 articles, 2,067 paragraphs, 10,565 questions (SQuAD JSON `data`)
    squadshifts("nyt")   SQuADShifts test sets: new_wiki | nyt | reddit | amazon (SQuAD JSON `data`)
    disfl_qa()           Disfl-QA: 8,000 raw BIG-bench items {input: "<q>\\ncontext: <paragraph>", target}
    passage_hash(text)   a tokenization-proof fingerprint, so eval passages are recognized anywhere
    eval_passage_hashes()  fingerprints of every evaluation passage (the fine-tuning leakage guard)

Licenses and credit:
- SQuAD v1.1 (Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text"),
  built on Wikipedia articles: CC BY-SA 4.0.
- SQuADShifts (Miller et al. 2020, "The Effect of Natural Distribution Shift on Question Answering
  Models"): CC BY 4.0.
- Disfl-QA (Gupta et al. 2021, "Disfl-QA: A Benchmark Dataset for Understanding Disfluencies in Question
  Answering"): CC BY 4.0.
- Packaged in BIG-bench (Srivastava et al. 2022), whose files carry a canary string asking that benchmark
  data not be used for training. We train only on SQuADShifts (a documented choice) and never on the
  SQuAD dev / Disfl-QA passages we evaluate on, which `eval_passage_hashes()` enforces.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zlib
from pathlib import Path
from typing import Any

from assets import Say, tell
from rag.config import data_dir
from rag.errors import BadInput, ModelUnavailable
from rag.files import sha256_file, sha256_text, write_atomic

log = logging.getLogger(__name__)

SDIST_NAME = "bigbench-1.0.0.tar.gz"
SDIST_REQUIREMENT = "bigbench==1.0.0"
# sha256 of the PyPI sdist, computed from a `pip download` made on this project's build machine.
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
SDIST_SIZE_MB = 358
SDIST_ENV = "RAG_BIGBENCH_SDIST"

_PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"
SQUAD_DEV = "squad_shifts/squaddev_v1.1.json"
DISFL_QA = "disfl_qa/task.json"
SQUADSHIFTS = {
    "new_wiki": "squad_shifts/new_wiki_v1.0.json",
    "nyt": "squad_shifts/nyt_v1.0.json",
    "reddit": "squad_shifts/reddit_v1.0.json",
    "amazon": "squad_shifts/amazon_reviews_v1.0.json",
}
MEMBERS = (SQUAD_DEV, *SQUADSHIFTS.values(), DISFL_QA)
_MANIFEST = "MANIFEST.json"

HASH_VERSION = 1  # bump when passage_hash changes, so cached hash sets are rebuilt
_HASHES_FILE = "eval_passage_hashes.json"


# ------------------------------------------------------------------------------------------- fetching
def bigbench_dir() -> Path:
    """Where the extracted members live: data_dir()/bigbench/<member>."""
    return data_dir() / "bigbench"


def fetch_bigbench(say: Say = None) -> Path:
    """Make sure the needed sdist members are extracted; return the folder that holds them.

    Order: an existing extraction; else the sdist from RAG_BIGBENCH_SDIST, or data_dir()/bigbench-1.0.0.tar.gz,
    or a fresh `pip download` into data_dir(). The sdist's sha256 is checked before anything is read.
    """
    dest = bigbench_dir()
    if _extracted(dest):
        return dest
    sdist = _find_sdist(say)
    tell(log, say, f"extracting {len(MEMBERS)} data files from {sdist.name} into {dest} (once)")
    _extract(sdist, dest)
    return dest


def _extracted(dest: Path) -> bool:
    try:
        manifest = json.loads((dest / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("sdist_sha256") == SDIST_SHA256 and all((dest / m).is_file() for m in MEMBERS)


def _find_sdist(say: Say) -> Path:
    env = os.environ.get(SDIST_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise BadInput(
                f"{SDIST_ENV}={env} is not a file: point it at {SDIST_NAME} or unset it to download"
            )
        got = sha256_file(path)
        if got != SDIST_SHA256:
            raise BadInput(
                f"{path} has sha256 {got[:16]}..., expected {SDIST_SHA256[:16]}...: point {SDIST_ENV} at the "
                f"genuine {SDIST_REQUIREMENT} sdist or unset it to download"
            )
        return path
    path = data_dir() / SDIST_NAME
    if not path.exists():
        _download(path, say)
    got = sha256_file(path)
    if got != SDIST_SHA256:
        raise ModelUnavailable(
            f"{path} has sha256 {got[:16]}..., expected {SDIST_SHA256[:16]}...: delete it and run again to "
            f"re-download, or set {SDIST_ENV} to a good copy"
        )
    return path


def _download(dest: Path, say: Say) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tell(
        log,
        say,
        f"downloading the {SDIST_REQUIREMENT} sdist with pip ({SDIST_SIZE_MB} MB, once) for its QA data",
    )
    tmp = Path(tempfile.mkdtemp(prefix="bigbench-dl-", dir=dest.parent))
    hint = f"check access to PyPI, or fetch {SDIST_NAME} elsewhere and set {SDIST_ENV}=/path/to/{SDIST_NAME}"
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               SDIST_REQUIREMENT, "-d", str(tmp)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise ModelUnavailable(f"could not run pip ({e}): {hint}") from e
        got = tmp / SDIST_NAME
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise ModelUnavailable(f"`pip download {SDIST_REQUIREMENT}` failed ({last[0]}): {hint}")
        sha = sha256_file(got)
        if sha != SDIST_SHA256:
            raise ModelUnavailable(
                f"PyPI returned {SDIST_NAME} with sha256 {sha[:16]}..., expected {SDIST_SHA256[:16]}...: "
                f"retry later, or {hint}"
            )
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract(sdist: Path, dest: Path) -> None:
    """Copy the wanted members into a temporary folder, then rename it into place (all or nothing)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir()  # not mkdtemp: its 0700 mode would survive the rename
    wanted = {_PREFIX + m: m for m in MEMBERS}
    found: dict[str, str] = {}
    fix = f"delete {sdist} (or fix {SDIST_ENV}) and run again"
    try:
        try:
            with tarfile.open(sdist, "r:gz") as tar:
                for info in tar:
                    rel = wanted.get(info.name)
                    if rel is None or not info.isfile():
                        continue
                    src = tar.extractfile(info)
                    assert src is not None
                    out = tmp / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with src, open(out, "wb") as f:
                        shutil.copyfileobj(src, f, 1 << 20)
                    found[rel] = sha256_file(out)
                    if len(found) == len(wanted):
                        break  # members are stored together: no need to decompress the rest
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ModelUnavailable(f"cannot read {sdist} as a tar.gz ({e}): {fix}") from e
        missing = sorted(set(MEMBERS) - set(found))
        if missing:
            raise ModelUnavailable(f"{sdist} lacks {missing}: it is not the {SDIST_REQUIREMENT} sdist; {fix}")
        manifest = {"sdist": SDIST_REQUIREMENT, "sdist_sha256": SDIST_SHA256, "members": found}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if dest.exists():  # a stale or partial extraction
            shutil.rmtree(dest)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _extracted(dest):  # someone else finished first, or a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------------- readers
def _read_member(rel: str) -> Any:
    path = fetch_bigbench() / rel
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelUnavailable(f"cannot read {path} ({e}): delete {bigbench_dir()} and run again") from e


def squad_dev() -> list[dict]:
    """SQuAD v1.1 dev articles in SQuAD JSON format: [{title, paragraphs: [{context, qas}]}]."""
    return _read_member(SQUAD_DEV)["data"]


def squadshifts(name: str) -> list[dict]:
    """A SQuADShifts test set (new_wiki | nyt | reddit | amazon) as SQuAD JSON articles."""
    if name not in SQUADSHIFTS:
        raise BadInput(f"unknown SQuADShifts set {name!r}: choose one of {', '.join(SQUADSHIFTS)}")
    return _read_member(SQUADSHIFTS[name])["data"]


def disfl_qa() -> list[dict]:
    """Disfl-QA as BIG-bench stores it: 8,000 items {input, target}; target "unknown" = unanswerable.

    Text is space-tokenized ("Earth ' s"); split an item with `disfl_qa_parts` and clean the
    question with `detokenize`.
    """
    return _read_member(DISFL_QA)["examples"]


def disfl_qa_parts(item: dict) -> tuple[str, str]:
    """Split a Disfl-QA item's input into (question, context), both still tokenized.

    >>> disfl_qa_parts({"input": "Who ?  \\ncontext: Tesla . ", "target": "x"})
    ('Who ?', 'Tesla .')
    """
    question, sep, context = item["input"].partition("\ncontext: ")
    if not sep:
        raise BadInput(
            f"Disfl-QA item without a context: {item['input'][:80]!r}: the file is not disfl_qa/task.json"
        )
    return question.strip(), context.strip()


def load_squad_json(path: str | Path) -> list[dict]:
    """Read a user's SQuAD-format file ({"data": [...]} or a bare list of articles) and check its shape."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise BadInput(f"{path} does not exist: give the path of a SQuAD JSON file") from e
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text: save it as UTF-8 JSON") from e
    except json.JSONDecodeError as e:
        raise BadInput(f"{path} is not valid JSON (line {e.lineno}: {e.msg}): fix the file") from e
    articles = raw.get("data") if isinstance(raw, dict) else raw
    if not isinstance(articles, list):
        raise BadInput(f'{path}: expected {{"data": [articles]}} (SQuAD format): fix the file')
    for a, article in enumerate(articles):
        where = f"{path}: data[{a}]"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise BadInput(f"{where} has no 'paragraphs' list: fix the file (SQuAD format)")
        for p, para in enumerate(paragraphs):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise BadInput(f"{where}.paragraphs[{p}] has no 'context' string: fix the file")
            qas = para.get("qas")
            if not isinstance(qas, list):
                raise BadInput(f"{where}.paragraphs[{p}] has no 'qas' list: fix the file")
            for q, qa in enumerate(qas):
                ok = (
                    isinstance(qa, dict)
                    and isinstance(qa.get("question"), str)
                    and isinstance(qa.get("answers", []), list)
                    and all(
                        isinstance(x, dict) and isinstance(x.get("text"), str) for x in qa.get("answers", [])
                    )
                )
                if not ok:
                    raise BadInput(
                        f"{where}.paragraphs[{p}].qas[{q}] needs a 'question' string and an 'answers' list of "
                        f"{{'text': ...}}: fix the file"
                    )
    return articles


# -------------------------------------------------------------------------------------- text helpers
def normalize_passage(text: str) -> str:
    """The text a passage hash is taken over: NFKC, casefolded, letters and digits only.

    Dropping every space and punctuation mark makes it blind to tokenization, which is the point:
    >>> normalize_passage("The Earth ' s atmosphere ( see Occurrence ) .")
    'theearthsatmosphereseeoccurrence'
    >>> normalize_passage("The Earth's atmosphere (see Occurrence).")
    'theearthsatmosphereseeoccurrence'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if c.isalnum())


def passage_hash(text: str) -> str:
    """sha256 (hex) of `normalize_passage(text)`: equal for a passage and its tokenized or re-spaced copy."""
    return sha256_text(normalize_passage(text))


def eval_passage_hashes() -> set[str]:
    """Hashes of every SQuAD v1.1 dev paragraph and Disfl-QA context (cached in data_dir())."""
    cache = data_dir() / _HASHES_FILE
    try:
        saved = json.loads(cache.read_text())
        if saved.get("hash_version") == HASH_VERSION and saved.get("sdist_sha256") == SDIST_SHA256:
            return set(saved["hashes"])
    except (OSError, ValueError, KeyError):
        pass
    hashes = {passage_hash(p["context"]) for a in squad_dev() for p in a["paragraphs"]}
    hashes |= {passage_hash(disfl_qa_parts(item)[1]) for item in disfl_qa()}
    payload = {"hash_version": HASH_VERSION, "sdist_sha256": SDIST_SHA256, "hashes": sorted(hashes)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache, json.dumps(payload) + "\n")
    return hashes


_UNICODE_ESCAPE = re.compile(r"(?:\\ )+u([0-9a-fA-F]{4})")
_CONTRACTION = re.compile(r"(\w) (['’]) (s|t|re|ve|ll|d|m)\b", re.IGNORECASE)
_DETOK_RULES = [
    (re.compile(r"(\d) ([.:]) (?=\d)"), r"\1\2"),  # 20 . 8 -> 20.8, 10 : 30 -> 10:30
    (re.compile(r"(?<![\d,])(\d{1,3}) , (?=\d{3}\b)"), r"\1,"),  # 1 , 000 -> 1,000 (not 1563 , 1593)
    (re.compile(r"\b([a-z]) \. (?=[a-z] \.)"), r"\1."),  # e . g . -> e.g .
    (re.compile(r"\b([A-Z]) \. (?=[A-Z]\b|\d)"), r"\1."),  # U . S . -> U.S ., X . 25 -> X.25
    (re.compile(r"\b([A-Z]{1,2}) & (?=[A-Z]{1,2}\b)"), r"\1&"),  # AT & T -> AT&T, S & P -> S&P
    (re.compile(r"(\w) ([-/–—]) (?=\w)"), r"\1\2"),  # al - Tawhid, June / July, 1914 – 1918
    (re.compile(r"(\d) °"), r"\1°"),  # 90 ° C -> 90° C
    (re.compile(r"° (?=[CFNSEW]\b|\d)"), "°"),  # 90° C -> 90°C, 35° 48 -> 35°48
    (re.compile(r"([(\[{$£€#‘]) "), r"\1"),  # ( x -> (x, $ 20 -> $20
    (re.compile(r" ([)\]},.?!:;%’])"), r"\1"),  # x ) -> x), word ? -> word?
]


def detokenize(text: str) -> str:
    """Undo Disfl-QA's space tokenization, as far as it can be undone.

    >>> detokenize("What is the Earth ' s atmosphere ( see Occurrence ) ?  ")
    "What is the Earth's atmosphere (see Occurrence)?"
    >>> detokenize('Who wrote \\\\ " The American War \\\\ " in 1 , 914 ?')
    'Who wrote "The American War" in 1,914?'
    """
    text = _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = text.replace('\\ "', '"').replace("\\ ", "")
    text = " ".join(text.split())
    text = _CONTRACTION.sub(r"\1\2\3", text)
    text = _pair_quotes(text, '"')
    text = _pair_quotes(text, "'")
    for pattern, repl in _DETOK_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def _pair_quotes(text: str, q: str) -> str:
    """Attach quote tokens to words: pairs become open/close quotes, apostrophes join their word.

    For ': "d ' Alsace" and "Jama ' at" are elisions (glued both sides), "States ' control" a plural
    possessive; whatever is left pairs up as quotes if it can, else glues to the word before.
    """
    tokens = text.split(" ")
    if q == "'":
        for i in range(1, len(tokens) - 1):
            prev, nxt = tokens[i - 1], tokens[i + 1]
            if tokens[i] != q or not prev[-1:].isalpha() or not nxt[:1].isalpha():
                continue
            if prev in ("d", "l", "D", "L") or (nxt[0].islower() and prev[-1] not in "sS"):
                tokens[i - 1], tokens[i], tokens[i + 1] = "", "", prev + q + nxt
    tokens = [t for t in tokens if t]
    idx = [i for i, t in enumerate(tokens) if t == q]
    if not idx:
        return " ".join(tokens)
    if len(idx) % 2 and q == "'":
        for i in idx:  # an odd count cannot pair: take each as a possessive
            if i > 0:
                tokens[i - 1] += q
                tokens[i] = ""
        return " ".join(t for t in tokens if t)
    for n, i in enumerate(idx):
        if n % 2 == 0 and i + 1 < len(tokens):  # opening: glue to the next token
            tokens[i + 1] = q + tokens[i + 1]
            tokens[i] = ""
        elif n % 2 == 1 and i > 0:  # closing: glue to the previous token
            tokens[i - 1] += q
            tokens[i] = ""
    return " ".join(t for t in tokens if t)
