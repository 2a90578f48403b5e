"""`rag serve`'s API through FastAPI's TestClient: a real index (fake-hash embedder), the real LLMReader
over a scripted tiny model, and the same objects `rag ask --json` and `rag search --json` print."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from urllib.parse import quote

import pytest
from fakes import INJECTED, SERVE_DOCS, serve_index, serve_reader
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import rag.cli as cli
from indexing.retrieve import open_retriever
from rag.errors import BadInput
from rag.prompt import ABSTAIN
from rag.reader import ExtractiveReader
from rag.server import PAGE, ServeConfig, check_bind, create_app

Q = "Which team won Super Bowl 50?"
runner = CliRunner()


@pytest.fixture
def index(tmp_path):
    return serve_index(tmp_path)


def client_for(index_dir, reader=None, **settings) -> TestClient:
    readers = {"llm": reader or serve_reader(), "extractive": ExtractiveReader()}
    app = create_app(lambda mode: open_retriever(index_dir, mode=mode), readers, ServeConfig(**settings))
    return TestClient(app, base_url="http://127.0.0.1:8000")


@pytest.fixture
def client(index):
    with client_for(index[1]) as c:
        yield c


def sse(lines) -> list[tuple[str, dict]]:
    """[(event, data)] from a text/event-stream body's lines."""
    events, name = [], None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
    return events


def no_timings(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("timings", "question")}


def test_health_describes_the_index_and_the_reader(client, index):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["index"]["path"] == str(index[1]) and h["index"]["files"] == 3
    assert h["index"]["chunks"] >= 3 and h["index"]["embedder"] == "fake-hash"
    assert h["reader"]["name"] == "llm" and h["reader"]["model"] == "tiny"
    assert h["readers"] == ["llm", "extractive"] and h["mode"] == "hybrid"
    assert h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0 and h["queue"]["limit"] == 32


def test_ask_returns_the_cli_json_object(client, index, monkeypatch):
    obj = client.post("/api/ask", json={"question": Q}).json()
    assert obj["question"] == Q and obj["answer"] == "Denver Broncos" and obj["supported"] is True
    [c] = obj["citations"]
    assert c["source"] == "super_bowl_50.txt" and SERVE_DOCS[c["source"]][c["start"] : c["end"]]
    assert {"retrieve_s", "first_token_s", "total_s", "queued_s", "new_tokens"} <= set(obj["timings"])

    monkeypatch.setattr(cli, "_ask_reader", lambda *a, **kw: serve_reader())
    r = runner.invoke(cli.app, ["ask", Q, "--json", "--index", str(index[1])])
    assert r.exit_code == 0, r.output
    assert no_timings(obj) == no_timings(json.loads(r.stdout))


