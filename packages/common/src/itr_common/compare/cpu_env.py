"""The CPU kernels of the synthetic runs: pinned to their AVX2 code paths on x86-64, so that two machines compute
the same floats.

The tiny trainings are chaotic in float rounding: one different last bit early on ends in another table. Three
libraries pick their kernels by CPU unless told: ATen's vectorised kernels (AVX-512 where the CPU has it), oneDNN
(the same), and MKL, whose default GEMM path also differs between CPU vendors and generations. Measured on a
2-core AMD EPYC without AVX-512: ATen and oneDNN pinned to AVX2 give the same bits as their defaults, MKL's
AVX2 branch (``MKL_CBWR``, its conditional numerical reproducibility) does not, so MKL's default there is a path
of its own. With all three pinned, every x86-64 CPU with AVX2 is meant to run the same kernels (MKL documents
the same results on every CPU that supports the branch).

``python -m itr_common.compare.cpu_env`` prints ``export`` lines for a shell (``ci/demo.sh``).
"""

from __future__ import annotations

import os
import platform
import shlex
from collections.abc import Mapping

PORTABLE_CPU_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def portable_cpu_env(environ: Mapping[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The :data:`PORTABLE_CPU_ENV` entries that ``environ`` (default ``os.environ``) does not set itself, on
    x86-64 (``machine``, default ``platform.machine()``); nothing on other architectures."""
    environ = os.environ if environ is None else environ
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return {}
    return {key: value for key, value in PORTABLE_CPU_ENV.items() if key not in environ}


def main() -> int:
    for key, value in portable_cpu_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
