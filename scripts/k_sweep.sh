#!/bin/bash
# Issue 17's passage-count choice and issue 14's decoding lever on the same questions: the default tuned
# reader on 240 bundled questions (200 SQuAD v1.1 dev + 40 Disfl-QA, seed 0), one run per setting, then
# scripts/compare_runs.py for paired CIs against the previous default (k=5, no reranking, free decoding).
#   scripts/k_sweep.sh OUT_DIR [SPAN_THRESHOLD]
set -euo pipefail
OUT=${1:?usage: scripts/k_sweep.sh OUT_DIR [SPAN_THRESHOLD]}
T=${2:-0}
R=(--testset --limit 240 --unanswerable 40 --seed 0)
S=qwen2.5-0.5b+tuned
rag eval "${R[@]}" -s $S -k 5 --no-rerank --runs "$OUT/k5-norerank"
for k in 5 3 2; do
  rag eval "${R[@]}" -s $S -k $k --rerank --runs "$OUT/k$k-rerank"
done
