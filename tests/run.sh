#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a developer's: installs bearwatch with its test
# extras into .venv (once), starts the real Kafka and Elasticsearch (deploy/local/services.sh)
# unless they already run, runs ruff (lint, format) and mypy, then pytest, and stops the services it started.
#
#   bash tests/run.sh                 everything (what CI runs)
#   bash tests/run.sh -m 'not services' -q     only the tests that need no services (seconds)
#
# Extra arguments go to pytest. Exits non-zero when pytest fails or collects no test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source deploy/local/venv.sh
ensure_venv test
source deploy/local/tools.sh
ensure_chromium
ensure_compose
ensure_naughty_strings

services=deploy/local/services.sh
if [[ " $* " != *" not services"* ]]; then
  if ! "$services" status >/dev/null 2>&1; then
    trap '"$services" down' EXIT
    "$services" up
  fi
  eval "$("$services" env | sed 's/^/export /')"
fi

# lint, format and types first: seconds, and a failure here says exactly what to fix
bin=$(dirname "$BEARWATCH_PY")
"$bin/ruff" check --no-cache .
"$bin/ruff" format --check --no-cache .
"$bin/mypy"

set +e
"$BEARWATCH_PY" -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "tests/run.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit $rc
