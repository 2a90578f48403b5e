"""Scale: every SQuADShifts paragraph (new_wiki, nyt, reddit, amazon) plus corpus/, indexed by each
store/engine pair: build time, chunks/s, size on disk, re-index of one changed file, query p50/p95 per
mode, and recall@5 on the bundled SQuAD dev questions (must equal the folder store's within 0.005).
Postgres rows are also queried with `?lexical=tsvector` (Postgres full-text search in BM25's place), so
the bm25 and hybrid modes' recall@5 and p50 say which lexical index the Postgres store should default to.
Ends with a projection of 10 million chunks on N machines from the measured slope.

    python benchmarks/bench_scale.py                       # folder/postgres x local/ray, writes results/scale.json
    python benchmarks/bench_scale.py --limit 300 --queries 20 --fake-embedder
                                                           # a smoke run: no model, 300 paragraphs, nothing written
    python benchmarks/bench_scale.py --url postgresql://me@db:5432/rag   # your own Postgres (else pgserver)

Run it on an otherwise idle machine: embedding is CPU-bound and any other job skews every row.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import cpu_line, write_result  # noqa: E402

SETS = ("new_wiki", "nyt", "reddit", "amazon")
MODES = ("dense", "bm25", "hybrid")
LEXICAL = ("bm25", "hybrid")  # the modes `?lexical=tsvector` changes


def build_corpus(out: Path, limit: int | None) -> int:
    """corpus/ as it is, plus one file per SQuADShifts article under squadshifts/<set>/; paragraphs written."""
    from assets.bigbench import squadshifts

    shutil.copytree(ROOT / "corpus", out, dirs_exist_ok=True)
    n = 0
    for name in SETS:
        for a, article in enumerate(squadshifts(name)):
            paras = [p["context"].strip() for p in article["paragraphs"]]
            if limit is not None:
                paras = paras[: max(0, limit - n)]
            if not paras:
                break
            d = out / "squadshifts" / name
            d.mkdir(parents=True, exist_ok=True)
            title = "".join(ch if ch.isalnum() else "_" for ch in str(article.get("title", a)))[:60]
            (d / f"{a:05d}_{title}.txt").write_text("\n\n".join(paras) + "\n")
            n += len(paras)
    return n


def size_of(where) -> int:
    """Bytes the index takes: the folder's files, or the rag tables with their indexes and TOAST."""
    from indexing.backends import is_url

    if not is_url(where):
        return sum(p.stat().st_size for p in Path(where).rglob("*") if p.is_file())
    from indexing.pg import connect

    with connect(where) as conn:
        return int(
            conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relkind = 'r' AND c.relname LIKE 'rag\\_%' AND pg_table_is_visible(c.oid)"
            ).fetchone()[0]
        )


def questions(n: int, seed: int = 0):
    from eval.testset import load_testset

    qs = [q for q in load_testset().questions if q.origin == "squad_dev" and q.has_gold_span]
    random.Random(seed).shuffle(qs)
    return qs[:n]


def query_rows(where, emb, qs, modes=MODES) -> dict:
    """p50/p95 ms of one search(q, 5) per mode, and recall@5 over `qs`."""
    from eval.metrics import first_relevant_rank, recall_at_k
    from eval.retrieval import is_gold_hit
    from indexing.retrieve import open_retriever
    from rag.config import RetrievalConfig

    out = {}
    for mode in modes:
        r = open_retriever(where, mode=mode, cfg=RetrievalConfig(rerank=False), embedder=emb)
        r.search(qs[0].question, 5)  # warm: BM25 loads, the first query pays for lazy set-up
        ms, ranks = [], []
        for q in qs:
            t = time.perf_counter()
            hits = r.search(q.question, 5)
            ms.append(1000 * (time.perf_counter() - t))
            ranks.append(first_relevant_rank([is_gold_hit(h.chunk, q) for h in hits]))
        ms.sort()
        out[mode] = {
            "p50_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 2),
            "recall@5": round(recall_at_k(ranks, 5), 4),
        }
        r.index.db.close()
    return out


