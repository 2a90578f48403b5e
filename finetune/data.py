"""RAFT-style grounded QA examples for training the reader.

Each example is one question with a few passages, formatted exactly as the reader is served
(`rag.prompt`). With probability P (default 0.8) the gold paragraph is among the passages, at a random
position, and the target is the short answer plus its citation, e.g. "two delegates [3]". Otherwise
the gold paragraph is left out and the target is the abstention sentence. The other passages are hard
negatives: paragraphs from the same pool that BM25 ranks high for the question but that do not
contain any gold answer (so an abstention target is never a lie).

Distractor count: each example draws k uniformly from [min_distractors, distractors] (default 1..4,
so 2 to 5 passages, mean 3.5). RAFT uses a fixed 1 + 4. A CPU hour buys a fixed number of tokens, and
the cost per example is linear in passages; a range keeps the mean prompt ~30% shorter than a fixed
1 + 4 while still covering what the reader is served: a single gold paragraph (the eval setting) up
to the five retrieved chunks of `rag ask` (citation numbers 1-5 all appear as targets).

Near misses (DataConfig.swap_rate, disfluent_rate), built by rule in finetune/nearmiss.py, are added
to each split: entity swaps ("What does Mr. Jeffries ...?" -> "What does Mr. Bloomberg ...?" over the
Jeffries paragraph; target: the abstention sentence) and Disfl-QA-style disfluent questions ("Who founded
X, no wait, when did Y open?"; target: the answer to the final question when its paragraph is shown,
else the abstention sentence). Example.kind tells them from the RAFT examples, which do not depend on
these settings; Dataset.stats counts each kind (train_swap, train_disfluent_answer, ...).

Sources: "squadshifts" (SQuADShifts new_wiki + nyt), "squadshifts:new_wiki,reddit", a SQuAD JSON
file, or a JSONL file of {question, context, answers[, title, id]} rows.

    >>> majority_answer(["Each brotherhood elects two delegates", "two delegates", "two delegates"])
    'two delegates'
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finetune import nearmiss
from finetune.examples import Example, majority_answer, negatives, source_name
from rag.config import data_dir
from rag.errors import BadInput, DataLeak
from rag.prompt import Passage
from rag.text import normalize_answer

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # bump when the example layout or selection logic changes (invalidates caches)
TWIST_RULES = 2  # finetune/nearmiss.py's twist rules; only in the cache key of data with twists
DEFAULT_SHIFTS = ("new_wiki", "nyt")


@dataclass(frozen=True)
class DataConfig:
    source: str = (
        "squadshifts"  # "squadshifts[:a,b]", a SQuAD JSON file or a JSONL {question, context, answers}
    )
    distractors: int = 4  # most distractor passages per example (RAFT: 4)
    min_distractors: int = 1  # fewest distractor passages per example; k is drawn uniformly in between
    p_gold: float = 0.8  # fraction of examples that include the gold paragraph (RAFT's P)
    val_fraction: float = 0.05  # fraction of articles held out for validation
    candidates: int = 12  # BM25 hits per question to draw hard negatives from
    seed: int = 0  # one seed for split, distractor choice, positions and gold-less draws
    leakage_guard: bool = True  # refuse passages that appear in SQuAD dev / Disfl-QA
    swap_rate: float = 0.05  # entity-swap near misses (target: abstain) added, per RAFT example
    disfluent_rate: float = 0.08  # Disfl-QA-style disfluent questions added, per RAFT example
    disfluent_answered: float = 0.5  # share of the disfluent ones whose final question a passage answers
    # SQuAD 2.0-style twists (antonym, negation; target: abstain) added, per RAFT example; off until a
    # training run measures them
    twist_rate: float = 0.0


@dataclass
class Dataset:
    train: list[Example]
    val: list[Example]
    source: str  # the DataConfig.source it was built from
    hash: str  # sha256 of the cached JSONL (stable for the same source and config)
    stats: dict = field(default_factory=dict)  # counts for the manifest
    path: Path | None = None  # the cache file


# ---------------------------------------------------------------- reading sources
@dataclass
class _Question:
    id: str
    question: str
    answers: list[str]
    para: int  # index into the paragraph pool


@dataclass
class _Pool:
    paragraphs: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    questions: list[_Question] = field(default_factory=list)
    raw_hash: str = ""  # sha256 of the raw source content


def _answers_of(a) -> list[str]:
    """Accept ["x"], [{"text": "x"}], {"text": ["x"]} (HF datasets), or "x"."""
    if isinstance(a, str):
        return [a]
    if isinstance(a, dict):
        t = a.get("text", [])
        return [t] if isinstance(t, str) else list(t)
    out = []
    for x in a or []:
        out.append(x["text"] if isinstance(x, dict) else str(x))
    return out


def _sample_questions(articles: list[dict], n: int, seed: str) -> list[dict]:
    """The articles with only a seeded sample of n of their questions kept (paragraphs stay as they are)."""
    refs = [
        (a, p, q)
        for a, art in enumerate(articles)
        for p, para in enumerate(art["paragraphs"])
        for q in range(len(para["qas"]))
    ]
    keep = set(random.Random(seed).sample(range(len(refs)), min(n, len(refs))))
    kept = {refs[i] for i in keep}
    return [
        {
            **art,
            "paragraphs": [
                {**para, "qas": [qa for q, qa in enumerate(para["qas"]) if (a, p, q) in kept]}
                for p, para in enumerate(art["paragraphs"])
            ],
        }
        for a, art in enumerate(articles)
    ]


def _articles_from_source(source: str) -> tuple[list[dict], str]:
    """SQuAD-format articles plus a content hash of what was read.

    Sources can be mixed with "+", and "@N" after one keeps a seeded sample of N of its questions:
    "squadshifts@2400+~/data/manpages-qa.jsonl" is 2,400 SQuADShifts questions plus every manual one.
    """
    if "+" in source:
        articles, hashes = [], []
        for part in source.split("+"):
            arts, h = _articles_from_source(part.strip())
            articles += arts
            hashes.append(h)
        return articles, hashlib.sha256("+".join(hashes).encode()).hexdigest()
    name, at, count = source.rpartition("@")
    if at and count.isdigit():
        arts, h = _articles_from_source(name)
        return _sample_questions(arts, int(count), f"{h}-{count}"), hashlib.sha256(
            f"{h}@{count}".encode()
        ).hexdigest()
    from assets import bigbench  # the data sets: bigbench sdist members, cached

    if source == "squadshifts" or source.startswith("squadshifts:"):
        names = source.split(":", 1)[1].split(",") if ":" in source else list(DEFAULT_SHIFTS)
        articles: list[dict] = []
        for name in names:
            arts = bigbench.squadshifts(name.strip())
            for a in arts:  # titles can repeat across sets: keep articles apart
                articles.append({**a, "title": f"{name.strip()}/{a.get('title', '')}"})
        h = hashlib.sha256(json.dumps(articles, sort_keys=True).encode()).hexdigest()
        return articles, h
    path = Path(source).expanduser()
    if not path.exists():
        raise BadInput(f"no training data at {path}: pass --data squadshifts, a SQuAD JSON or a JSONL file")
    if not path.is_file():
        raise BadInput(f"--data {path} is a folder: pass a SQuAD JSON or a JSONL file, or --data squadshifts")
    raw = path.read_bytes()
    h = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BadInput(
            f"{path}:{line} is not UTF-8 text (byte 0x{raw[e.start]:02x}): save the file as UTF-8"
        ) from e
    if path.suffix == ".jsonl":
        return _articles_from_jsonl(path, text), h
    try:
        return bigbench.load_squad_json(path), h
    except (ValueError, KeyError) as e:
        raise BadInput(f"{path} is not SQuAD JSON ({e}): use SQuAD v1.1 layout or JSONL rows") from e


def _articles_from_jsonl(path: Path, text: str) -> list[dict]:
    by_title: dict[str, dict[str, list]] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q, ctx = row["question"], row["context"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"{path}:{i}: need a JSON object with question, context, answers ({e})") from e
        if not isinstance(q, str) or not isinstance(
            ctx, str
        ):  # a number here crashed later, far from the row
            raise BadInput(f"{path}:{i}: 'question' and 'context' must be strings: fix that row")
        answers = _answers_of(row.get("answers"))
        title = str(row.get("title") or "ctx-" + hashlib.sha1(ctx.encode()).hexdigest()[:10])
        qa = {
            "id": str(row.get("id", f"{path.stem}-{i}")),
            "question": q,
            "answers": [{"text": a} for a in answers],
        }
        by_title.setdefault(title, {}).setdefault(ctx, []).append(qa)
    return [
        {"title": t, "paragraphs": [{"context": c, "qas": qas} for c, qas in paras.items()]}
        for t, paras in by_title.items()
    ]


def _pool_from_articles(articles: list[dict]) -> tuple[_Pool, dict]:
    """Flatten articles, deduplicating paragraphs (by passage hash) and questions."""
    from assets.bigbench import passage_hash

    pool = _Pool()
    seen_para: dict[str, int] = {}
    seen_q: set[tuple[str, int]] = set()
    dropped = Counter()
    for art in articles:
        title = str(art.get("title", ""))
        for para in art.get("paragraphs", []):
            ctx = para["context"].strip()
            h = passage_hash(ctx)
            if h in seen_para:
                dropped["duplicate_paragraphs"] += 1
                idx = seen_para[h]
            else:
                idx = seen_para[h] = len(pool.paragraphs)
                pool.paragraphs.append(ctx)
                pool.titles.append(title)
            for qa in para.get("qas", []):
                answers = [a for a in _answers_of(qa.get("answers")) if a.strip()]
                if not answers or qa.get("is_impossible"):
                    dropped["no_answer"] += 1
                    continue
                key = (normalize_answer(qa["question"]), idx)
                if key in seen_q:
                    dropped["duplicate_questions"] += 1
                    continue
                seen_q.add(key)
                pool.questions.append(
                    _Question(str(qa.get("id", len(pool.questions))), qa["question"].strip(), answers, idx)
                )
    return pool, dict(dropped)


def check_leakage(paragraphs: list[str]) -> None:
    """Raise DataLeak if any paragraph also appears in SQuAD v1.1 dev or Disfl-QA (normalized hash)."""
    from assets.bigbench import eval_passage_hashes, passage_hash

    held = eval_passage_hashes()
    overlap = sum(1 for p in paragraphs if passage_hash(p) in held)
    if overlap:
        raise DataLeak(
            f"{overlap} of {len(paragraphs)} training passages also appear in the evaluation sets "
            "(SQuAD v1.1 dev / Disfl-QA): remove them from the training data, or train on --data squadshifts"
        )


# ---------------------------------------------------------------- hard negatives
def _bm25_candidates(pool: _Pool, idx: list[int], questions: list[_Question], n: int) -> list[list[int]]:
    """For each question, pool indices (within `idx`) of the top-n BM25 paragraphs."""
    from rag.types import Chunk

    chunks = [
        Chunk(id=str(i), doc=pool.titles[i], text=pool.paragraphs[i], start=0, end=len(pool.paragraphs[i]))
        for i in idx
    ]
    from indexing.retrieve import memory_retriever

    retriever = memory_retriever(chunks, mode="bm25")
    bm = getattr(retriever, "bm25", None)
    if bm is None or not chunks:  # not the plain BM25 retriever: one query at a time
        return [[int(h.chunk.id) for h in retriever.search(q.question, n)] for q in questions]
    # Same index and tokenizer as retriever.search, but one batched call (17k questions: 2 min -> seconds).
    from indexing.store import bm25_tokenize

    docs, scores = bm.retrieve(
        bm25_tokenize([q.question for q in questions]), k=min(n, len(chunks)), show_progress=False
    )
    return [
        [idx[int(j)] for j, sc in zip(row, srow, strict=True) if sc > 0]
        for row, srow in zip(docs, scores, strict=True)
    ]


# ---------------------------------------------------------------- building
def _split_articles(titles: list[str], frac: float, rng: random.Random) -> set[str]:
    uniq = sorted(set(titles))
    rng.shuffle(uniq)
    n_val = max(1, round(len(uniq) * frac)) if len(uniq) > 1 and frac > 0 else 0
    return set(uniq[:n_val])


def _build(pool: _Pool, cfg: DataConfig) -> tuple[list[Example], list[Example], dict]:
    rng = random.Random(cfg.seed)
    norm_paras = [normalize_answer(p) for p in pool.paragraphs]  # once, not once per candidate
    val_titles = _split_articles(pool.titles, cfg.val_fraction, rng)
    stats: Counter = Counter()
    out: dict[str, list[Example]] = {"train": [], "val": []}
    near_miss = cfg.swap_rate > 0 or cfg.disfluent_rate > 0 or cfg.twist_rate > 0
    if near_miss:  # its own generator, so the RAFT examples do not depend on the near-miss settings
        nm_rng = random.Random(f"near-miss-{cfg.seed}")
        lex = nearmiss.lexicon(pool.paragraphs + [q.question for q in pool.questions])
        folded = [nearmiss.fold(p) for p in pool.paragraphs]
    for split in ("train", "val"):
        idx = [i for i, t in enumerate(pool.titles) if (t in val_titles) == (split == "val")]
        qs = [q for q in pool.questions if (pool.titles[q.para] in val_titles) == (split == "val")]
        if not qs:
            continue
        cands = _bm25_candidates(pool, idx, qs, cfg.candidates + 1)
        for q, cand in zip(qs, cands, strict=True):
            norm_answers = [normalize_answer(a) for a in q.answers]
            k = rng.randint(cfg.min_distractors, cfg.distractors)
            with_gold = rng.random() < cfg.p_gold
            need = k if with_gold else k + 1  # same passage count either way: length must not give it away
            negs = negatives(cand, {q.para}, norm_answers, need, idx, norm_paras, rng, stats)
            if len(negs) < need:  # a tiny pool: fewer passages rather than no example
                stats["short_of_negatives"] += 1
                if not negs and not with_gold:
                    continue
            order = list(negs) + ([q.para] if with_gold else [])
            rng.shuffle(order)
            passages = [Passage(source=source_name(pool.titles[j]), text=pool.paragraphs[j]) for j in order]
            gold = order.index(q.para) + 1 if with_gold else None
            out[split].append(
                Example(
                    id=q.id,
                    article=pool.titles[q.para],
                    question=q.question,
                    passages=passages,
                    gold=gold,
                    answers=q.answers,
                    answer=majority_answer(q.answers) if with_gold else None,
                    split=split,
                )
            )
        if near_miss:
            maker = nearmiss.NearMisses(
                pool, lex, norm_paras, folded, idx, qs, cands, cfg, nm_rng, stats, split
            )
            out[split] += maker.build(n_base=len(out[split]))
    for split, exs in out.items():
        stats[f"{split}_examples"] = len(exs)
        stats[f"{split}_abstain"] = sum(e.gold is None for e in exs)
        stats[f"{split}_articles"] = len({e.article for e in exs})
    return out["train"], out["val"], dict(stats)


def _cache_key(cfg: DataConfig, raw_hash: str) -> str:
    d = asdict(cfg)
    if not d["twist_rate"]:  # added later, off: the examples are those of before, so is their cache
        del d["twist_rate"]
    elif (
        TWIST_RULES > 1
    ):  # the twist rules changed once (v2: no antonym already in the question); v1 keys stay
        d["twist_rules"] = TWIST_RULES
    payload = json.dumps({"cfg": d, "raw": raw_hash, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_jsonl(path: Path, examples: list[Example]) -> str:
    lines = [json.dumps(e.to_json(), sort_keys=True, ensure_ascii=False) for e in examples]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return hashlib.sha256(text.encode()).hexdigest()


def load_examples(path: Path) -> list[Example]:
    """Read examples written by build_dataset (a cache JSONL)."""
    return [
        Example.from_json(json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()
    ]


def build_dataset(cfg: DataConfig = DataConfig(), cache_dir: Path | None = None) -> Dataset:
    """Read the source, guard against leakage, build train/val examples and cache them as JSONL.

    The cache file name carries a hash of the config and of the raw source, so a changed source or
    setting rebuilds; Dataset.hash is the sha256 of the cached JSONL itself.
    """
    if not 0.0 <= cfg.p_gold <= 1.0:
        raise BadInput(f"p_gold must be within [0, 1], got {cfg.p_gold}")
    for name in ("swap_rate", "disfluent_rate", "disfluent_answered", "twist_rate"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= (1.0 if name == "disfluent_answered" else 2.0):
            raise BadInput(f"{name} must be a fraction (0 = off), got {value}")
    if not 0 <= cfg.min_distractors <= cfg.distractors:
        raise BadInput(
            f"need 0 <= min_distractors <= distractors, got {cfg.min_distractors}..{cfg.distractors}"
        )
    articles, raw_hash = _articles_from_source(cfg.source)
    cache_dir = Path(cache_dir) if cache_dir else data_dir() / "finetune"
    path = cache_dir / f"examples-{_cache_key(cfg, raw_hash)}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        text = path.read_text()
        if hashlib.sha256(text.encode()).hexdigest() == meta["hash"]:
            exs = load_examples(path)
            log.info("loaded %d cached examples from %s", len(exs), path)
            return Dataset(
                train=[e for e in exs if e.split == "train"],
                val=[e for e in exs if e.split == "val"],
                source=cfg.source,
                hash=meta["hash"],
                stats=meta["stats"],
                path=path,
            )
        log.warning("cache %s does not match its hash: rebuilding", path)
    pool, dropped = _pool_from_articles(articles)
    if not pool.questions:
        raise BadInput(f"{cfg.source} holds no answerable questions: check the file layout")
    if cfg.leakage_guard:
        check_leakage(pool.paragraphs)
    train, val, stats = _build(pool, cfg)
    stats.update(dropped)
    stats.update(paragraphs=len(pool.paragraphs), questions=len(pool.questions), source_sha256=raw_hash)
    digest = _write_jsonl(path, train + val)
    meta_path.write_text(json.dumps({"hash": digest, "stats": stats, "config": asdict(cfg)}, indent=1))
    log.info("built %d train / %d val examples into %s", len(train), len(val), path)
    return Dataset(train=train, val=val, source=cfg.source, hash=digest, stats=stats, path=path)
