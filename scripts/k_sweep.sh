#!/bin/bash
# Issue 17's passage-count choice and issue 14's decoding lever on the same questions: the default tuned
# reader on 240 bundled questions (200 SQuAD v1.1 dev + 40 Disfl-QA, seed 0), one run per setting, then
# scripts/compare_runs.py for paired CIs against the previous default (all-MiniLM index, no reranking,
# k=5, free decoding). Runs in priority order; the reranked runs share one runs folder, so the reranked
# hits (depth 10) are retrieved once for every k.
#   scripts/k_sweep.sh OUT_DIR OLD_INDEX NEW_INDEX
set -euo pipefail
OUT=${1:?usage: scripts/k_sweep.sh OUT_DIR OLD_INDEX NEW_INDEX}
R=(--testset --limit 240 --unanswerable 40 --seed 0)
S=qwen2.5-0.5b+tuned
rag eval "${R[@]}" -s $S -k 5 --no-rerank --index "$2" --runs "$OUT/old"
rag eval "${R[@]}" -s $S -k 3 --rerank --index "$3" --runs "$OUT/new"
rag eval "${R[@]}" -s $S:span -k 3 --rerank --index "$3" --runs "$OUT/new"
rag eval "${R[@]}" -s $S -k 5 --rerank --index "$3" --runs "$OUT/new"
rag eval "${R[@]}" -s $S -k 2 --rerank --index "$3" --runs "$OUT/new"
