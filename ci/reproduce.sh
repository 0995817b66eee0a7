#!/usr/bin/env bash
# make reproduce: one synthetic world, every paper's README train + evaluation commands through its own CLI,
# one table (Markdown here, reproduce_out/table.{csv,json}) and reproduce_out/rsum_latency.png.
# Extra arguments go to itr-reproduce (e.g. REPRODUCE_ARGS="--size small"; --data-root/--checkpoints: real data).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
shift || true
bin=$(cd "$(dirname "$py")" && pwd)
export PATH="$bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$bin/itr-reproduce" --out "${REPRODUCE_OUT:-$PWD/reproduce_out}" "$@"
