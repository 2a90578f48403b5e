#!/bin/bash
# The reader levers on one seeded sample (200 SQuAD v1.1 dev + 40 Disfl-QA + 40 corpus-absent, seed 0),
# free vs span-faithful decoding, with and without reranking (k=5 plain, k=3 reranked: each retrieval
# setting at the k its measurement chose), then the documentation test set for the same four. Each step
# logs its own run; predictions are saved per question, so an interrupted run resumes when run again.
#   scripts/reader_ablation.sh [THRESHOLD]     (default: rag.toml / the built-in abstain threshold)
set -euo pipefail
T=${1:-}
SPAN="qwen2.5-0.5b+tuned:span${T:+=$T}"
FREE="qwen2.5-0.5b+tuned:free"
B=(--testset --limit 240 --unanswerable 40 --seed 0)
rag eval "${B[@]}" -s "$SPAN" -s "$FREE" --no-rerank -k 5
rag eval "${B[@]}" -s "$SPAN" -s "$FREE" --rerank -k 3
DOCS=${RAG_DOCS_INDEX:-/tmp/rag-docs-index}
[ -e "$DOCS" ] || rag index eval/data/docs/corpus --index "$DOCS"
D=(--testset eval/data/docs/questions.jsonl --corpus eval/data/docs/corpus --index "$DOCS" --seed 0)
rag eval "${D[@]}" -s "$SPAN" -s "$FREE" --no-rerank -k 5
rag eval "${D[@]}" -s "$SPAN" -s "$FREE" --rerank -k 3
