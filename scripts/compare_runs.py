"""Compare saved predictions of the same questions across `rag eval` runs (e.g. k = 2, 3, 5), with paired
bootstrap CIs against a reference: what one `rag eval` cannot do when the setting differs per run.

    python scripts/compare_runs.py REF=PRED.jsonl NAME=PRED.jsonl ... [--testset FILE ...] [--out JSON]

Each argument names a prediction file (a run folder's pred-*.jsonl). Only questions every file answered
are compared. Per system: EM / F1 (x100, answerable questions; a decline scores 0), declined (share of
unanswerable questions declined), wrong declines (share of answerable ones declined), reading time p50
and p95, and the F1 difference to the first system with its 95% paired bootstrap CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=path/to/pred-....jsonl, the reference first")
    ap.add_argument("--testset", type=Path, nargs="*", default=None, help="test set files (default: bundled)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from eval.metrics import paired_bootstrap
    from eval.testset import load_testset
    from rag.text import em_f1

    qs = {q.id: q for q in load_testset(args.testset).questions}
    preds = {}
    for spec in args.runs:
        name, _, path = spec.partition("=")
        preds[name] = {r["id"]: r for r in map(json.loads, open(path))}
    common = sorted(set.intersection(*(set(p) for p in preds.values())) & set(qs))
    if not common:
        raise SystemExit("no question is in every prediction file")
    ans_ids = [i for i in common if not qs[i].unanswerable]
    un_ids = [i for i in common if qs[i].unanswerable]

    def scores(p: dict) -> dict[str, tuple[float, float]]:
        return {i: (0.0, 0.0) if p[i]["abstained"] else em_f1(p[i]["text"], qs[i].answers) for i in ans_ids}

    rows, ref = [], None
    for name, p in preds.items():
        s = scores(p)
        f1 = [100 * s[i][1] for i in ans_ids]
        secs = sorted(p[i]["seconds"] for i in common)
        row = {
            "system": name,
            "questions": len(common),
            "answerable": len(ans_ids),
            "em": round(100 * statistics.mean(s[i][0] for i in ans_ids), 2),
            "f1": round(statistics.mean(f1), 2),
            "declined": round(sum(p[i]["abstained"] for i in un_ids) / len(un_ids), 3) if un_ids else None,
            "wrong_declines": round(sum(p[i]["abstained"] for i in ans_ids) / len(ans_ids), 3),
            "read_p50_s": round(statistics.median(secs), 3),
            "read_p95_s": round(secs[int(0.95 * (len(secs) - 1))], 3),
        }
        if ref is None:
            ref = f1
        else:
            bs = paired_bootstrap(f1, ref, n_boot=2000, seed=0)
            row["f1_vs_ref"] = {"diff": round(bs.diff, 2), "lo": round(bs.lo, 2), "hi": round(bs.hi, 2)}
        rows.append(row)

    print(
        f"{len(common)} questions ({len(ans_ids)} answerable); F1 difference vs {rows[0]['system']} (95% CI)"
    )
    print(
        f"{'system':<22} {'EM':>6} {'F1':>6} {'dF1 [95% CI]':>22} {'declined':>9} {'wrong':>6} {'p50 s':>6}"
    )
    for r in rows:
        d = r.get("f1_vs_ref")
        ci = f"{d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]" if d else "ref"
        dec = "-" if r["declined"] is None else f"{r['declined']:.3f}"
        print(
            f"{r['system']:<22} {r['em']:6.1f} {r['f1']:6.1f} {ci:>22} {dec:>9} {r['wrong_declines']:6.3f} "
            f"{r['read_p50_s']:6.2f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": args.runs, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
