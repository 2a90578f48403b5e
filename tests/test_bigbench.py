"""assets/bigbench.py: passage hashing, detokenizing, the committed corpus/test sets, and sdist handling.

Nothing here needs the real 358 MB sdist: a tiny fake tar.gz with the same member names stands in,
with the pinned sha256 monkeypatched to the fake's.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from assets import bigbench
from rag.config import REPO_ROOT, data_dir
from rag.errors import BadInput, ModelUnavailable
from rag.files import sha256_file

CORPUS = REPO_ROOT / "corpus"
EVAL_DATA = REPO_ROOT / "eval" / "data"


# ---------------------------------------------------------------------------------------- hashing
@pytest.mark.parametrize(
    ("original", "tokenized"),
    [
        ("It is a major part of the Earth's atmosphere (see Occurrence).",
         "It is a major part of the Earth ' s atmosphere ( see Occurrence ) . "),
        ("dioxygen, O\n2. It is", "dioxygen , O 2 . It is"),
        ('the "golden anniversary" with 24–10', 'the " golden anniversary " with 24 – 10'),
        ("498 kJ·mol−1, which", "498 kJ · mol − 1 , which"),
        ("  Leading space and CASE.", "leading space and case ."),
    ],
)  # fmt: skip
def test_passage_hash_ignores_tokenization(original, tokenized):
    assert bigbench.passage_hash(original) == bigbench.passage_hash(tokenized)


def test_passage_hash_separates_different_text():
    a = bigbench.passage_hash("The Broncos won 24–10.")
    assert a != bigbench.passage_hash("The Broncos won 24–11.")
    assert a != bigbench.passage_hash("The Panthers won 24–10.")
    assert len(a) == 64 and int(a, 16) >= 0


@pytest.mark.parametrize(
    ("tokenized", "expected"),
    [
        ("What is the Earth ' s atmosphere ( see Occurrence ) ?  ", "What is the Earth's atmosphere (see Occurrence)?"),
        ('Who wrote \\ " The American War \\ " ?', 'Who wrote "The American War"?'),
        ("What constitutes 20 . 8 % of it ?", "What constitutes 20.8% of it?"),
        ("Who caused $ 20 million in the U . S . ?", "Who caused $20 million in the U.S.?"),
        ("What was under the Islamic States ' control ?", "What was under the Islamic States' control?"),
        ("When was the Grand Canal d ' Alsace ended ?", "When was the Grand Canal d'Alsace ended?"),
        ("What isn ' t AT & T ' s job in June / July ?", "What isn't AT&T's job in June/July?"),
        ("Where is 35 \\ u00b0 48 north , at 1 , 000 m ?", "Where is 35°48 north, at 1,000 m?"),
        ("What did al - Gama ' a publish , ' Jade Mirror ' ?", "What did al-Gama'a publish, 'Jade Mirror'?"),
    ],
)  # fmt: skip
def test_detokenize_known_cases(tokenized, expected):
    assert bigbench.detokenize(tokenized) == expected


def test_disfl_qa_parts_splits_and_rejects():
    q, c = bigbench.disfl_qa_parts({"input": "Who won ?  \ncontext: The Broncos won . ", "target": "unknown"})
    assert (q, c) == ("Who won ?", "The Broncos won .")
    with pytest.raises(BadInput, match="without a context"):
        bigbench.disfl_qa_parts({"input": "no context here", "target": "x"})


# ------------------------------------------------------------------------- committed corpus + test sets
def _rows(name: str) -> list[dict]:
    with open(EVAL_DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _paragraphs(file: str) -> tuple[str, list[str]]:
    text = (
        (CORPUS / file).read_bytes().decode("utf-8")
    )  # bytes: offsets must hold without newline translation
    return text, text.rstrip("\n").split("\n\n")


def test_corpus_files_and_notes():
    files = sorted(p.name for p in CORPUS.glob("*.txt"))
    assert len(files) == 48 and "Super_Bowl_50.txt" in files
    assert (CORPUS / ".ragignore").read_text().split() == ["README.md"]
    readme = (CORPUS / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "Rajpurkar" in readme and "scripts/build_corpus.py" in readme
    total = sum(len(_paragraphs(f)[1]) for f in files)
    assert total == 2067
    for f in files:
        _, paras = _paragraphs(f)
        assert all(p and p == p.strip() for p in paras), f


@pytest.mark.parametrize("name", ["squad_dev.jsonl", "disfl_qa.jsonl"])
def test_jsonl_rows_line_up_with_corpus(name):
    rows = _rows(name)
    cache: dict[str, tuple[str, list[str], list[int]]] = {}
    for r in rows:
        if r["source"] not in cache:
            text, paras = _paragraphs(r["source"])
            starts = [0]
            for p in paras[:-1]:
                starts.append(starts[-1] + len(p) + 2)
            cache[r["source"]] = (text, paras, starts)
        text, paras, starts = cache[r["source"]]
        assert text[r["start"] : r["end"]] == paras[r["paragraph"]], r["id"]
        # the offsets really are where paragraph i starts when the file is split on blank lines
        assert r["start"] == starts[r["paragraph"]], r["id"]
    assert len({r["id"] for r in rows}) == len(rows)


def test_squad_dev_rows_have_the_fields():
    rows = _rows("squad_dev.jsonl")
    assert len(rows) == 10_565
    text_cache: dict[str, str] = {}
    for r in rows:
        assert set(r) == {"id", "question", "answers", "source", "paragraph", "start", "end"}
        assert isinstance(r["question"], str) and r["question"] == r["question"].strip() and r["question"]
        assert r["answers"] and len(set(r["answers"])) == len(r["answers"])
        assert isinstance(r["paragraph"], int) and 0 <= r["start"] < r["end"]
        if r["source"] not in text_cache:
            text_cache[r["source"]] = (CORPUS / r["source"]).read_text(encoding="utf-8")
        text = text_cache[r["source"]]
        assert all(a in text[r["start"] : r["end"]] for a in r["answers"]), r["id"]  # SQuAD answers are spans


def test_disfl_qa_rows_have_the_fields():
    rows = _rows("disfl_qa.jsonl")
    assert 2_000 <= len(rows) <= 2_107
    for r in rows:
        assert set(r) == {"id", "question", "answers", "unanswerable", "source", "paragraph", "start", "end"}
        assert r["answers"] == [] and r["unanswerable"] is True
        assert r["id"].startswith("disfl_qa-")
        # detokenized: no space before ? or , and no split contractions
        assert " ?" not in r["question"] and " ," not in r["question"] and " ' s " not in r["question"], r


# ------------------------------------------------------------------------------------ sdist handling
SQUAD = {
    "version": "1.1",
    "data": [
        {
            "title": "Oxygen",
            "paragraphs": [
                {
                    "context": "It is a major part of the Earth's atmosphere (see Occurrence).",
                    "qas": [{"id": "q1", "question": "Part of what?", "answers": [{"text": "atmosphere", "answer_start": 30}]}],
                }
            ],
        }
    ],
}  # fmt: skip
DISFL = {
    "examples": [
        {"input": "What is no what part ?  \ncontext: It is a major part of the Earth ' s atmosphere ( see Occurrence ) . ",
         "target": "major"},
        {"input": "Who wrote it ?  \ncontext: A context that SQuAD dev does not have . ", "target": "unknown"},
    ]
}  # fmt: skip


def _fake_sdist(path: Path, members: dict[str, object] | None = None) -> Path:
    if members is None:
        members = {m: {"data": []} for m in bigbench.MEMBERS} | {
            bigbench.SQUAD_DEV: SQUAD,
            bigbench.DISFL_QA: DISFL,
        }
    with tarfile.open(path, "w:gz") as tar:
        for rel, obj in members.items():
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo("bigbench-1.0.0/bigbench/benchmark_tasks/" + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sha_mismatch_from_env_is_a_clear_error(tmp_path, monkeypatch):
    fake = _fake_sdist(tmp_path / "bigbench-1.0.0.tar.gz")
    monkeypatch.setenv(bigbench.SDIST_ENV, str(fake))
    with pytest.raises(BadInput, match=r"expected 1bb398a5.*point RAG_BIGBENCH_SDIST at the genuine"):
        bigbench.fetch_bigbench()
    assert not bigbench.bigbench_dir().exists()


def test_sha_mismatch_in_cache_says_delete(monkeypatch):
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    cached = data_dir() / bigbench.SDIST_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    monkeypatch.setattr(bigbench, "SDIST_SHA256", "0" * 64)
    with pytest.raises(ModelUnavailable, match="delete it and run again"):
        bigbench.squad_dev()


def test_missing_env_file_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv(bigbench.SDIST_ENV, str(tmp_path / "nope.tar.gz"))
    with pytest.raises(BadInput, match="is not a file"):
        bigbench.fetch_bigbench()


def test_fake_sdist_extracts_once_and_feeds_readers(tmp_path, monkeypatch):
    fake = _fake_sdist(tmp_path / "bb.tar.gz")
    monkeypatch.setenv(bigbench.SDIST_ENV, str(fake))
    monkeypatch.setattr(bigbench, "SDIST_SHA256", sha256_file(fake))
    messages: list[str] = []
    root = bigbench.fetch_bigbench(say=messages.append)
    assert root == bigbench.bigbench_dir() and (root / bigbench.DISFL_QA).is_file()
    assert any("extracting" in m for m in messages)
    assert not (root / "squad_shifts" / "task.py").exists()  # only the members we read

    fake.unlink()  # later reads come from the extraction, not the sdist
    assert bigbench.squad_dev()[0]["title"] == "Oxygen"
    assert len(bigbench.disfl_qa()) == 2
    assert bigbench.squadshifts("nyt") == []
    hashes = bigbench.eval_passage_hashes()
    squad_ctx = SQUAD["data"][0]["paragraphs"][0]["context"]
    assert bigbench.passage_hash(squad_ctx) in hashes  # tokenized and original give one hash
    assert bigbench.passage_hash("A context that SQuAD dev does not have.") in hashes
    assert len(hashes) == 2
    cache = json.loads((data_dir() / "eval_passage_hashes.json").read_text())
    assert set(cache["hashes"]) == hashes and cache["hash_version"] == bigbench.HASH_VERSION


def test_sdist_missing_members_is_a_clear_error(tmp_path, monkeypatch):
    fake = _fake_sdist(tmp_path / "bb.tar.gz", members={bigbench.SQUAD_DEV: SQUAD})
    monkeypatch.setenv(bigbench.SDIST_ENV, str(fake))
    monkeypatch.setattr(bigbench, "SDIST_SHA256", sha256_file(fake))
    with pytest.raises(ModelUnavailable, match="lacks .*disfl_qa/task.json"):
        bigbench.fetch_bigbench()
    assert not bigbench.bigbench_dir().exists()


def test_download_uses_pip_and_checks_sha(tmp_path, monkeypatch):
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    fake = _fake_sdist(tmp_path / "bb.tar.gz")
    monkeypatch.setattr(bigbench, "SDIST_SHA256", sha256_file(fake))
    calls: list[list[str]] = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / bigbench.SDIST_NAME).write_bytes(fake.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "Saved", "")

    monkeypatch.setattr(bigbench.subprocess, "run", fake_pip)
    bigbench.fetch_bigbench()
    assert calls and calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "bigbench==1.0.0" in calls[0]
    assert (data_dir() / bigbench.SDIST_NAME).is_file()
    assert [p.name for p in data_dir().iterdir() if p.name.startswith("bigbench-dl")] == []


def test_failed_download_names_the_fix(monkeypatch):
    monkeypatch.delenv(bigbench.SDIST_ENV, raising=False)
    monkeypatch.setattr(
        bigbench.subprocess,
        "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No network\n"),
    )
    with pytest.raises(ModelUnavailable, match=r"No network.*RAG_BIGBENCH_SDIST"):
        bigbench.fetch_bigbench()
    assert not (data_dir() / bigbench.SDIST_NAME).exists()


def test_squadshifts_rejects_unknown_name():
    with pytest.raises(BadInput, match="new_wiki, nyt, reddit, amazon"):
        bigbench.squadshifts("wiki")


# ---------------------------------------------------------------------------------- user SQuAD files
def test_load_squad_json_accepts_and_rejects(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(SQUAD))
    assert bigbench.load_squad_json(good)[0]["title"] == "Oxygen"
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(SQUAD["data"]))
    assert len(bigbench.load_squad_json(bare)) == 1

    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(BadInput, match="not valid JSON \\(line 2"):
        bigbench.load_squad_json(broken)
    no_q = tmp_path / "noq.json"
    no_q.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"answers": []}]}]}]}))
    with pytest.raises(BadInput, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\] needs a 'question'"):
        bigbench.load_squad_json(no_q)
    with pytest.raises(BadInput, match="does not exist"):
        bigbench.load_squad_json(tmp_path / "missing.json")
