#!/usr/bin/env bash
# The whole test suite over every package; extra arguments go to pytest.
#   ci/test.sh [PYTHON] [PYTEST ARGS ...]
# The tests run in TEST_WORKERS pytest-xdist processes (default: the CPU count, at most 4; 0 or 1 runs them in
# this process), each on one torch thread: most tests are small and single-threaded or wait on subprocesses, so
# two workers on 2 cores took the suite from 13.6 to 8.7 minutes. Work stealing keeps the long learning and
# kill + resume tests from ending up queued behind one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
shift || true
cores=$(nproc 2>/dev/null || echo 1)
workers=${TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
parallel=()
if [ "$workers" -gt 1 ]; then
    if "$py" -c "import xdist" 2>/dev/null; then
        parallel=(-n "$workers" --dist worksteal)
    else
        echo "ci/test.sh: pytest-xdist is not installed (the test extras add it); running the tests in one process" >&2
        workers=1
    fi
fi
threads=$(( workers > 1 ? 1 : 2 ))
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
"$py" -m pytest packages/*/tests --durations=15 "${parallel[@]}" "$@" || status=$?
# Which floats this machine computes: a learning test's recalls are those of its fingerprint, and another
# machine's log with another fingerprint explains other numbers; the candidate lines tell which stricter kernel
# setting, if any, agrees across CPU vendors, and the last line which kernel family differs (itr_common/compare/
# cpu_env.py, README "make reproduce").
"$py" -m itr_common.compare.cpu_env --compare || echo "ci/test.sh: the numerics fingerprint failed (above)" >&2
"$py" -m itr_common.compare.cpu_env --candidates || echo "ci/test.sh: the candidate fingerprints failed (above)" >&2
"$py" -m itr_common.compare.cpu_env --ops || echo "ci/test.sh: the fingerprints by operation failed (above)" >&2
exit "$status"
