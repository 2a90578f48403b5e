#!/usr/bin/env bash
# Refresh requirements.lock, the exact versions both README commands install.
#
# Resolves pyproject.toml's ranges (with the test extra) in a throwaway venv and freezes the result.
# Commit the new lock like any other change: CI installs from it and tests/test_lock.py checks it
# against pyproject.toml and the environment the suite runs in.
#
#   PYTHON=/usr/bin/python3 scripts/lock.sh   # rewrites requirements.lock
#
# Resolve with the OLDEST Python the README promises (3.11.x): a lock made on 3.11.7 pinned
# soupsieve 4.1.3, which needs >= 3.11.5, and a fresh Debian 12 (Python 3.11.2) could not install it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q -e ".[test]" 2> >(grep -v "is ignored: it is neither" >&2)
{
  echo "# Exact versions for both README commands; refresh with scripts/lock.sh (do not edit by hand)."
  echo "# Resolved $(date -u +%Y-%m-%d) with $("$tmp/venv/bin/python" -V) on $(uname -m)."
  # torch's local label (+cpu) names the build of the file pip finds; the pin itself is the version.
  "$tmp/venv/bin/pip" freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+cpu$/\1/'
} > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages)"
