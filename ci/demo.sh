#!/usr/bin/env bash
# make demo: write the synthetic world once, then run every package's demo (its README train and
# evaluation commands on that world), then print one result row per package.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
bin=$(cd "$(dirname "$py")" && pwd)
export PATH="$bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# the AVX2 CPU kernels on x86-64, as make reproduce runs them (no instruction-set choice between CPUs of one vendor;
# they do not make every CPU compute the same floats: itr_common/compare/cpu_env.py); a value already set stays
eval "$("$py" -m itr_common.compare.cpu_env)"
out=${DEMO_OUT:-$PWD/demo_out}
world=$out/world
mkdir -p "$out/results"
echo "== synthetic world -> $world"
itr-synth --out "$world" --layout all --size "${DEMO_SIZE:-demo}"
for demo in packages/*/demo.sh; do
    [ -e "$demo" ] || continue
    pkg=$(basename "$(dirname "$demo")")
    echo "== $pkg"
    ( cd "$(dirname "$demo")" && DEMO_WORLD="$world" DEMO_OUT="$out/$pkg" DEMO_RESULTS="$out/results" bash demo.sh )
done
echo "== results (numerics fingerprint $("$py" -m itr_common.compare.cpu_env --fingerprint); a machine with another one computes other figures)"
"$py" -m itr_common.results "$out/results"
