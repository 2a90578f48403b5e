"""The corpus-absent abstention test: questions whose article is not in the index at all.

Disfl-QA (the bundled unanswerables) tests declining a near miss: a twisted question on a paragraph the
index holds. This tests the plain case. A few articles of the bundled corpus are held out of a second
index, and their SQuAD dev questions are asked against it: whatever the retriever finds comes from other
articles, so the only right answer is to decline.

    held = held_out(["Oxygen.txt", "Rhine.txt", ...])        # 5 names, the same on every machine
    pool = absent_pool(testset.questions, held)             # their SQuAD questions, now unanswerable
    index = ensure_index(Path("corpus"), held, main_index)  # RAG_HOME/data/absent-index, incremental

The held-out articles depend only on the corpus's file names (not on the test-set sample or the seed).
The second index uses the main index's embedder and chunking, so the two tests read comparable hits,
and it copies the main index's vectors for the chunks both hold instead of embedding them again.
`add_absent` does all of it for `rag eval --testset`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from eval.testset import ABSENT_ORIGIN, DISFL_ORIGIN, Question, TestSet
from rag.config import data_dir
from rag.errors import BadInput, RagError

log = logging.getLogger(__name__)

N_HELD_OUT = 5  # articles left out of the held-out index (of the bundled corpus's 48)
RULE = "corpus-absent-v1"  # salt of the held-out choice; changing it changes the articles
ID_PREFIX = "absent:"  # corpus-absent ids never collide with the SQuAD ids they copy
MAX_DEFAULT = 100  # default number of corpus-absent questions (at most as many as the Disfl-QA ones)

Progress = Callable[[str, int, int], None]  # (phase, done, total), as indexing.build reports it


def held_out(names: Sequence[str], n: int = N_HELD_OUT) -> tuple[str, ...]:
    """The `n` names whose sha256(RULE + name) sorts first, sorted: a fixed, seeded pick.

    >>> held_out(["a.txt", "b.txt", "c.txt", "d.txt"], 2) == held_out(["d.txt", "c.txt", "b.txt", "a.txt"], 2)
    True
    >>> len(held_out(["a.txt", "b.txt"], 5))
    2
    """
    rank = sorted(sorted(set(names)), key=lambda s: hashlib.sha256(f"{RULE}:{s}".encode()).hexdigest())
    return tuple(sorted(rank[:n]))


def corpus_names(root: Path) -> list[str]:
    """What `rag index root` would index, by relative name (hidden files and .ragignore left out)."""
    from indexing.load import iter_files

    return [rel for _, rel in iter_files([Path(root)])]


def absent_pool(questions: Sequence[Question], held: Sequence[str]) -> list[Question]:
    """The answerable questions on a held-out article, relabelled: unanswerable, origin "corpus_absent",
    id prefixed, and no gold paragraph (it is not in the index, so no reader may be given it).

    >>> q = Question("1", "Who?", ("Ann",), False, source="A.txt", start=0, end=9, origin="squad_dev")
    >>> [(a.id, a.unanswerable, a.answers, a.start, a.origin) for a in absent_pool([q], ["A.txt"])]
    [('absent:1', True, (), None, 'corpus_absent')]
    """
    keep = set(held)
    return [
        replace(
            q,
            id=ID_PREFIX + q.id,
            answers=(),
            unanswerable=True,
            paragraph=None,
            start=None,
            end=None,
            context=None,
            origin=ABSENT_ORIGIN,
        )
        for q in questions
        if not q.unanswerable and q.source in keep
    ]


def sample_absent(pool: Sequence[Question], n: int, seed: int = 0) -> list[Question]:
    """A seeded sample of `n` of `pool`, in pool order; with one seed a smaller sample is part of a larger.

    >>> pool = [Question(str(i), "q?", (), True) for i in range(50)]
    >>> small, big = sample_absent(pool, 5, 1), sample_absent(pool, 20, 1)
    >>> len(small), set(small) <= set(big)
    (5, True)
    """
    order = list(range(len(pool)))
    random.Random(f"{seed}:{ABSENT_ORIGIN}").shuffle(order)
    return [pool[i] for i in sorted(order[: max(n, 0)])]


def default_count(questions: Sequence[Question]) -> int:
    """As many corpus-absent questions as the sample has Disfl-QA ones, at most MAX_DEFAULT: the two
    abstention tests then weigh the same, and a quick --limit run stays quick.

    >>> default_count([Question(str(i), "q?", (), True, origin="disfl_qa") for i in range(7)])
    7
    """
    return min(MAX_DEFAULT, sum(q.origin == DISFL_ORIGIN for q in questions))


def absent_index_dir() -> Path:
    return data_dir() / "absent-index"


# ---------------------------------------------------------------- the held-out index
def _manifest(location) -> dict | None:
    from indexing.backends import manifest_text

    text = manifest_text(location)
    return None if text is None else json.loads(text)


def _is_current(man: dict | None, want: dict[str, str], main: dict) -> bool:
    """True when manifest `man` holds exactly the files `want` (name -> sha256), embedded and chunked as
    the main index's manifest `main` says: then nothing needs to load."""
    if man is None or man.get("embedder") != main["embedder"] or man.get("chunking") != main["chunking"]:
        return False
    return {rel: f.get("sha256") for rel, f in man.get("files", {}).items()} == want


