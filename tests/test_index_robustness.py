"""Bad inputs to `rag index` / `rag search` (issue 12, item 6): every user mistake is one line on
stderr and exit 1, nothing the user saved is lost, and chunking stays linear on huge inputs."""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import HashEmbedder
from typer.testing import CliRunner

from indexing import load, store
from indexing.build import build_index
from indexing.chunk import SEPARATORS, chunk_text, make_splitter
from indexing.embed import register_embedder
from indexing.retrieve import open_retriever
from rag.cli import app
from rag.config import IndexConfig
from rag.errors import BadInput, IndexBusy, IndexCorrupt

CFG = IndexConfig(chunk_tokens=12, chunk_overlap=3)
runner = CliRunner()


@pytest.fixture(autouse=True)
def fake_embedder():
    register_embedder("fake-hash", HashEmbedder)


@pytest.fixture
def docs(tmp_path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "broncos.txt").write_text("The Denver Broncos won Super Bowl 50 in Santa Clara.")
    (d / "mercury.md").write_text("Mercury is the smallest planet.")
    return d


def build(docs: Path, idx: Path, **kw):
    return build_index([docs], idx, kw.pop("cfg", CFG), embedder=HashEmbedder(), **kw)


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def index_cli(*args: str):
    return cli("index", *args, "--embedder", "fake-hash")


def assert_one_line_error(r, message: str) -> None:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0], lines[0]


def generations(idx: Path) -> list[str]:
    return sorted(p.name for p in idx.iterdir() if p.is_dir())


def current(idx: Path) -> str:
    return json.loads((idx / "CURRENT").read_text())["generation"]


# ---------------------------------------------------------------- 1. only ever delete what we wrote
def test_a_folder_of_the_users_own_things_is_refused_untouched(docs, tmp_path):
    d = tmp_path / "d"
    (d / "g2024_trip").mkdir(parents=True)
    (d / "g2024_trip" / "photo.txt").write_text("beach")
    (d / "g7").mkdir()
    r = index_cli(docs, "--index", d)
    assert_one_line_error(r, "is not empty and is not a rag index")
    assert sorted(p.name for p in d.iterdir()) == ["g2024_trip", "g7"]
    assert (d / "g2024_trip" / "photo.txt").read_text() == "beach"


def test_builds_delete_only_their_own_generations(docs, tmp_path):
    idx = tmp_path / "idx"
    build(docs, idx)
    assert (idx / store.MARKER).is_file() and (idx / current(idx) / store.GEN_MARKER).is_file()
    # the user later drops folders into the index folder, one even named like a generation
    for name in ("g2024_trip", "g7", "g999999"):
        (idx / name).mkdir()
        (idx / name / "keep.txt").write_text("mine")
    (docs / "new.txt").write_text("Photosynthesis turns light into chemical energy.")
    build(docs, idx)
    (docs / "new.txt").write_text("Volcanoes erupt.")
    build(docs, idx)
    assert generations(idx) == sorted(["g2024_trip", "g7", "g999999", current(idx)])
    assert all((idx / n / "keep.txt").read_text() == "mine" for n in ("g2024_trip", "g7", "g999999"))
    assert current(idx) == "g1000001"  # numbered past the user's g999999 (two builds), and still ours
    assert open_retriever(idx, mode="bm25").search("volcanoes", 1)[0].chunk.doc == "new.txt"


def test_an_index_from_before_the_marker_is_adopted(docs, tmp_path):
    idx = tmp_path / "idx"
    build(docs, idx)
    old = current(idx)
    (idx / store.MARKER).unlink()  # what an index written by an older rag looks like
    (idx / old / store.GEN_MARKER).unlink()
    (docs / "new.txt").write_text("Photosynthesis turns light into chemical energy.")
    assert build(docs, idx).files_indexed == 1
    assert (idx / store.MARKER).is_file()
    assert generations(idx) == [current(idx)] and current(idx) != old  # the adopted one was ours to replace


def test_an_empty_existing_folder_is_fine(docs, tmp_path):
    (tmp_path / "empty").mkdir()
    assert build(docs, tmp_path / "empty").files_indexed == 2


