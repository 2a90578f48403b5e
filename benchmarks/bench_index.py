"""Indexing throughput on corpus/: our build against LangChain's FAISS.from_documents with
HuggingFaceEmbeddings on the same embedder and the same chunks, in the same run; and the cost of a
re-index after one file changes. Model loading is excluded from both (each loads once, warm).

    python benchmarks/bench_index.py
Prints a table and writes benchmarks/results/index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line  # noqa: E402


def _OnnxLangChain(emb):
    """The LangChain Embeddings a user would write for an ONNX model: the same model file and tokenizer in
    one InferenceSession on every core, batches of 32 in input order, the real attention mask, CLS
    pooling. Our build differs in how it runs the model (one text per call on one-thread sessions, longest
    first: indexing.onnx), not in the model."""
    import numpy as np
    from langchain_core.embeddings import Embeddings

    from indexing.onnx import feed, make_session
    from rag.hardware import cpu_threads

    session = make_session(emb.folder / "model.onnx", cpu_threads())

    def run(texts):
        inputs = feed(emb._cut.encode_batch(list(texts)), emb.pad_id, emb.inputs)
        (hidden,) = session.run(None, inputs)
        vecs = hidden[:, 0]
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

    class OnnxEmbeddings(Embeddings):
        def embed_documents(self, texts):
            out = []
            for i in range(0, len(texts), 32):
                out.extend(run(texts[i : i + 32]).tolist())
            return out

        def embed_query(self, text):
            return emb.encode_queries([text])[0].tolist()

    return OnnxEmbeddings()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index.json")
    ap.add_argument("--embedder", default=None, help="embedder preset (default: rag.toml's / the default)")
    args = ap.parse_args()

    import torch

    from assets import models
    from indexing import store
    from indexing.build import build_index
    from indexing.embed import get_embedder
    from indexing.onnx import OnnxEmbedder
    from rag.config import IndexConfig
    from rag.hardware import cpu_threads, describe

    work = Path(tempfile.mkdtemp(prefix="rag-bench-index-"))
    corpus = work / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    cfg = IndexConfig(embedder=args.embedder) if args.embedder else IndexConfig()
    emb = get_embedder(cfg.embedder)
    emb.encode(["warm up"])

    t = time.perf_counter()
    full = build_index([corpus], work / "index", cfg, embedder=emb)
    full_s = time.perf_counter() - t

    victim = sorted(corpus.glob("*.txt"))[0]
    victim.write_text(victim.read_text() + "\n\nA new closing paragraph added for the benchmark.\n")
    t = time.perf_counter()
    inc = build_index([corpus], work / "index", cfg, embedder=emb)
    inc_s = time.perf_counter() - t

    # LangChain baseline on exactly our chunks, same model folder, fp32 as HuggingFaceEmbeddings loads it.
    # langchain-community's class (same sentence-transformers call): langchain-huggingface would pin
    # huggingface-hub < 2, below what transformers 5 uses, so it is not in the lock.
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document

    idx = store.open_index(work / "index")
    chunks = idx.db.get(list(range(len(idx))))
    docs = [Document(page_content=c.text, metadata={"source": c.doc, "start": c.start}) for c in chunks]
    if isinstance(emb, OnnxEmbedder):
        lc_emb = _OnnxLangChain(emb)  # no sentence-transformers class runs this ONNX file
    else:
        lc_emb = HuggingFaceEmbeddings(
            model_name=str(models.resolve(cfg.embedder)),
            model_kwargs={"device": "cpu"},
            encode_kwargs={"normalize_embeddings": True},
        )
    lc_emb.embed_documents(["warm up"])
    t = time.perf_counter()
    FAISS.from_documents(docs, lc_emb)
    lc_s = time.perf_counter() - t

    res = {
        "chunks": full.chunks,
        "ours_full_s": round(full_s, 2),
        "ours_chunks_per_s": round(full.chunks / full_s, 1),
        "langchain_full_s": round(lc_s, 2),
        "langchain_chunks_per_s": round(len(docs) / lc_s, 1),
        "speedup_vs_langchain": round(lc_s / full_s, 2),
        "reindex_one_file_s": round(inc_s, 2),
        "reindex_chunks_embedded": inc.chunks_embedded,
        "reindex_speedup": round(full_s / inc_s, 1),
        "ours_bf16": bool(getattr(emb, "bf16", False)),
        "torch_threads": torch.get_num_threads(),
        "cpus": cpu_threads(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "hardware": describe(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "embedder": cfg.embedder,
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"\nindexing corpus/ ({res['chunks']} chunks, embedder {cfg.embedder}, {res['cpus']} threads)")
    hw = res["hardware"]
    print(cpu_line(hw, f"; embedder bf16={res['ours_bf16']}"))
    print(f"{'':28} {'seconds':>8} {'chunks/s':>9}")
    print(f"{'ours (full build)':28} {full_s:8.1f} {res['ours_chunks_per_s']:9.1f}")
    print(f"{'LangChain FAISS.from_docs':28} {lc_s:8.1f} {res['langchain_chunks_per_s']:9.1f}")
    print(f"{'ours, re-index 1 changed file':28} {inc_s:8.2f}   ({inc.chunks_embedded} chunks embedded)")
    print(
        f"speedup vs LangChain {res['speedup_vs_langchain']}x (target >= 1.5x); "
        f"re-index {res['reindex_speedup']}x faster than full (target >= 20x); load avg {res['load_avg_1m']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