class ReusingEmbedder:
    """An embedder that hands back the main index's vector for a chunk text it already holds (same
    embedder and chunking: the same vector) and embeds only the rest with `inner`."""

    def __init__(self, inner, known: dict[str, np.ndarray]):
        self.inner, self.known = inner, known
        self.name, self.dim, self.max_tokens = inner.name, inner.dim, inner.max_tokens
        self.reused = 0  # texts served from the main index

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def encode(self, texts: list[str], batch_size: int = 32, progress=None) -> np.ndarray:
        missing = [t for t in texts if t not in self.known]
        new = dict(zip(missing, self.inner.encode(missing, batch_size, progress))) if missing else {}
        self.reused += len(texts) - len(missing)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.known[t] if t in self.known else new[t] for t in texts]).astype(np.float32)


def _main_vectors(main_index, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Chunk text -> vector of the main index's chunks of these files ({} when it cannot be read)."""
    from indexing.backends import open_index

    try:
        idx = open_index(main_index)
    except (RagError, OSError) as e:  # only an optimization: without it the held-out index is embedded
        log.info("main index vectors not reused (%s)", e)
        return {}
    try:
        return {c.text: np.array(v) for rel in names for c, v in idx.db.by_file(rel)}
    finally:
        idx.db.close()


def ensure_index(
    root: Path,
    held: Sequence[str],
    main_index,
    index_dir: Path | None = None,
    embedder=None,
    progress: Progress | None = None,
) -> Path:
    """The index of `root` minus the `held` files, built or updated in `index_dir` (default
    RAG_HOME/data/absent-index) with the embedder and chunking of `main_index` (a folder or URL).

    Nothing loads when it is already current (same files and hashes, same embedder and chunking);
    a changed corpus updates it incrementally, a changed embedder or chunking rebuilds it.
    """
    from indexing.backends import display
    from indexing.build import build_index
    from indexing.embed import get_embedder
    from indexing.load import iter_files
    from rag.config import IndexConfig
    from rag.files import sha256_file

    index_dir = Path(index_dir or absent_index_dir())
    main = _manifest(main_index)
    if main is None:
        raise BadInput(
            f"no index at {display(main_index)} to take the embedder from: run `rag index corpus/` "
            "first, or pass --absent 0"
        )
    held_set = set(held)
    files = [(p, rel) for p, rel in iter_files([Path(root)]) if rel not in held_set]
    if not files:
        raise BadInput(f"{root}: nothing left to index once {', '.join(held)} are held out")
    old = _manifest(index_dir)
    if _is_current(old, {rel: sha256_file(p) for p, rel in files}, main):
        return index_dir
    cfg = IndexConfig(
        embedder=main["embedder"]["name"],
        chunk_tokens=main["chunking"]["chunk_tokens"],
        chunk_overlap=main["chunking"]["chunk_overlap"],
    )
    rebuild = old is not None and (old["embedder"] != main["embedder"] or old["chunking"] != main["chunking"])
    emb = ReusingEmbedder(
        embedder or get_embedder(cfg.embedder), _main_vectors(main_index, [rel for _, rel in files])
    )
    # One root per file: a file root is indexed under its own name, as corpus/'s files are in the main index.
    build_index([p for p, _ in files], index_dir, cfg, rebuild=rebuild, embedder=emb, progress=progress)
    log.info("held-out index %s: %d chunk vectors copied from the main index", index_dir, emb.reused)
    return index_dir


# ---------------------------------------------------------------- into a run
def add_absent(
    testset: TestSet,
    questions: Sequence[Question],
    n: int | None,
    seed: int,
    main_index,
    index_dir: Path | None = None,
    embedder=None,
    progress: Progress | None = None,
) -> tuple[TestSet, list[Question], Path | None]:
    """The bundled test set with `n` corpus-absent questions added (None = default_count(questions),
    0 = none): (test set, questions to ask, the held-out index for EvalConfig.absent_index).

    The corpus-absent questions join the test set (its sha256 then covers them, so the report never
    mixes runs with and without them) and are appended to `questions`. They are drawn apart from
    --limit: the sample's own answerable/unanswerable mix is untouched.
    """
    n = default_count(questions) if n is None else n
    if n < 0:
        raise BadInput(f"--absent must be 0 or more, got {n}")
    if n == 0:
        return testset, list(questions), None
    root = Path(testset.corpus_root or "")
    held = held_out(corpus_names(root))
    pool = absent_pool(testset.questions, held)
    if not pool:
        raise BadInput(
            f"no test question is about the held-out articles {', '.join(held)} of {root}: "
            "pass --absent 0 (the corpus-absent test needs the bundled corpus)"
        )
    chosen = sample_absent(pool, n, seed)
    where = ensure_index(root, held, main_index, index_dir, embedder, progress)
    h = hashlib.sha256(testset.sha256.encode())
    h.update(json.dumps({"held_out": held, "ids": [q.id for q in chosen]}).encode())
    ts = replace(
        testset,
        questions=[*testset.questions, *chosen],
        sha256=h.hexdigest(),
        absent={"held_out": list(held), "n": len(chosen), "pool": len(pool)},
    )
    return ts, [*questions, *chosen], where