def test_ask_streams_pieces_then_the_whole_object(client):
    with client.stream(
        "POST", "/api/ask", json={"question": Q}, headers={"Accept": "text/event-stream"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    kinds = [k for k, _ in events]
    assert kinds[0] == "queued" and kinds[-1] == "answer" and set(kinds[1:-1]) == {"piece"}
    pieces = [d["text"] for k, d in events if k == "piece"]
    assert len(pieces) > 1 and "".join(pieces) == "Denver Broncos [1]"  # token by token, then checked
    final = events[-1][1]
    assert no_timings(final) == no_timings(client.post("/api/ask", json={"question": Q}).json())


def test_an_answer_not_in_the_documents_is_an_abstention(client):
    obj = client.post("/api/ask", json={"question": "What is the boiling point of mercury?"}).json()
    assert obj["abstained"] is True and obj["answer"] == ABSTAIN and obj["citations"] == []


def test_another_loaded_reader_can_be_asked_for(client):
    obj = client.post(
        "/api/ask", json={"question": "Who defeated the Panthers?", "reader": "extractive"}
    ).json()
    assert obj["reader"] == {"model": "extractive", "adapter": None}
    assert obj["answer"].startswith("The Denver Broncos defeated")


def test_search_returns_the_cli_json_list(client, index):
    rows = client.get("/api/search", params={"q": "Apollo landed", "k": 2, "mode": "bm25"}).json()
    assert rows[0]["source"] == "moon.txt" and len(rows) <= 2
    r = runner.invoke(
        cli.app, ["search", "Apollo landed", "-k", "2", "--mode", "bm25", "--json", "--index", str(index[1])]
    )
    assert r.exit_code == 0, r.output
    assert rows == json.loads(r.stdout)
    assert client.get("/api/search", params={"q": "Apollo landed"}).json()[0]["source"] == "moon.txt"


def test_a_citation_opens_its_passage_as_data(client):
    [c] = client.post("/api/ask", json={"question": Q}).json()["citations"]
    r = client.get("/api/passages/" + quote(f"{c['source']}:{c['start']}-{c['end']}", safe=""))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    p = r.json()
    assert (p["source"], p["start"], p["end"]) == (c["source"], c["start"], c["end"])
    assert p["text"] == SERVE_DOCS["super_bowl_50.txt"][p["start"] : p["end"]]
    assert INJECTED in p["text"]  # the markup is returned as text for the page to show as text


def test_passage_ids_cannot_name_files(client, index, tmp_path):
    (tmp_path / "secret.txt").write_text("top secret words")
    inside = index[0] / "super_bowl_50.txt"
    for cid in [
        "../secret.txt:0-16",
        "../../../../etc/passwd:0-10",
        "/etc/passwd:0-10",
        f"{inside}:0-20",  # the document itself, named by its path: the store knows only index names
        f"{tmp_path / 'secret.txt'}:0-16",
        "super_bowl_50.txt:0-99999999999999999999999",
        "super_bowl_50.txt",
        "x" * 5000 + ":0-1",
    ]:
        r = client.get("/api/passages/" + quote(cid, safe=""))
        assert r.status_code == 404, cid
        assert set(r.json()) == {"error"} and "top secret" not in r.text and "root:" not in r.text
    r = client.get("/api/passages/..%2F..%2Fsecret.txt:0-16")
    assert r.status_code == 404 and "top secret" not in r.text


@pytest.mark.parametrize(
    "request_, status, words",
    [
        (("post", "/api/ask", {"json": {"question": "   "}}), 400, "the question is empty"),
        (("post", "/api/ask", {"json": {}}), 400, "question: Field required"),
        (("post", "/api/ask", {"json": {"question": "Who?", "k": 0}}), 400, "k: Input should be greater"),
        (("post", "/api/ask", {"json": {"question": "Who?", "k": 51}}), 400, "k: Input should be less"),
        (
            ("post", "/api/ask", {"json": {"question": "Who?", "reader": "bert"}}),
            400,
            "rag serve --reader bert",
        ),
        (("post", "/api/ask", {"json": {"question": "Who?", "top": 3}}), 400, "top: Extra inputs"),
        (
            ("post", "/api/ask", {"content": "{", "headers": {"content-type": "application/json"}}),
            400,
            "JSON",
        ),
        (("post", "/api/ask", {"json": {"question": "a" * 2001}}), 413, "2001 characters, the limit is 2000"),
        (("post", "/api/ask", {"content": "x" * 40_000}), 413, "body is over 32768 bytes"),
        (
            ("post", "/api/ask", {"content": iter([b"x" * 20_000] * 2)}),
            413,
            "body is over 32768 bytes",
        ),  # chunked
        (("get", "/api/search", {"params": {"q": " "}}), 400, "the query is empty"),
        (("get", "/api/search", {}), 400, "q: Field required"),
        (
            ("get", "/api/search", {"params": {"q": "moon", "k": "many"}}),
            400,
            "k: Input should be a valid integer",
        ),
        (
            ("get", "/api/search", {"params": {"q": "moon", "mode": "fuzzy"}}),
            400,
            "choose one of dense, bm25, hybrid",
        ),
        (("get", "/api/nothing", {}), 404, "no such endpoint /api/nothing"),
        (("get", "/api/ask", {}), 405, "GET is not allowed on /api/ask"),
    ],
)
def test_errors_are_one_json_line_with_a_status(client, request_, status, words):
    method, path, kw = request_
    r = getattr(client, method)(path, **kw)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}
    assert words in r.json()["error"] and "\n" not in r.json()["error"]
    q = client.get("/health").json()["queue"]
    assert (q["running"], q["waiting"]) == (0, 0)  # a refused question holds no place in the queue


def test_streamed_errors_before_the_reader_keep_their_status(client):
    r = client.post("/api/ask", json={"question": ""}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 400 and "empty" in r.json()["error"]


def test_a_token_guards_every_api_call(index):
    token = "t0ken-" + "x" * 20
    with client_for(index[1], host="0.0.0.0", token=token) as c:
        calls = [
            ("get", "/health", {}),
            ("get", "/api/search", {"params": {"q": "moon"}}),
            ("post", "/api/ask", {"json": {"question": Q}}),
            ("get", "/api/passages/moon.txt:0-10", {}),
        ]
        for method, path, kw in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                r = getattr(c, method)(path, headers=headers, **kw)
                assert r.status_code == 401 and "Bearer" in r.json()["error"], (path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
            r = getattr(c, method)(path, headers={"Authorization": f"Bearer {token}"}, **kw)
            assert r.status_code in (200, 404), (path, r.text)  # the passage id is made up
        assert c.get("/").status_code == 200  # the page holds no data; it asks for the token


def test_exposed_hosts_need_a_token():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(ServeConfig(host=host))
    with pytest.raises(BadInput, match="set RAG_TOKEN"):
        check_bind(ServeConfig(host="0.0.0.0"))
    with pytest.raises(BadInput, match="at least 16 printable"):
        check_bind(ServeConfig(host="0.0.0.0", token="short"))
    with pytest.raises(BadInput, match="--port must be between"):
        check_bind(ServeConfig(port=70_000))
    check_bind(ServeConfig(host="0.0.0.0", token="a" * 16))


def test_no_cors_and_no_rebinding(client):
    evil = {"Origin": "http://evil.example"}
    r = client.post("/api/ask", json={"question": Q}, headers=evil)
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]
    r = client.options("/api/ask", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    same = client.post("/api/ask", json={"question": Q}, headers={"Origin": "http://127.0.0.1:8000"})
    assert same.status_code == 200
    assert not [h for r in (same, client.get("/health")) for h in r.headers if h.startswith("access-control")]
    r = client.get("/health", headers={"Host": "evil.example:8000"})  # DNS rebinding onto loopback
    assert r.status_code == 400 and "is not this server" in r.json()["error"]
    # a page elsewhere can only send a "simple" text/plain POST without preflight: it is not read as JSON
    r = client.post("/api/ask", content=json.dumps({"question": Q}), headers={"content-type": "text/plain"})
    assert r.status_code == 400


def test_the_page_is_one_offline_file_that_runs_only_its_own_script(client):
    r = client.get("/")
    html = r.text
    assert r.status_code == 200 and html == PAGE.read_text()
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = r.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    assert (
        "://" not in html and "<script src" not in html and "<link" not in html
    )  # nothing fetched from elsewhere
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in html  # server text reaches the page through textContent only


def test_openapi_docs_are_served_offline(client):
    docs = client.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/ask", "/api/search", "/api/passages/{chunk_id}"} <= set(paths)


def test_cli_refuses_an_exposed_host_before_loading_anything(index, monkeypatch):
    loaded = []
    monkeypatch.setattr(cli, "_ask_reader", lambda *a, **kw: loaded.append(a))
    monkeypatch.delenv("RAG_TOKEN", raising=False)
    r = runner.invoke(cli.app, ["serve", "--host", "0.0.0.0", "--index", str(index[1])])
    assert r.exit_code == 1 and "set RAG_TOKEN" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert loaded == []


def test_cli_says_when_the_port_is_taken(index, monkeypatch):
    monkeypatch.setattr(cli, "_ask_reader", lambda *a, **kw: pytest.fail("loaded a reader"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = runner.invoke(cli.app, ["serve", "--port", str(port), "--index", str(index[1])])
    assert r.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.output


def test_ci_installs_the_browser_for_the_page_tests():
    from pathlib import Path

    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "apt-get install -y -qq chromium chromium-driver" in ci
    assert ci.index("chromium-driver") < ci.index("pytest")  # before the tests run
