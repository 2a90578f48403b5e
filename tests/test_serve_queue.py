"""The reader queue of `rag serve` over real HTTP (uvicorn on a free loopback port, in a thread): one
generation at a time, answers never mixed, a full queue refused with 503 and nothing lost, retrieval
while the reader is busy, and a client that leaves freeing the reader."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from fakes import SlowEchoReader, serve_in_thread, serve_index, serve_reader

from indexing.retrieve import open_retriever
from rag.server import ServeConfig, create_app


@pytest.fixture
def index(tmp_path):
    return serve_index(tmp_path)[1]


def post(url: str, question: str, stream: bool = False, timeout: float = 30) -> tuple[int, dict, list[str]]:
    """(status, final object or error, streamed pieces) of one POST /api/ask."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)  # a hung server fails the test
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "*/*"}
    conn.request("POST", "/api/ask", json.dumps({"question": question}), headers)
    r = conn.getresponse()
    body = r.read().decode()
    conn.close()
    if not stream or r.status != 200:
        return r.status, {**json.loads(body), "retry_after": r.getheader("Retry-After")}, []
    events = [
        (block.split("\n")[0][7:], json.loads(block.split("\n")[1][6:]))
        for block in body.strip().split("\n\n")
    ]
    pieces = [d["text"] for kind, d in events if kind == "piece"]
    return r.status, events[-1][1], pieces


def health(url: str) -> dict:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/health")
    out = json.loads(conn.getresponse().read())
    conn.close()
    return out


def wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def settled_queue(url: str, outcomes: int) -> dict:
    """/api/health's queue counts once `outcomes` questions have ended and none runs: the server sends a
    question's last event before it counts the outcome, so a client can ask in between."""
    ended = ("answered", "cancelled", "refused", "failed")
    wait_for(lambda: (c := health(url)["queue"])["running"] == 0 and sum(c[k] for k in ended) >= outcomes)
    return health(url)["queue"]


def app_with(index, reader, queue: int = 32, retriever=None):
    return create_app(
        retriever or (lambda mode: open_retriever(index, mode=mode)),
        {"llm": reader},
        ServeConfig(queue=queue),
    )


def ask_all(url: str, questions: list[str]) -> list[tuple[int, dict, list[str]]]:
    """Every question at once, half of them streamed, from one thread each."""
    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(lambda iq: post(url, iq[1], stream=iq[0] % 2 == 0), enumerate(questions)))


def test_one_generation_at_a_time_and_answers_never_mix(index):
    reader = SlowEchoReader(delay=0.02, repeat=3)
    questions = [f"Which word is w{i}?" for i in range(6)]
    with serve_in_thread(app_with(index, reader)) as url:
        results = ask_all(url, questions)
        counts = settled_queue(url, len(questions))
    for q, (status, obj, pieces) in zip(questions, results):
        word = q.split()[-1].strip("?")
        assert status == 200 and obj["question"] == q
        assert obj["answer"] == f"{word} {word} {word}" and obj["citations"][0]["n"] == 1
        assert not pieces or "".join(pieces) == f"{word} {word} {word} [1]"
    assert reader.max_active == 1  # the shared model never ran two generations at once
    assert counts["answered"] == 6 and counts["running"] == 0 and counts["waiting"] == 0


def test_a_full_queue_refuses_with_503_and_loses_nothing(index):
    reader = SlowEchoReader(delay=0.1, repeat=4)  # half a second per answer
    questions = [f"Which word is v{i}?" for i in range(6)]
    with serve_in_thread(app_with(index, reader, queue=1)) as url:
        results = ask_all(url, questions)
        after = post(url, "And now x?")
        counts = health(url)["queue"]
    ok = [(q, obj) for q, (status, obj, _) in zip(questions, results) if status == 200]
    refused = [obj for status, obj, _ in results if status == 503]
    assert len(ok) + len(refused) == len(questions)  # every request answered or refused
    assert len(ok) >= 2 and len(refused) >= 1  # one running + one waiting fit; the rest do not
    for q, obj in ok:
        assert obj["answer"].split()[0] == q.split()[-1].strip("?")
    for obj in refused:
        assert set(obj) == {"error", "retry_after"} and "the reader is busy" in obj["error"]
        assert obj["retry_after"] == "2"
    assert after[0] == 200 and after[1]["answer"].startswith("x")  # places are given back
    assert counts["refused"] == len(refused) and counts["answered"] == len(ok) + 1


class Recording:
    """A retriever that notes when each search ran."""

    def __init__(self, inner):
        self.inner, self.times = inner, []

    def search(self, query, k):
        self.times.append(time.perf_counter())
        return self.inner.search(query, k)


def test_queued_questions_retrieve_while_the_reader_is_busy(index):
    reader = SlowEchoReader(delay=0.1, repeat=4)
    rec = {}

    def opener(mode):
        rec[mode] = Recording(open_retriever(index, mode=mode))
        return rec[mode]

    with serve_in_thread(app_with(index, reader, retriever=opener)) as url:
        first = threading.Thread(target=post, args=(url, "Which word is a?"))
        first.start()
        wait_for(lambda: reader.active)  # the first generation has begun
        second = post(url, "Which word is b?")
        first.join()
    (start, end), _ = reader.busy
    assert second[0] == 200 and second[1]["answer"].startswith("b")
    assert start < rec["hybrid"].times[1] < end  # the second search ran during the first generation


def leave_mid_answer(url: str, question: str, stream: bool, started) -> None:
    """Ask, wait until `started()` (or the first streamed piece), then drop the connection."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {
        "Accept": "text/event-stream" if stream else "application/json",
        "Content-Type": "application/json",
    }
    conn.request("POST", "/api/ask", json.dumps({"question": question}), headers)
    if stream:
        r = conn.getresponse()
        assert r.status == 200
        wait_for(lambda: r.readline().startswith(b"event: piece"))
    else:
        wait_for(started)
    conn.sock.close()  # the client goes away mid-answer
    conn.close()


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "json"])
def test_a_client_that_leaves_frees_the_reader(index, stream):
    reader = SlowEchoReader(delay=0.05, repeat=200)  # ten seconds if nobody stops it
    with serve_in_thread(app_with(index, reader)) as url:
        leave_mid_answer(url, "Which word is z?", stream, lambda: reader.pieces >= 2)
        left = time.perf_counter()
        while health(url)["queue"]["running"] and time.perf_counter() - left < 5:
            time.sleep(0.02)
        counts = health(url)["queue"]
        stopped_after = time.perf_counter() - left
    assert counts["running"] == 0 and counts["cancelled"] == 1 and counts["answered"] == 0
    assert stopped_after < 2 and reader.pieces < 60  # stopped within a few pieces, not after 201


def test_a_cancelled_llm_generation_gives_the_model_back(index):
    """The real LLMReader holds a lock while it generates: leaving must release it, or the next
    question would wait forever."""
    reader = serve_reader(delay=0.1)  # a scripted tiny LLM, a tenth of a second per token
    with serve_in_thread(app_with(index, reader)) as url:
        leave_mid_answer(url, "Which team won Super Bowl 50?", True, None)
        status, obj, pieces = post(url, "Which team won Super Bowl 50?", stream=True, timeout=20)
        counts = settled_queue(url, 2)
    assert status == 200 and obj["answer"] == "Denver Broncos" and "".join(pieces) == "Denver Broncos [1]"
    assert counts["cancelled"] == 1 and counts["answered"] == 1
