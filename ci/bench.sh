#!/usr/bin/env bash
# make bench: every benchmark under benchmarks/, each printing its table and writing bench_out/<name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p bench_out
for b in benchmarks/bench_*.py; do
    name=$(basename "$b" .py)
    echo "== $name"
    "$py" "$b" --out "bench_out/${name#bench_}.json"
done
echo "== report"
"$py" benchmarks/report.py bench_out
