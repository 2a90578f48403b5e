"""What the report knows, read from files that runs wrote; nothing here is typed in by hand.

Sources: the experiments log (eval/run.py), adapter manifests (finetune/train.py), the index manifest,
the corpus files, the bundled test sets, benchmarks/results/*.json. A missing source leaves its fields
None, and the slides print "not measured" for them.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assets import adapters
from eval.run import EXPERIMENTS_JSONL, read_jsonl
from rag.config import REPO_ROOT, default_index_dir, models_dir
from rag.errors import BadInput

log = logging.getLogger(__name__)

# The setting a row was measured in: rows that share it are comparable (same questions, same retrieval).
SETTING_KEYS = ("testset", "testset_sha256", "limit", "seed", "k", "mode", "index")


@dataclass
class Selection:
    rows: list[dict]  # one row per system, the newest of the chosen setting
    setting: dict  # SETTING_KEYS values, plus n_questions, run_ids, times, commands, git_commits
    other_settings: int = 0  # settings in the log that the report does not show


@dataclass
class Facts:
    selection: Selection
    corpus: dict = field(default_factory=dict)
    testsets: dict = field(default_factory=dict)  # file stem -> counts
    lengths: dict = field(default_factory=dict)  # histogram inputs: name -> list of ints
    adapters: dict = field(default_factory=dict)  # label -> rag_adapter.json
    benchmarks: dict = field(default_factory=dict)  # file stem -> JSON
    models: dict = field(default_factory=dict)  # preset -> {params, quantization, kind, description}


# ---------------------------------------------------------------- the experiments log
def load_log(runs: Path) -> list[dict]:
    """Rows of runs/experiments.jsonl; BadInput naming the fix when there are none."""
    path = Path(runs) / EXPERIMENTS_JSONL
    rows = [r for r in read_jsonl(path) if isinstance(r, dict) and r.get("system")]
    if not rows:
        raise BadInput(
            f"no experiments recorded in {path}: run `rag eval --testset` first "
            "(or pass --runs DIR pointing at the runs folder it wrote)"
        )
    return rows


def _questions(r: dict) -> int:
    n = r.get("n_testset") or 0
    return min(n, r["limit"]) if r.get("limit") else n


def _system_order(r: dict) -> tuple:
    return (
        bool(r.get("oracle")),
        r.get("reader") != "extractive",
        str(r.get("model") or ""),
        r.get("adapter") is not None,
        r["system"],
    )


def _setting(r: dict, index: bool = True) -> tuple:
    return tuple(json.dumps(r.get(k)) for k in SETTING_KEYS if index or k != "index")


def _drop_index(key: tuple) -> tuple:
    i = SETTING_KEYS.index("index")
    return key[:i] + key[i + 1 :]


def select_rows(rows: list[dict], run_id: str | None = None) -> Selection:
    """The rows the deck shows: among settings (SETTING_KEYS), the one with the most questions
    (newest on a tie); within it, the newest row of each system. `run_id` (or a prefix) restricts
    the choice to one run.

    >>> a = {"system": "x", "testset": "t", "n_testset": 9, "limit": 2, "time": "1", "run_id": "r1"}
    >>> b = dict(a, limit=5, time="0", run_id="r2")
    >>> select_rows([a, b]).setting["run_ids"]
    ['r2']
    """
    if run_id:
        rows = [r for r in rows if str(r.get("run_id", "")).startswith(run_id)]
        if not rows:
            raise BadInput(
                f"no experiments with run id {run_id!r} in the log: pick one from experiments.jsonl"
            )
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("oracle"):
            groups.setdefault(_setting(r), []).append(r)
    for r in rows:  # gold-paragraph runs do not read the index: they join every setting equal but for it
        if r.get("oracle"):
            homes = [g for key, g in groups.items() if _setting(r, index=False) == _drop_index(key)]
            for g in homes or [groups.setdefault(_setting(r), [])]:
                g.append(r)
    best = max(
        groups.values(),
        key=lambda g: (max(_questions(r) for r in g), max(str(r.get("time") or "") for r in g)),
    )
    latest: dict[str, dict] = {}
    for r in sorted(best, key=lambda r: str(r.get("time") or "")):  # stable: later lines win ties
        latest[r["system"]] = r
    # Systems only run on a smaller sample of the same setting (samples are nested, e.g. the slow readers
    # on 260 of the headline's 1,300 questions) join the table with their own n, largest sample first;
    # not readers with an adapter folder given by path (trials such as qwen2.5-0.5b+~/runs/x), which a
    # run of their own (--run) shows.
    same = [k for k in SETTING_KEYS if k != "limit"]
    ref = min(best, key=lambda r: bool(r.get("oracle")))  # a retrieval row names the index, if there is one
    key = {k: ref.get(k) for k in same}
    extra = [
        r
        for r in rows
        if r["system"] not in latest
        and "/" not in r["system"].partition("+")[2]  # PRESET+ADAPTER_DIR: a trial adapter, not a product
        and all(r.get(k) == key[k] or (k == "index" and r.get("oracle")) for k in same)
    ]
    for r in sorted(extra, key=lambda r: (_questions(r), str(r.get("time") or ""))):
        latest[r["system"]] = r  # sorted ascending: the largest, then newest, sample wins
    chosen = _borrow_comparisons(sorted(latest.values(), key=_system_order), rows, same, key)
    first = chosen[0]
    setting = {k: first.get(k) for k in SETTING_KEYS}
    setting.update(
        n_questions=max(_questions(r) for r in chosen),
        n_testset=first.get("n_testset"),
        n_answerable=max((r.get("n_answerable") or 0) for r in chosen),
        n_unanswerable=max((r.get("n_unanswerable") or 0) for r in chosen),
        run_ids=sorted({r.get("run_id") for r in chosen if r.get("run_id")}),
        times=sorted({r.get("time") for r in chosen if r.get("time")}),
        commands=list(dict.fromkeys(r.get("command") for r in chosen if r.get("command"))),
        git_commits=sorted({r.get("git_commit") for r in chosen if r.get("git_commit")}),
        testset_files=first.get("testset_files") or [],
    )
    return Selection(rows=chosen, setting=setting, other_settings=len(groups) - 1)


def _borrow_comparisons(chosen: list[dict], rows: list[dict], same: list[str], key: dict) -> list[dict]:
    """Paired comparisons a chosen row lacks against another chosen system, taken from a smaller nested
    run of the same setting in which both ran with the same settings (system_hash): e.g. the default
    reader against its untuned base, run on 400 of the headline's 1,400 questions. Each borrowed one
    keeps its own n; `sample` says how many questions its run had."""
    hashes = {r["system"]: r.get("system_hash") for r in chosen}
    by_run: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_run.setdefault(str(r.get("run_id")), {})[r["system"]] = r
    out = []
    for r in chosen:
        have = {(c.get("b"), c.get("metric")) for c in r.get("comparisons") or []}
        borrowed = []
        for o in sorted(rows, key=lambda o: (-_questions(o), str(o.get("time") or ""))):  # largest first
            if (
                o is r
                or o["system"] != r["system"]
                or not o.get("system_hash")
                or o.get("system_hash") != r.get("system_hash")
                or not all(o.get(k) == key[k] or (k == "index" and o.get("oracle")) for k in same)
            ):
                continue
            mates = by_run.get(str(o.get("run_id")), {})
            for c in o.get("comparisons") or []:
                b = c.get("b")
                if (b, c.get("metric")) in have or b not in hashes or b == r["system"]:
                    continue
                if mates.get(b, {}).get("system_hash") != hashes[b] or not hashes[b]:
                    continue  # b ran differently there: not the b this deck shows
                borrowed.append({**c, "sample": _questions(o)})
                have.add((b, c.get("metric")))
        out.append({**r, "comparisons": [*(r.get("comparisons") or []), *borrowed]} if borrowed else r)
    return out


# ---------------------------------------------------------------- corpus and index
def _index_manifest(index_dir: Path) -> dict | None:
    try:
        from indexing.store import current_generation

        gen = current_generation(Path(index_dir))
        return json.loads((gen / "manifest.json").read_text()) if gen else None
    except (OSError, ValueError, ImportError) as e:
        log.info("no index manifest at %s: %s", index_dir, e)
        return None


def _tokenizer(embedder: str):
    """The embedder's fast tokenizer from the model store, or None when it is not pulled."""
    path = models_dir() / embedder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()  # the saved tokenizer truncates at the embedder's limit: count every token
        tok.no_padding()
        return tok
    except Exception as e:  # a broken file only costs the token counts
        log.info("cannot read %s: %s", path, e)
        return None


