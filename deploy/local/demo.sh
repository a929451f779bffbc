#!/usr/bin/env bash
# The embedded default on a fresh machine: installs bearwatch into .venv (once) and runs
# `bearwatch demo` with any arguments given here. Needs only Python 3.11+.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv cpu
exec "$(dirname "$BEARWATCH_PY")/bearwatch" demo "$@"
