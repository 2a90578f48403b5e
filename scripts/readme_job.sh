#!/usr/bin/env bash
# README command 1, exactly as written, in a fresh RAG_HOME: what a newcomer runs first.
#
# Checks that it answers the Super Bowl question with "Denver Broncos" and a citation, that the mercury
# question (not in the corpus) is declined, and that nothing anywhere printed a traceback.
# .ci/run calls it after the test suite; run it by hand the same way:
#
#   scripts/readme_job.sh            # a throwaway RAG_HOME, removed afterwards
#   RAG_HOME=/tmp/x scripts/readme_job.sh
set -uo pipefail
cd "$(dirname "$0")/.."
home=${RAG_HOME:-$(mktemp -d)}
[ -z "${RAG_HOME:-}" ] && trap 'rm -rf "$home"' EXIT
export RAG_HOME=$home
unset RAG_MODELS
log=$(mktemp)
fail() { echo "readme job FAILED: $*" >&2; echo "--- output:" >&2; cat "$log" >&2; exit 1; }

# Command 1 is taken from the README itself, so the check cannot drift from what users read.
cmd=$(awk '/^## Two commands/{f=1} f && /^python3 -m venv/{print; exit}' README.md)
[ -n "$cmd" ] || fail "README has no command 1 under '## Two commands'"
echo "readme job: RAG_HOME=$RAG_HOME; $(grep -o -m1 -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo || echo 'no native bf16')" >&2
echo "+ $cmd" >&2
start=$SECONDS
bash -c "$cmd" >"$log" 2>&1 || fail "command 1 exited with $?"
echo "command 1: $((SECONDS - start)) s" >&2
grep -q "Denver Broncos" "$log" || fail "command 1 did not answer 'Denver Broncos'"
grep -Eq "Denver Broncos.*\[[0-9]+\]" "$log" || fail "the answer has no citation"

start=$SECONDS
.venv/bin/rag ask "What is the boiling point of mercury?" >>"$log" 2>&1 || fail "rag ask (mercury) exited with $?"
echo "mercury question: $((SECONDS - start)) s" >&2
tail -n 20 "$log" | grep -q "The documents do not contain the answer." || fail "the mercury question was not declined"
if grep -q "Traceback" "$log"; then fail "a traceback was printed"; fi
cat "$log"
echo "readme job passed" >&2