def corpus_facts(corpus: Path, index_dir: Path | None) -> tuple[dict, list[int], str]:
    """Counts of the corpus folder and of the index built from it; passage lengths for a histogram
    (in the embedder's tokens when its tokenizer is available, else in words) and their unit."""
    files = sorted(p for p in Path(corpus).glob("*.txt"))
    texts = [p.read_text(encoding="utf-8") for p in files]
    paragraphs = [x.strip() for t in texts for x in t.split("\n\n") if x.strip()]
    out: dict[str, Any] = {
        "folder": str(corpus),
        "documents": len(files),
        "paragraphs": len(paragraphs),
        "characters": sum(len(t) for t in texts),
        "words": sum(len(t.split()) for t in texts),
        "chunks": None,
        "tokens": None,
        "tokenizer": None,
        "index": None,
    }
    man = _index_manifest(index_dir or default_index_dir())
    if man:
        names = {p.name for p in files}
        indexed = set(man.get("files", {}))
        out["index"] = {
            "dir": str(index_dir or default_index_dir()),
            "files": len(indexed),
            "chunks": man.get("chunks"),
            "covers_corpus": bool(names) and names <= {Path(n).name for n in indexed},
            "embedder": man.get("embedder", {}),
            "chunking": man.get("chunking", {}),
            "dense": man.get("dense"),
        }
        if out["index"]["covers_corpus"] and len(indexed) == len(names):
            out["chunks"] = man.get("chunks")
    embedder = (man or {}).get("embedder", {}).get("name") or "minilm"
    tok = _tokenizer(embedder)
    if tok is not None and paragraphs:
        lengths = [len(e.ids) for e in tok.encode_batch(paragraphs, add_special_tokens=False)]
        out["tokens"] = sum(lengths)
        out["tokenizer"] = embedder
        return out, lengths, f"{embedder} tokens"
    return out, [len(p.split()) for p in paragraphs], "words"


