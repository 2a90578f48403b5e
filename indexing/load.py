"""Files -> documents. One loader per file type; anything unreadable is skipped with a reason.

    >>> [d.doc for d in load_file(Path("notes.md"), "notes.md")]   # doctest: +SKIP
    ['notes.md']

Offsets of chunks are character offsets into `Document.text`: for .txt/.md/.rst that is the file
itself (decoded as UTF-8); for .html it is the visible text; for .pdf the page texts joined by blank
lines; for .jsonl each record's text field is its own document ("file.jsonl#3" for line 3).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

TEXT_EXTS = {".txt", ".md", ".markdown", ".rst", ".text"}
HTML_EXTS = {".html", ".htm"}
SUPPORTED = TEXT_EXTS | HTML_EXTS | {".pdf", ".jsonl"}
JSONL_TEXT_FIELDS = ("text", "content", "context", "body", "page_content")
IGNORE_FILE = ".ragignore"


@dataclass(frozen=True)
class Document:
    doc: str  # name used in citations: path relative to the indexed root (plus "#line" for jsonl)
    text: str


class Skip(Exception):
    """This file cannot be indexed; the message says why."""


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_ignore(root: Path) -> list[str]:
    p = root / IGNORE_FILE
    if not p.is_file():
        return []
    lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def iter_files(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """Yield (path, relative name) for every file under the given paths, sorted, skipping hidden
    files and folders and anything matched by a root's .ragignore (glob patterns, one per line).

    The relative name is the path relative to the given root folder (or the file name for a file);
    with several roots, names are prefixed by the root's own name to keep them unique.
    """
    multi = len(paths) > 1
    for root in paths:
        if root.is_file():
            yield root, root.name
            continue
        patterns = _read_ignore(root)
        for p in sorted(root.rglob("*")):
            rel_parts = p.relative_to(root).parts
            if any(part.startswith(".") for part in rel_parts) or not p.is_file():
                continue
            rel = "/".join(rel_parts)
            if _ignored(rel, patterns):
                continue
            yield p, (f"{root.resolve().name}/{rel}" if multi else rel)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise Skip("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Skip(f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _html_text(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    lines = [ln.strip() for ln in soup.get_text("\n").splitlines()]
    # Keep paragraph breaks: runs of empty lines collapse to one blank line.
    out: list[str] = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as e:
        raise Skip(f"unreadable PDF ({e})") from e
    return "\n\n".join(p for p in pages if p)


def _jsonl_docs(data: bytes, rel: str) -> list[Document]:
    docs = []
    for i, line in enumerate(_decode(data).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise Skip(f"line {i} is not JSON ({e.msg})") from e
        text = None
        if isinstance(rec, dict):
            text = next((rec[f] for f in JSONL_TEXT_FIELDS if isinstance(rec.get(f), str)), None)
        elif isinstance(rec, str):
            text = rec
        if text is None:
            raise Skip(f"line {i} has no text field (expected one of {', '.join(JSONL_TEXT_FIELDS)})")
        if text.strip():
            docs.append(Document(doc=f"{rel}#{i}", text=text))
    return docs


def load_file(path: Path, rel: str) -> list[Document]:
    """Load one file into documents, or raise Skip with a one-line reason."""
    ext = path.suffix.lower()
    if ext not in SUPPORTED:
        raise Skip(f"unsupported file type '{ext or path.name}' (supported: {', '.join(sorted(SUPPORTED))})")
    if ext == ".pdf":
        text = _pdf_text(path)
        docs = [Document(rel, text)] if text.strip() else []
    else:
        data = path.read_bytes()
        if ext == ".jsonl":
            docs = _jsonl_docs(data, rel)
        elif ext in HTML_EXTS:
            docs = [Document(rel, _html_text(data))]
        else:
            docs = [Document(rel, _decode(data))]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise Skip("empty (no text)")
    return docs
