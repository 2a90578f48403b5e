#!/bin/bash
# The README's headline evaluation: 1,000 SQuAD v1.1 dev + 300 Disfl-QA questions (seed 0), every system.
# Runs the systems in priority order (each step logs its own run), then re-scores all 8 together from the
# saved predictions. Predictions are saved per question: after an interruption, run it again to resume.
#   scripts/headline_eval.sh [RUNS_DIR]      (default: the rag runs folder)
set -euo pipefail
R=(--testset --limit 1300 --unanswerable 300 --seed 0)
if [ $# -ge 1 ]; then R+=(--runs "$1"); fi
rag eval "${R[@]}" -s extractive -s extractive@gold -s qwen2.5-0.5b+tuned
rag eval "${R[@]}" -s qwen2.5-0.5b+tuned@gold
rag eval "${R[@]}" -s smollm2-135m+tuned -s smollm2-135m+tuned@gold
rag eval "${R[@]}" -s qwen2.5-0.5b
rag eval "${R[@]}" -s smollm2-135m
rag eval "${R[@]}" -s extractive -s extractive@gold -s smollm2-135m+tuned -s smollm2-135m+tuned@gold \
  -s qwen2.5-0.5b+tuned -s qwen2.5-0.5b+tuned@gold -s smollm2-135m -s qwen2.5-0.5b