# ---------------------------------------------------------------- test sets
def testset_facts(data: Path) -> tuple[dict, dict]:
    """Counts per bundled JSONL test set, and answer/question lengths in words."""
    sets: dict[str, dict] = {}
    lengths: dict[str, list[int]] = {}
    for path in sorted(Path(data).glob("*.jsonl")):
        rows = read_jsonl(path)
        un = [r for r in rows if r.get("unanswerable") or not r.get("answers")]
        golds = [len(r["answers"]) for r in rows if r.get("answers")]
        sets[path.stem] = {
            "file": path.name,
            "questions": len(rows),
            "answerable": len(rows) - len(un),
            "unanswerable": len(un),
            "paragraphs": len({(r.get("source"), r.get("paragraph")) for r in rows}),
            "articles": len({r.get("source") for r in rows}),
            "answers_per_question": round(statistics.mean(golds), 2) if golds else None,
        }
        if golds:  # first gold answer: SQuAD's other answers are mostly the same span
            lengths[f"answer_words:{path.stem}"] = [
                len(r["answers"][0].split()) for r in rows if r.get("answers")
            ]
        lengths[f"question_words:{path.stem}"] = [len(r["question"].split()) for r in rows]
    return sets, lengths


testset_facts.__test__ = False  # pytest given this file directly must not collect it as a test


# ---------------------------------------------------------------- adapters, benchmarks, models
def _adapter_label(man: dict, folder: Path) -> str:
    b = man.get("base")
    base = (b.get("preset") if isinstance(b, dict) else b) or "?"
    return base if folder.name == base else f"{base} ({folder.name})"


def adapter_manifests(rows: list[dict], shipped: Path) -> dict[str, dict]:
    """rag_adapter.json of every adapter the rows used, and of every shipped adapter."""
    folders = [Path(r["adapter"]) for r in rows if r.get("adapter")]
    folders += sorted(p.parent for p in Path(shipped).glob(f"*/{adapters.ADAPTER_MANIFEST}"))
    out: dict[str, dict] = {}
    seen: set[str] = set()
    for f in folders:
        man = adapters.manifest_or_none(f)
        if man is None:
            continue
        key = str((man.get("adapter") or {}).get("sha256") or f.resolve())
        if key in seen:
            continue
        seen.add(key)
        man["_folder"] = str(f)
        out[_adapter_label(man, f)] = man
    return out


def benchmark_results(folder: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(folder).glob("*.json")):
        try:
            out[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            log.warning("skipping %s: %s", p, e)
    return out


def model_facts() -> dict[str, dict]:
    try:
        from assets.presets import PRESETS
    except ImportError:
        return {}
    return {
        n: {
            "kind": p.kind,
            "params": p.params,
            "quantization": p.quantization,
            "description": p.description,
            "hub_id": p.hub_id,
        }
        for n, p in PRESETS.items()
    }


def gather(runs: Path, run_id: str | None = None, repo: Path = REPO_ROOT) -> Facts:
    """Everything the slides need, from the runs folder and the repository's data files."""
    sel = select_rows(load_log(runs), run_id)
    index = sel.setting.get("index")
    corpus, passage_len, unit = corpus_facts(repo / "corpus", Path(index) if index else None)
    sets, lengths = testset_facts(repo / "eval" / "data")
    lengths[f"passage:{unit}"] = passage_len
    return Facts(
        selection=sel,
        corpus=corpus,
        testsets=sets,
        lengths=lengths,
        adapters=adapter_manifests(sel.rows, repo / "rag" / "adapters"),
        benchmarks=benchmark_results(repo / "benchmarks" / "results"),
        models=model_facts(),
    )
