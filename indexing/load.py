"""Files -> documents. One loader per file type; anything unreadable is skipped with a reason.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "notes.jsonl"
    >>> _ = p.write_text('{"text": "first"}\\n{"text": "second"}\\n')
    >>> [(d.doc, d.text) for d in load_file(p, "notes.jsonl")]
    [('notes.jsonl#1', 'first'), ('notes.jsonl#2', 'second')]

Offsets of chunks are character offsets into `Document.text`: for .txt/.md/.rst that is the file
itself (decoded by its byte-order mark, else as UTF-8); for .html it is the visible text; for .pdf the
page texts joined by blank lines; for .jsonl each record's text field is its own document
("file.jsonl#3" for line 3).
"""

from __future__ import annotations

import codecs
import fnmatch
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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


def _read_ignore(root: Path) -> list[str]:
    p = root / IGNORE_FILE
    if not p.is_file():
        return []
    lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


# on_skip(name, reason): a file or folder left out of the index, and why
OnSkip = Callable[[str, str], None]


def iter_files(
    paths: list[Path], follow_symlinks: bool = False, on_skip: OnSkip | None = None
) -> Iterator[tuple[Path, str]]:
    """Yield (path, relative name) for every file under the given paths, sorted, skipping hidden
    files and folders and anything matched by a root's .ragignore (glob patterns, one per line).

    The relative name is the path relative to the given root folder (or the file name for a file);
    with several roots, names are prefixed by the root's own name to keep them unique.

    Reads stay inside the roots: a symlink that resolves outside its root is reported to `on_skip`
    instead of followed, unless `follow_symlinks`. Symlinked folders inside the root are not walked
    (their files are listed under their real path). Unreadable folders are reported to `on_skip`.
    """
    multi = len(paths) > 1
    skip = on_skip or (lambda name, reason: None)
    for root in paths:
        if root.is_file():
            yield root, root.name
            continue
        patterns = _read_ignore(root)
        prefix = f"{root.resolve().name}/" if multi else ""
        for p, rel_parts in _walk(root, follow_symlinks, lambda rel, why, pre=prefix: skip(pre + rel, why)):
            rel = "/".join(rel_parts)
            if _ignored(rel, patterns):
                continue
            yield p, prefix + rel


def _walk(root: Path, follow_symlinks: bool, skip: OnSkip) -> list[tuple[Path, tuple[str, ...]]]:
    """Files under `root` as (path, parts relative to root), in sorted-path order.

    An explicit stack instead of recursion (Path.rglob overflowed Python's stack at ~1,000 nested
    folders); hidden entries are pruned before descending.
    """
    real_root = root.resolve()
    seen = {real_root}  # real folders already walked: a symlink cycle cannot loop
    found: list[tuple[Path, tuple[str, ...]]] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, parts = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            if not parts:  # nothing at all can be read: that is an error, not a warning
                raise Skip(f"cannot read {root} ({e.strerror or e}): check its permissions") from e
            skip("/".join(parts) + "/", f"unreadable folder ({e.strerror or e})")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, rel = Path(entry.path), (*parts, entry.name)
            if entry.is_symlink():
                target = Path(os.path.realpath(path))  # unlike Path.resolve (3.11), no error on a loop
                if not target.exists():
                    skip("/".join(rel), "broken symlink (its target is missing, or it loops)")
                    continue
                inside = target.is_relative_to(real_root)
                if not (inside or follow_symlinks):
                    kind = "folder " if target.is_dir() else ""
                    skip(
                        "/".join(rel),
                        f"symlink to {kind}{target} is outside {root} (pass --follow-symlinks to index it)",
                    )
                    continue
                if target.is_dir():
                    # a folder inside the root is walked under its real path already
                    if not inside and target not in seen:
                        seen.add(target)
                        stack.append((path, rel))
                    continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((path, rel))
            elif path.is_file():  # not a fifo, socket or broken link: reading those hangs or fails
                found.append((path, rel))
    return sorted(found, key=lambda t: t[1])


# Longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def _decode(data: bytes) -> str:
    """Bytes -> text: by the byte-order mark if there is one (Windows tools write UTF-16 with a BOM,
    full of NUL bytes, so check the BOM before calling NULs binary), else UTF-8.

    >>> _decode(codecs.BOM_UTF16_LE + "hi".encode("utf-16-le"))
    'hi'
    """
    encoding = next((enc for bom, enc in BOMS if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data[:8192]:
        raise Skip("binary file")
    try:
        text = data.decode(encoding or "utf-8")
    except UnicodeDecodeError as e:
        raise Skip(
            f"not {(encoding or 'utf-8').upper().removesuffix('-SIG')} text ({e.reason} at byte {e.start})"
        ) from e
    if "\x00" in text[:8192]:
        raise Skip("binary file")
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
