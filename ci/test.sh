#!/usr/bin/env bash
# The whole test suite over every package; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
shift || true
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$py" -m pytest packages/*/tests --durations=15 "$@"
