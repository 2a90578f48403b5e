"""`rag serve`: the HTTP API and the page, over one index and one reader, both loaded once.

    app = create_app(lambda mode: open_retriever(index_dir, mode=mode), {"llm": reader}, ServeConfig())
    serve(app, ServeConfig())   # http://127.0.0.1:8000/

Routes (the objects are the ones `rag ask --json` and `rag search --json` print):
    GET  /                        the page (rag/page.html)
    GET  /health                  index, reader and queue, as soon as the server can answer
    POST /api/ask                 {"question": "...", "k": 5, "reader": "llm"} -> the `rag ask --json` object;
                                  with Accept: text/event-stream, events `queued`, `piece`... then `answer`
    GET  /api/search?q=&k=&mode=  the `rag search --json` list
    GET  /api/passages/{id}       one chunk (id `<source>:<start>-<end>`): text, source, offsets
    GET  /docs                    OpenAPI docs, served from a wheel (no CDN)
Errors are {"error": "one line that names the fix"} with 400, 401, 403, 404, 413 or 503.

A small CPU has one shared reader model, so generations run one at a time on one thread, in arrival
order; at most `queue` questions wait for it and the next one gets 503 at once. Retrieval runs on its
own thread (the index's SQLite connection belongs to the thread that opened it), so queued questions
retrieve while the reader is busy. A client that leaves mid-answer sets its job's cancel flag and the
reader stops at its next piece.
"""