def _cells(q: dict | None) -> str:
    """One mode's table cells: p50/p95 ms and recall@5, or a dash for a mode not measured."""
    if q is None:
        return f" {'-':>20} {'':>6}"
    return f" {q['p50_ms']:>9.1f}/{q['p95_ms']:<9.1f} {q['recall@5']:>6.3f}"


def run_pair(store: str, engine: str, corpus: Path, work: Path, url: str, emb, cfg, args, qs) -> dict:
    from indexing.build import build_index

    where = url if store == "postgres" else work / f"index-{engine}"
    run_on = None
    if engine == "ray":
        from indexing.ray_engine import RayEngine

        run_on = RayEngine(address=args.address, make_embedder=type(emb) if args.fake_embedder else None)
    if store == "postgres":  # start from an empty database
        from indexing.pg import connect

        with connect(url) as conn:
            for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'rag\\_%'"
            ).fetchall():
                conn.execute(f'DROP TABLE "{t}"')
    full = build_index([corpus], where, cfg, embedder=emb, engine=run_on)
    changed = next((corpus / "squadshifts").rglob("*.txt"), None) or next(corpus.rglob("*.txt"))
    original = changed.read_text()
    changed.write_text(original + "\nA paragraph added to time a re-index of one changed file.\n")
    try:
        again = build_index([corpus], where, cfg, embedder=emb, engine=run_on)
    finally:
        changed.write_text(original)
    row = {
        "store": store,
        "engine": engine,
        "chunks": full.chunks,
        "build_s": round(full.seconds, 1),
        "chunks_per_s": round(full.chunks / full.seconds, 1) if full.seconds else None,
        "size_mb": round(size_of(where) / 1e6, 1),
        "reindex_one_file_s": round(again.seconds, 2),
        "reindex_speedup": round(full.seconds / again.seconds, 1) if again.seconds else None,
        "queries": query_rows(where, emb, qs),
    }
    if store == "postgres":  # the same index, its lexical side ranked by Postgres's full-text search
        from indexing.pg import with_option

        row["queries_tsvector"] = query_rows(with_option(where, "lexical", "tsvector"), emb, qs, LEXICAL)
    build_index([corpus], where, cfg, embedder=emb, engine=run_on)  # back to the corpus as it was
    return row


