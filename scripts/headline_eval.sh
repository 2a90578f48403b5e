#!/bin/bash
# The README's headline evaluation: 1,000 SQuAD v1.1 dev + 300 Disfl-QA questions (seed 0), every system,
# and the local judge (qwen2.5-1.5b) on the same 20 answerable questions for the tuned and untuned Qwen.
# Runs the systems in priority order (each step logs its own run), then re-scores all 8 together from the
# saved predictions and judge scores. Predictions and judge scores are saved per question: after an interruption, run it
# again to resume; finished steps are re-scored from the cache in seconds.
#   scripts/headline_eval.sh [RUNS_DIR]      (default: the rag runs folder)
set -euo pipefail
R=(--testset --limit 1300 --unanswerable 300 --seed 0)
if [ $# -ge 1 ]; then R+=(--runs "$1"); fi
rag eval "${R[@]}" -s extractive -s extractive@gold -s qwen2.5-0.5b+tuned
rag eval "${R[@]}" -s qwen2.5-0.5b+tuned@gold
rag eval "${R[@]}" -s smollm2-135m+tuned
rag eval "${R[@]}" -s qwen2.5-0.5b
rag eval "${R[@]}" -s qwen2.5-0.5b+tuned -s qwen2.5-0.5b --judge qwen2.5-1.5b --judge-limit 20
rag eval "${R[@]}" -s smollm2-135m+tuned@gold
rag eval "${R[@]}" -s smollm2-135m
rag eval "${R[@]}" -s extractive -s extractive@gold -s smollm2-135m+tuned -s smollm2-135m+tuned@gold \
  -s qwen2.5-0.5b+tuned -s qwen2.5-0.5b+tuned@gold -s smollm2-135m -s qwen2.5-0.5b \
  --judge qwen2.5-1.5b --judge-limit 20 --judge-system qwen2.5-0.5b+tuned --judge-system qwen2.5-0.5b
