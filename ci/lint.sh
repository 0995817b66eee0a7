#!/usr/bin/env bash
# Lint: ruff over the Python code, hadolint over every Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
bin=$(dirname "$py")
"$bin/ruff" check packages benchmarks ci
for f in docker/*/Dockerfile; do
    "$bin/hadolint" --config ci/hadolint.yaml "$f"
done
echo "lint: ok"