def projection(rows: list[dict]) -> list[str]:
    """10M chunks from the slowest measured chunks/s, split over N machines like this one."""
    rates = [r["chunks_per_s"] for r in rows if r["chunks_per_s"]]
    if not rates:
        return []
    rate = min(rates)
    lines = [f"10M chunks at {rate:.0f} chunks/s per machine (this one, the slowest row):"]
    for n in (1, 4, 16, 64):
        lines.append(f"  {n:>3} machine(s): {1e7 / (rate * n) / 3600:8.1f} h of embedding")
    lines += [
        "  limits: embedding scales with Ray actors (one model each); the driver still collects every vector",
        "  (10M x 384 x 4 B = 15 GB) before the first batch is written (batches commit as they are written,",
        "  but only after all embedding), each build re-scores BM25 over all chunks in one process, and a full",
        "  build's HNSW wants the graph in maintenance_work_mem: past a few million chunks, stream embedded",
        "  batches to the store, and use ?lexical=tsvector (no BM25 to load) or shard BM25.",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--limit", type=int, default=None, help="SQuADShifts paragraphs (smoke run: writes nothing)"
    )
    ap.add_argument("--queries", type=int, default=300, help="seeded SQuAD dev questions timed and scored")
    ap.add_argument("--stores", nargs="+", default=["folder", "postgres"], choices=["folder", "postgres"])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--embedder", default=None, help="embedder preset (default: rag's default)")
    ap.add_argument("--fake-embedder", action="store_true", help="the tests' hashing embedder (smoke run)")
    ap.add_argument("--url", default=None, help="a PostgreSQL URL to use (default: a throwaway pgserver)")
    ap.add_argument("--address", default=None, help="Ray cluster for --engines ray (default: a local Ray)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()

    from dataclasses import asdict

    from indexing.embed import get_embedder
    from rag.config import IndexConfig
    from rag.hardware import describe

    hw = describe()
    cfg = IndexConfig() if args.embedder is None else IndexConfig(embedder=args.embedder)
    if args.fake_embedder:  # the plumbing without a model: figures mean nothing, so nothing is written
        sys.path.insert(0, str(ROOT / "tests"))
        # and for Ray's workers, which start with this environment but not this sys.path
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
        from fakes import HashEmbedder

        emb = HashEmbedder()
        args.limit = 300 if args.limit is None else args.limit
    else:
        emb = get_embedder(cfg.embedder)
    qs = questions(args.queries)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        paragraphs = build_corpus(corpus, args.limit)
        url = args.url
        server = None
        if "postgres" in args.stores and url is None:
            import pgserver

            server = pgserver.get_server(work / "pg", cleanup_mode="stop")
            url = server.get_uri()
        rows = []
        for engine in args.engines:
            for store in args.stores:
                print(f"indexing: {store} store, {engine} engine ...", flush=True)
                rows.append(run_pair(store, engine, corpus, work, url, emb, cfg, args, qs))
        if server is not None:
            server.cleanup()

    print(
        cpu_line(
            hw, f"; embedder {emb.name}; {paragraphs} SQuADShifts paragraphs + corpus/; {len(qs)} queries"
        )
    )
    head = f"{'store':<9} {'engine':<6} {'chunks':>7} {'build s':>8} {'chunks/s':>9} {'MB':>7} {'reindex s':>9} {'x':>6}"
    print(head + "".join(f" {m + ' p50/p95 ms':>20} {'R@5':>6}" for m in MODES))
    base = next((r for r in rows if r["store"] == "folder" and r["engine"] == "local"), None)
    for r in rows:
        line = (
            f"{r['store']:<9} {r['engine']:<6} {r['chunks']:>7} {r['build_s']:>8} {r['chunks_per_s']:>9} "
            f"{r['size_mb']:>7} {r['reindex_one_file_s']:>9} {r['reindex_speedup']:>6}"
        )
        print(line + "".join(_cells(r["queries"].get(m)) for m in MODES))
        if "queries_tsvector" in r:  # the same index with ?lexical=tsvector (dense is unchanged)
            line = f"{'tsvector':>9} {r['engine']:<6} {'':>7} {'':>8} {'':>9} {'':>7} {'':>9} {'':>6}"
            print(line + "".join(_cells(r["queries_tsvector"].get(m)) for m in MODES))
    if base:
        for r in rows:
            deltas = {
                m: round(r["queries"][m]["recall@5"] - base["queries"][m]["recall@5"], 4) for m in MODES
            }
            r["recall@5_vs_folder_local"] = deltas
            ok = all(abs(d) <= 0.005 for d in deltas.values())
            print(
                f"  {r['store']}/{r['engine']}: recall@5 minus folder/local {deltas} {'ok' if ok else 'OFF TARGET'}"
            )
    for r in rows:  # the lexical choice: BM25 beside the chunks (the default) or Postgres's tsvector
        if "queries_tsvector" in r:
            ts = r["queries_tsvector"]
            gain = {m: round(ts[m]["recall@5"] - r["queries"][m]["recall@5"], 4) for m in LEXICAL}
            r["tsvector_minus_bm25_recall@5"] = gain
            saved = {m: round(r["queries"][m]["p50_ms"] - ts[m]["p50_ms"], 2) for m in LEXICAL}
            print(
                f"  {r['store']}/{r['engine']} ?lexical=tsvector: recall@5 minus BM25's {gain}, "
                f"p50 ms saved {saved}"
            )
    lines = projection(rows)
    print("\n".join(lines))
    if args.limit is not None:
        print("--limit: a smoke run; no result written")
        return
    summary = {
        f"{r['store']}/{r['engine']}": {
            "chunks_per_s": r["chunks_per_s"],
            "hybrid_p50_ms": r["queries"]["hybrid"]["p50_ms"],
            **(
                {"tsvector_minus_bm25_recall@5": r["tsvector_minus_bm25_recall@5"]}
                if "tsvector_minus_bm25_recall@5" in r
                else {}
            ),
        }
        for r in rows
    }
    settings = {"paragraphs": paragraphs, "queries": len(qs), "index": asdict(cfg), "embedder": emb.name}
    write_result(args.out, "scale", hw, settings, rows, summary, projection=lines)


if __name__ == "__main__":
    main()