# ---------------------------------------------------------------- 2. one writer at a time
HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from fakes import HashEmbedder
    from indexing import store
    from indexing.build import build_index
    from rag.config import IndexConfig
    real = store.build_bm25
    def slow(texts, out):
        real(texts, out)
        Path({writing!r}).write_text("x")
        while not Path({go!r}).exists():
            time.sleep(0.05)
    store.build_bm25 = slow
    build_index([Path({docs!r})], Path({idx!r}), IndexConfig(chunk_tokens=12, chunk_overlap=3), embedder=HashEmbedder())
    """
)


def test_a_second_build_fails_at_once_while_another_writes(docs, tmp_path):
    idx, writing, go = tmp_path / "idx", tmp_path / "writing", tmp_path / "go"
    script = HOLD_LOCK.format(
        tests=str(Path(__file__).parent), writing=str(writing), go=str(go), docs=str(docs), idx=str(idx)
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
    try:
        deadline = time.time() + 60
        while not writing.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert writing.exists(), "the first build never reached its write phase"
        t = time.perf_counter()
        with pytest.raises(IndexBusy, match=f"another rag index is writing to {idx}; wait for it to finish"):
            build(docs, idx)
        assert time.perf_counter() - t < 10  # fails at once, does not queue
        assert_one_line_error(index_cli(docs, "--index", idx), "another rag index is writing to")
    finally:
        go.write_text("x")
        assert proc.wait(60) == 0
    # the first build's generation is complete and loadable; the lock went with its process
    assert open_retriever(idx, mode="bm25").search("smallest planet", 1)[0].chunk.doc == "mercury.md"
    (docs / "new.txt").write_text("Volcanoes erupt.")
    assert build(docs, idx).files_indexed == 1


# ---------------------------------------------------------------- 3. reads stay inside the roots
@pytest.fixture
def linked(docs, tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The root password is hunter2.")
    (outside / "more").mkdir()
    (outside / "more" / "notes.txt").write_text("Private notes about hunter2.")
    (docs / "passwd.txt").symlink_to(outside / "secret.txt")
    (docs / "elsewhere").symlink_to(outside / "more")
    (docs / "alias.md").symlink_to(docs / "mercury.md")  # inside the root: fine
    (docs / "loop").symlink_to(docs)  # a cycle, harmless either way
    return docs


def test_symlinks_out_of_the_root_are_skipped_with_a_warning(linked, tmp_path):
    r = index_cli(linked, "--index", tmp_path / "idx", "--json")
    assert r.exit_code == 0, r.output
    assert "skipped passwd.txt: symlink to" in r.stderr and "pass --follow-symlinks" in r.stderr
    assert "skipped elsewhere: symlink to folder" in r.stderr
    files = store.open_index(tmp_path / "idx").manifest["files"]
    assert sorted(files) == ["alias.md", "broncos.txt", "mercury.md"]
    assert not open_retriever(tmp_path / "idx", mode="bm25").search("hunter2 password", 5)


def test_follow_symlinks_indexes_them_explicitly(linked, tmp_path):
    r = index_cli(linked, "--index", tmp_path / "idx", "--follow-symlinks")
    assert r.exit_code == 0, r.output
    files = store.open_index(tmp_path / "idx").manifest["files"]
    assert sorted(files) == ["alias.md", "broncos.txt", "elsewhere/notes.txt", "mercury.md", "passwd.txt"]


def test_broken_and_looping_symlinks_are_warnings(docs, tmp_path):
    (docs / "gone.txt").symlink_to(tmp_path / "deleted.txt")
    (docs / "a.txt").symlink_to(docs / "b.txt")
    (docs / "b.txt").symlink_to(docs / "a.txt")
    r = index_cli(docs, "--index", tmp_path / "idx", "--json")
    assert r.exit_code == 0, r.output
    for name in ("gone.txt", "a.txt", "b.txt"):
        assert f"skipped {name}: broken symlink" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["files_indexed"] == 2


# ---------------------------------------------------------------- 4. chunking: same chunks, linear time
def _langchain(count, size, overlap):
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        separators=SEPARATORS,
        chunk_size=size,
        chunk_overlap=overlap,
        length_function=count,
        keep_separator="end",
        strip_whitespace=True,
    )


def _fuzz_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = [
        "a",
        "bb",
        " ",
        "   ",
        "\n",
        "\n\n",
        ". ",
        "? ",
        "! ",
        ", ",
        "; ",
        "word",
        "\t",
        "é",
        "漢",
        " \n ",
    ]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(n)]


@pytest.mark.parametrize("size,overlap", [(200, 32), (12, 3), (5, 0), (3, 2), (1, 0)])
def test_splitter_gives_langchains_chunks(size, overlap):
    """Existing indexes record splitter "recursive-v1": the rewrite must cut exactly where LangChain did."""
    corpus = sorted((Path(__file__).parent.parent / "corpus").glob("*.txt"))[:4]
    texts = [p.read_text() for p in corpus] + _fuzz_texts(150)
    for name, count in {"words": lambda t: len(t.split()), "chars": len}.items():
        for text in texts if name == "words" else texts[4:]:
            ours = make_splitter(count, size, overlap)
            assert ours.split_text(text) == _langchain(count, size, overlap).split_text(text), (
                name,
                text[:60],
            )
            assert all(text[c.start : c.end] == c.text for c in chunk_text("d", text, ours))


def _big_inputs() -> dict[str, str]:
    rng = random.Random(0)
    words = [f"w{rng.randint(0, 5000)}" for _ in range(60_000)]
    return {
        "1 MB single line, no separators": "".join(rng.choices("abcdefghij0123456789+/", k=1_000_000)),
        "1 MB single line of words": " ".join(words * 3)[:1_000_000],
        "100k tiny lines": "".join(f"line {i}\n" for i in range(100_000)),
        "words padded by 300 spaces": "".join(w + " " * 300 for w in words[:3000]),
    }


@pytest.mark.parametrize("name", list(_big_inputs()))
def test_big_inputs_chunk_correctly_with_linear_token_counting(name):
    text = _big_inputs()[name]
    counted = [0]

    def count(t: str) -> int:
        counted[0] += len(t)
        return len(t.split())

    chunks = chunk_text("big.txt", text, make_splitter(count, 200, 32))
    assert chunks and all(text[c.start : c.end] == c.text for c in chunks)
    assert all(len(c.text.split()) <= 200 for c in chunks)
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})  # strictly increasing
    covered = sum(len(c.text.split()) for c in chunks)
    assert covered >= len(text.split())  # every word is in some chunk (overlap counts some twice)
    # each character is tokenized a bounded number of times (once per separator level at most)
    assert counted[0] <= len(SEPARATORS) * len(text)


def test_offsets_in_repetitive_text_are_the_real_positions():
    text = "ab " * 1000
    chunks = chunk_text("rep.txt", text, make_splitter(lambda t: len(t.split()), 10, 2))
    # 10 words of 3 characters, the next chunk starting 2 words before the end of the previous one
    assert [c.start for c in chunks[:4]] == [0, 24, 48, 72]
    assert all(c.text == "ab " * 9 + "ab" for c in chunks[:-1])


# ---------------------------------------------------------------- 5. one line instead of a traceback
def test_very_deep_folders(tmp_path):
    root = leaf = tmp_path / "deep"
    root.mkdir()
    chain = []
    try:
        for _ in range(1100):  # one level at a time: mkdir(parents=True) itself recurses too deep
            leaf = leaf / "d"
            leaf.mkdir()
            chain.append(leaf)
        (leaf / "bottom.txt").write_text("The deepest document.")
        r = index_cli(root, "--index", tmp_path / "idx", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout.strip().splitlines()[-1])["files_indexed"] == 1
    finally:
        # bottom up, without recursion: pytest's own cleanup (shutil.rmtree) overflows on this tree
        # and would break the next test session that prunes old temporary folders
        (leaf / "bottom.txt").unlink(missing_ok=True)
        for d in reversed(chain):
            d.rmdir()


def test_index_that_is_a_file_fails_before_the_embedder_loads(docs, tmp_path):
    loaded = []
    register_embedder("fake-counted", lambda: loaded.append(1) or HashEmbedder())
    target = tmp_path / "index.txt"
    target.write_text("not a folder")
    r = cli("index", docs, "--index", target, "--embedder", "fake-counted")
    assert_one_line_error(r, "is a file, not a folder")
    assert not loaded and target.read_text() == "not a folder"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_chunk_tokens_must_be_positive(docs, value):
    assert_one_line_error(index_cli(docs, "--chunk-tokens", value), "--chunk-tokens must be at least 1")


@pytest.mark.parametrize(
    "toml,message",
    [
        ("[index]\nchunk_tokens = -5\n", "[index] chunk_tokens must be at least 1, got -5"),
        ("[index]\nbatch_size = 0\n", "[index] batch_size must be at least 1, got 0"),
        ('[retrieval]\nk = "five"\n', "[retrieval] k must be a whole number, got 'five'"),
        ("[retrieval]\ncandidates = -1\n", "[retrieval] candidates must be at least 1, got -1"),
        ("[retrieval]\nrrf_k = 0\n", "[retrieval] rrf_k must be at least 1, got 0"),
        ("[retrievl]\nk = 3\n", "unknown table [retrievl] (did you mean [retrieval]?)"),
        ("[index]\nchunk_tokens = true\n", "chunk_tokens must be a whole number, got True"),
        ("[reader]\nmodl = 'x'\n", "unknown key(s) in [reader]: ['modl']"),
    ],
)
def test_bad_rag_toml_is_one_line(docs, tmp_path, monkeypatch, toml, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rag.toml").write_text(toml)
    assert_one_line_error(index_cli(docs), message)  # the brackets survive rich's markup


def test_read_only_rag_home(docs, rag_home, monkeypatch):
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(rag_home)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert_one_line_error(
        index_cli(docs),
        f"cannot write to {rag_home / 'index'} (Read-only file system): set RAG_HOME to a writable folder",
    )


def _fail_bm25(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a real full tmpfs gave (checked by hand)


def _fail_sqlite(*a, **k):
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.parametrize("target", ["build_bm25", "write_dense"])
def test_disk_full_keeps_the_old_index(docs, rag_home, monkeypatch, target):
    assert index_cli(docs).exit_code == 0
    idx = rag_home / "index"
    before = (current(idx), generations(idx))
    (docs / "new.txt").write_text("Volcanoes erupt.")
    monkeypatch.setattr(store, target, _fail_bm25)
    assert_one_line_error(
        index_cli(docs), f"could not write the index to {idx} (the disk is full): free some"
    )
    assert (current(idx), generations(idx)) == before  # no half generation left, CURRENT unchanged
    r = cli("search", "smallest planet", "--mode", "bm25", "--json", "-k", "1")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["source"] == "mercury.md"


def test_sqlite_disk_full_keeps_the_old_index(docs, rag_home, monkeypatch):
    assert index_cli(docs).exit_code == 0
    idx = rag_home / "index"
    before = (current(idx), generations(idx))
    (docs / "new.txt").write_text("Volcanoes erupt.")
    real_add = store.ChunkDB.add
    monkeypatch.setattr(store.ChunkDB, "add", _fail_sqlite)
    assert_one_line_error(index_cli(docs), "(database or disk is full)")
    assert (current(idx), generations(idx)) == before
    monkeypatch.setattr(store.ChunkDB, "add", real_add)  # the disk has room again
    assert json.loads(index_cli(docs, "--json").stdout.strip().splitlines()[-1])["files_indexed"] == 1


# ---------------------------------------------------------------- 6. damage is reported, not papered over
@pytest.mark.parametrize("artifact", ["bm25", "dense.faiss", "chunks.sqlite"])
def test_a_damaged_index_is_reported_and_rebuild_repairs_it(docs, rag_home, artifact):
    import shutil

    assert index_cli(docs).exit_code == 0
    gen = rag_home / "index" / current(rag_home / "index")
    target = gen / artifact
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert_one_line_error(index_cli(docs), "rag index PATH --rebuild")  # not "unchanged"
    assert_one_line_error(cli("search", "planet", "--mode", "bm25"), "rag index PATH --rebuild")
    assert not (gen / "chunks.sqlite").exists() or artifact != "chunks.sqlite"  # reading never creates it
    assert index_cli(docs, "--rebuild").exit_code == 0
    r = cli("search", "smallest planet", "--mode", "hybrid", "--json", "-k", "1")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["source"] == "mercury.md"


def test_a_deleted_chunk_store_is_not_recreated_empty(docs, tmp_path):
    idx = tmp_path / "idx"
    build(docs, idx)
    db = idx / current(idx) / "chunks.sqlite"
    db.unlink()
    with pytest.raises(IndexCorrupt, match="chunks.sqlite is missing"):
        open_retriever(idx, mode="bm25")
    with pytest.raises(sqlite3.OperationalError):
        store.ChunkDB(db)  # read-only even when called directly
    assert not db.exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig", "utf-32"])
def test_text_with_a_byte_order_mark_is_decoded(tmp_path, encoding):
    text = "Café crème: the menu.\nSecond line."
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # the -be codec writes no BOM itself
    p = tmp_path / "menu.txt"
    p.write_bytes(data)
    assert [d.text for d in load.load_file(p, "menu.txt")] == [text]


def test_utf16_without_bom_is_still_binary(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes("hello".encode("utf-16-le"))
    with pytest.raises(load.Skip, match="binary"):
        load.load_file(p, "x.txt")


def test_unreadable_subfolder_is_a_warning(docs, tmp_path, monkeypatch):
    (docs / "secret").mkdir()
    (docs / "secret" / "a.txt").write_text("hidden away")
    real = os.scandir

    def scandir(path):
        if Path(path).name == "secret":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(load.os, "scandir", scandir)
    r = index_cli(docs, "--index", tmp_path / "idx", "--json")
    assert r.exit_code == 0, r.output
    assert "skipped secret/: unreadable folder (Permission denied)" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["files_indexed"] == 2


def test_unreadable_root_is_one_line(docs, monkeypatch):
    real = os.scandir

    def scandir(path):
        if Path(path) == docs:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)

    monkeypatch.setattr(load.os, "scandir", scandir)
    assert_one_line_error(index_cli(docs), f"cannot read {docs} (Permission denied): check its permissions")


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_search_is_refused(docs, query):
    assert index_cli(docs).exit_code == 0
    assert_one_line_error(cli("search", query), "the query is empty")


def test_library_errors_are_rag_errors(docs, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        build(docs, tmp_path / "f")
    with pytest.raises(BadInput, match="must be at least 1"):
        IndexConfig(chunk_tokens=0)