# No `from __future__ import annotations`: FastAPI reads the request models of create_app's nested
# routes from their annotations, which must be objects, not names it cannot resolve.
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import BadInput, RagError
from rag.pipeline import AskStream, answer_to_json, hits_to_json
from rag.types import Reader, Retriever

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
BODY_TOO_LARGE = "the request body is over {} bytes: send a shorter question"
TOKEN_RE = re.compile(r"[!-~]{16,}")  # printable ASCII, no spaces: it travels in an HTTP header


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # loopback by default; any other address needs a token
    port: int = 8000  # 0 = a free port, printed at start
    token: str | None = None  # when set, every API call needs `Authorization: Bearer <token>`
    queue: int = 32  # questions that may wait for the reader; one more gets 503
    max_body: int = 32_768  # bytes in a request body (413 over it)
    max_question: int = 2_000  # characters in a question (413 over it)
    max_k: int = 50  # passages one request may ask for


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only.

    >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0", "10.0.0.5")]
    [True, True, True, True, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(cfg: ServeConfig) -> None:
    """Refuse settings that would expose the API: run before loading any model."""
    if not 0 <= cfg.port <= 65535:
        raise BadInput(f"--port must be between 0 and 65535, got {cfg.port}")
    if cfg.queue < 0:
        raise BadInput(f"--queue must be 0 or more, got {cfg.queue}")
    if cfg.token is not None and not TOKEN_RE.fullmatch(cfg.token):
        raise BadInput(
            "the token must be at least 16 printable characters without spaces: make one with "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`"
        )
    if cfg.token is None and not is_loopback(cfg.host):
        raise BadInput(
            f"--host {cfg.host} is reachable from other machines: set RAG_TOKEN (or pass --token) to a "
            "secret of 16+ characters, and every API call then needs `Authorization: Bearer <token>`"
        )


# ---------------------------------------------------------------- one reader, a bounded queue


class Busy(RagError):
    """The reader's queue is full."""


class _Job:
    """One question on its way through the reader thread; events go to its asyncio queue."""

    def __init__(self, stream: AskStream, loop: asyncio.AbstractEventLoop):
        self.stream, self.loop = stream, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.retrieved = time.perf_counter()

    def emit(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone: the server is shutting down
            self.cancel.set()


class AskQueue:
    """Admission (at most 1 running + `limit` waiting), the index thread and the reader thread."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self.admitted = 0  # questions between admission and the end of their generation
        self.running = False
        self.counts = {"answered": 0, "cancelled": 0, "refused": 0, "failed": 0}
        self.index_thread = ThreadPoolExecutor(1, thread_name_prefix="rag-index")
        self.reader_thread = ThreadPoolExecutor(1, thread_name_prefix="rag-reader")

    def status(self) -> dict:
        with self._lock:
            running = int(self.running)
            return {
                "running": running,
                "waiting": self.admitted - running,
                "limit": self.limit,
                **self.counts,
            }

    def admit(self) -> int:
        """Take a place or raise Busy; returns how many questions are ahead."""
        with self._lock:
            if self.admitted >= self.limit + 1:
                self.counts["refused"] += 1
                raise Busy(
                    f"the reader is busy ({self.admitted} questions in the queue, the limit is "
                    f"{self.limit + 1}): retry in a few seconds"
                )
            self.admitted += 1
            return self.admitted - 1

    def release(self, outcome: str | None = None) -> None:
        """Give a place back; `outcome` counts a generation that ran (or was skipped) on the reader thread."""
        with self._lock:
            self.admitted -= 1
            if outcome is not None:
                self.running = False
                self.counts[outcome] += 1

    async def on_index(self, fn: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.index_thread, fn, *args)

    def start(self, job: _Job) -> None:
        """Queue `job` for the reader; its place is given back when it ends, however it ends."""
        self.reader_thread.submit(self._generate, job)

    def _generate(self, job: _Job) -> None:
        outcome = "failed"
        try:
            if job.cancel.is_set():  # the client left while waiting
                outcome = "cancelled"
                return
            with self._lock:
                self.running = True
            started = time.perf_counter()
            pieces = iter(job.stream)
            try:
                for piece in pieces:
                    job.emit("piece", {"text": piece})
                    if job.cancel.is_set():
                        outcome = "cancelled"
                        return
            finally:
                pieces.close()  # stops the reader's generator (and frees its lock) at this piece
            obj = answer_to_json(job.stream.answer, job.stream.question)
            obj["timings"]["queued_s"] = round(started - job.retrieved, 4)
            job.emit("answer", obj)
            outcome = "answered"
        except Exception as e:  # every admitted question gets an answer or an error event
            if not isinstance(e, RagError):
                log.exception("the reader failed")
            job.emit("error", e)
        finally:
            self.release(outcome)

    def shutdown(self) -> None:
        self.index_thread.shutdown(wait=False, cancel_futures=True)
        self.reader_thread.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------- the app


def _error(status: int, message: str, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _status_of(e: Exception) -> int:
    return 503 if isinstance(e, Busy) else 400 if isinstance(e, BadInput) else 500


def _one_line(e: Exception) -> str:
    if isinstance(e, RagError):
        return " ".join(str(e).split())
    return f"internal error ({type(e).__name__}): see the server's log"


def _sse(kind: str, obj: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n"


USAGE = {
    "/api/ask": 'POST /api/ask takes {"question": "...", "k": 5, "reader": "llm"}',
    "/api/search": "GET /api/search takes ?q=...&k=5&mode=hybrid",
}


def _validation_message(exc, path: str) -> str:
    """One line from pydantic's errors, e.g. "k: Input should be a valid integer (POST /api/ask takes ...)"."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")) or "body"
    usage = USAGE.get(path, "see /docs")
    return f"bad request: {where}: {first.get('msg', 'invalid')} ({usage})"


def page_response():
    """The page, with a Content-Security-Policy that lets only its own inline script and style run."""
    from fastapi.responses import HTMLResponse

    html = PAGE.read_text(encoding="utf-8")

    def digest(tag: str) -> str:
        body = html.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"

    csp = (
        f"default-src 'none'; script-src {digest('script')}; style-src {digest('style')}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return HTMLResponse(html, headers=headers)


def create_app(
    open_retriever: Callable[[str], Retriever],
    readers: dict[str, Reader],
    cfg: ServeConfig = ServeConfig(),
    mode: str = "hybrid",
    k: int = 5,
):
    """The FastAPI app. `open_retriever(mode)` is called on the index thread (now for `mode`, later for
    other modes /api/search asks for); the first of `readers` answers when a request names none."""
    from contextlib import asynccontextmanager

    from fastapi import Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException

    queue = AskQueue(cfg.queue)
    retrievers: dict[str, Retriever] = {mode: queue.index_thread.submit(open_retriever, mode).result()}
    default_reader, default_k = next(iter(readers)), k

    def retriever_for(m: str) -> Retriever:  # on the index thread
        if m not in retrievers:
            retrievers[m] = open_retriever(m)
        return retrievers[m]

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()

    app = FastAPIOffline(
        title="rag",
        description="Question answering over your own documents, with answers that cite their sources.",
        version="0.1.0",
        redoc_url=None,
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.queue = queue

    @app.exception_handler(RagError)
    async def rag_error(request: Request, e: RagError):
        headers = {"Retry-After": "2"} if isinstance(e, Busy) else None
        return _error(_status_of(e), _one_line(e), headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        msg = str(e.detail)
        if e.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint {request.url.path}: the API is listed at /docs"
        elif e.status_code == 413 and msg == "Content Too Large":
            msg = BODY_TOO_LARGE.format(cfg.max_body)
        elif e.status_code == 405:
            msg = f"{request.method} is not allowed on {request.url.path}: the API is listed at /docs"
        return _error(e.status_code, msg, getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        return _error(400, _validation_message(e, request.url.path))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        return _error(500, _one_line(e))

    class AskBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        question: str = Field(description="The question, at most max_question characters.")
        k: int = Field(default_k, ge=1, le=cfg.max_k, description="Passages given to the reader.")
        reader: str = Field(default_reader, description=f"One of: {', '.join(readers)}.")

    def info() -> dict:
        r = retrievers[mode]
        idx = getattr(r, "index", None)
        index = None
        if idx is not None:
            index = {
                "path": str(idx.dir),
                "generation": idx.gen.name,
                "files": len(idx.manifest.get("files", {})),
                "chunks": len(idx),
                "embedder": idx.embedder,
            }
        rd = readers[default_reader]
        return {
            "status": "ok",
            "index": index,
            "mode": mode,
            "reader": {"name": rd.name, **getattr(rd, "reader", {})},
            "readers": list(readers),
            "queue": queue.status(),
        }

    @app.get("/", include_in_schema=False)
    async def page():
        return page_response()

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        from fastapi.responses import Response

        return Response(status_code=204)  # none: a 404 would show as an error in the browser's console

    @app.get("/health")
    async def health() -> dict:
        """The index and reader this server holds, and its queue (answers once the server can serve)."""
        return info()

    @app.post("/api/ask")
    async def ask(body: AskBody, request: Request):
        """The `rag ask --json` object (plus the question); server-sent events with Accept: text/event-stream."""
        if len(body.question) > cfg.max_question:
            raise HTTPException(
                413,
                f"the question is {len(body.question)} characters, the limit is {cfg.max_question}: shorten it",
            )
        if body.reader not in readers:
            raise BadInput(
                f"reader {body.reader!r} is not loaded in this server (it has {', '.join(readers)}): "
                f"leave `reader` out, or restart with `rag serve --reader {body.reader}`"
            )
        ahead = queue.admit()
        try:
            stream = await queue.on_index(
                AskStream, body.question, retrievers[mode], readers[body.reader], body.k
            )
        except BaseException:  # a bad question (or a failed search) gives its place back
            queue.release()
            raise
        job = _Job(stream, asyncio.get_running_loop())
        queue.start(job)
        if "text/event-stream" in request.headers.get("accept", ""):
            return StreamingResponse(
                _stream_events(job, ahead),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        answer = await _until_answer(job, request)
        if answer is None:  # nobody is there to read it
            return _error(499, "the client closed the request")
        return JSONResponse(answer)

    @app.get("/api/search")
    async def search(
        q: str = Query(description="What to look for."),
        k: int = Query(k, ge=1, le=cfg.max_k),
        mode: str = Query(mode, description="dense | bm25 | hybrid"),
    ) -> list[dict]:
        """The `rag search --json` list: the best-matching chunks with their sources and offsets."""
        if len(q) > cfg.max_question:
            raise HTTPException(
                413, f"the query is {len(q)} characters, the limit is {cfg.max_question}: shorten it"
            )
        if not q.strip():
            raise BadInput("the query is empty: pass what to look for, e.g. /api/search?q=smallest+planet")

        def run():
            return hits_to_json(retriever_for(mode).search(q, k))

        return await queue.on_index(run)

    @app.get("/api/passages/{chunk_id:path}")
    async def passage(chunk_id: str) -> dict:
        """One chunk by id (`<source>:<start>-<end>`, as in a citation): looked up in the index, never on disk."""

        def find():
            idx = getattr(retrievers[mode], "index", None)
            return None if idx is None or len(chunk_id) > 4096 else idx.db.by_id(chunk_id)

        c = await queue.on_index(find)
        if c is None:
            raise HTTPException(
                404, f"no passage {chunk_id[:200]!r} in this index: take ids from a citation or /api/search"
            )
        return {"id": c.id, "source": c.doc, "start": c.start, "end": c.end, "text": c.text}

    app.add_middleware(Guard, cfg=cfg)
    return app


async def _events(job: _Job) -> AsyncIterator[tuple[str, Any]]:
    """The job's events up to its answer or error; leaving early cancels the generation."""
    try:
        while True:
            kind, value = await job.events.get()
            yield kind, value
            if kind in ("answer", "error"):
                return
    finally:
        job.cancel.set()


async def _stream_events(job: _Job, ahead: int) -> AsyncIterator[str]:
    yield _sse("queued", {"ahead": ahead})
    async for kind, value in _events(job):
        if kind == "error":
            yield _sse("error", {"error": _one_line(value), "status": _status_of(value)})
        else:
            yield _sse(kind, value)


async def _until_answer(job: _Job, request) -> dict | None:
    """The answer object (None when the client left: that frees the reader); raises the job's error."""

    async def last():
        async for kind, value in _events(job):
            if kind == "answer":
                return value
            if kind == "error":
                raise value

    task = asyncio.ensure_future(last())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            return None


# ---------------------------------------------------------------- the guard: host, origin, token, body size


class Guard:
    """Plain ASGI middleware in front of the app.

    - Host: when bound to loopback, a request whose Host is not a loopback name is refused (a web page
      cannot reach the API through DNS rebinding).
    - Origin: a browser request from another origin is refused (no CORS: other sites cannot use it).
    - Token: with a token set, /health and /api/* need `Authorization: Bearer <token>`.
    - Body: at most cfg.max_body bytes: a longer Content-Length is refused unread, a longer body as read.
    """

    def __init__(self, app, cfg: ServeConfig):
        self.app, self.cfg = app, cfg
        self.loopback = is_loopback(cfg.host)

    def _refusal(self, scope) -> tuple[int, str, dict | None] | None:
        from starlette.datastructures import Headers

        h = Headers(scope=scope)
        host = h.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
        if self.loopback and not is_loopback(name):
            return 400, f"Host {host!r} is not this server: open it as http://127.0.0.1:<port>/", None
        origin = h.get("origin")
        if origin is not None and origin.split("://", 1)[-1].lower() != host.lower():
            return (
                403,
                "cross-origin requests are refused (this server sends no CORS headers): use its own page",
                None,
            )
        path = scope["path"]
        if self.cfg.token and (path == "/health" or path.startswith("/api/")):
            scheme, _, given = h.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.cfg.token.encode()
            ):
                return (
                    401,
                    "missing or wrong token: send `Authorization: Bearer <token>` with the server's --token / RAG_TOKEN",
                    {"WWW-Authenticate": "Bearer"},
                )
        length = h.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.cfg.max_body):
            return 413, BODY_TOO_LARGE.format(self.cfg.max_body), None
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await _error(*refusal)(scope, receive, send)
        from starlette.exceptions import HTTPException

        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.cfg.max_body:  # FastAPI passes an HTTPException from the body read to its handler
                raise HTTPException(413, "Content Too Large")
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------- running it


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or BadInput naming the fix."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise BadInput(
            f"--host {host}: cannot resolve it ({e.strerror}): pass an address such as 127.0.0.1"
        ) from e
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise BadInput(
            f"cannot listen on {host}:{port} ({e.strerror}): pick another --port, or stop what uses it"
        ) from e
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(app, sock: socket.socket) -> None:
    """Run `app` with uvicorn on a socket from bind() until Ctrl-C (in-flight answers get 5 s to end)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
