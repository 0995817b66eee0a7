"""The CPU kernels of the synthetic runs: pinned to their AVX2 code paths on x86-64, and a fingerprint that says
which floats a machine computes.

The tiny trainings are chaotic in float rounding: one different last bit early on ends in another table. Three
libraries pick their kernels by CPU unless told: ATen's vectorised kernels (AVX-512 where the CPU has it), oneDNN
(the same), and MKL, whose default GEMM path also differs between CPU vendors and generations. :data:`PORTABLE_CPU_ENV`
pins all three to AVX2 (``MKL_CBWR``: MKL's conditional numerical reproducibility branch). What that buys was
measured with DIME's learning-test training (seed 0, test rsum), torch 2.13.0:

- on a 2-core Intel Xeon with AVX-512, each of the three pins alone changes the result (library defaults 250.0;
  MKL pinned 232.8, ATen 246.8, oneDNN 259.2; all three 226.4);
- on a 2-core AMD EPYC (Zen 3) without AVX-512, ATen and oneDNN pinned give their defaults' bits and MKL's does
  not (defaults 204.8, all three pinned 196.0, on two such machines): there ``MKL_CBWR=AVX2`` changes MKL's
  matrix-vector products (GEMV) and leaves its matrix products alone (:func:`op_fingerprints`).

So the pins do **not** make these two machines compute the same floats (226.4 against 196.0): MKL's AVX2 branch
is not the same code on both vendors' CPUs, or another kernel differs. They remove the instruction-set choice
between machines of one vendor, which is all that can be claimed. :func:`numerics_fingerprint` tells two machines
apart in a second: the same code and the same fingerprint (under the same pins) are the condition for the same
table, a different fingerprint means different numbers.

``python -m itr_common.compare.cpu_env`` prints ``export`` lines for a shell (``ci/demo.sh``); ``--fingerprint``
prints this process's fingerprint; ``--compare`` one line with the fingerprints under the pins and under the
library defaults, ``--candidates`` one line per stricter setting of :data:`CANDIDATE_CPU_ENVS`, ``--ops`` one
fingerprint per kernel family (:func:`op_fingerprints`), to find which kernel differs (``ci/test.sh`` ends with all
three).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping

from itr_common.errors import ArgumentParser

PORTABLE_CPU_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Stricter settings whose fingerprints (``--candidates``, printed by ci/test.sh) may agree across CPU vendors where
# the pins above do not: MKL's strict reproducibility mode, MKL's SSE2-compatible branch, and everything narrowed
# to SSE. Which one agrees (if any) is what a machine of the other vendor can tell by comparing its line with the
# values the README quotes.
CANDIDATE_CPU_ENVS = (
    {**PORTABLE_CPU_ENV, "MKL_CBWR": "AVX2,STRICT"},
    {**PORTABLE_CPU_ENV, "MKL_CBWR": "COMPATIBLE"},
    {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
)


def portable_cpu_env(environ: Mapping[str, str] | None = None, machine: str | None = None) -> dict[str, str]:
    """The :data:`PORTABLE_CPU_ENV` entries that ``environ`` (default ``os.environ``) does not set itself, on
    x86-64 (``machine``, default ``platform.machine()``); nothing on other architectures."""
    environ = os.environ if environ is None else environ
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return {}
    return {key: value for key, value in PORTABLE_CPU_ENV.items() if key not in environ}


def numerics_fingerprint(steps: int = 30) -> str:
    """12 hex digits of the SHA-256 of a tiny model's weights after ``steps`` Adam steps on seeded random data,
    on one thread: a 1-D convolution (oneDNN), a bidirectional GRU, layer norm, softmax attention and linear layers
    (MKL GEMM), a one-output gate (MKL GEMV: on an AMD EPYC, ``MKL_CBWR=AVX2`` changes GEMV's bits and not GEMM's),
    with ATen's vectorised element-wise kernels throughout. Deterministic on one machine; any different
    kernel (instruction set, library build, vendor path) gives another value. About a second.

    Environment variables that choose kernels (:data:`PORTABLE_CPU_ENV`) are read when the libraries load, so a
    fingerprint under other settings needs another process (:func:`fingerprint_in`).
    """
    import torch
    from torch import nn

    from itr_common.bench import single_thread

    with single_thread():
        data = torch.Generator().manual_seed(0)
        x = torch.randn(32, 12, 48, generator=data)  # (batch, length, features)
        y = torch.randint(0, 16, (32,), generator=data)
        torch.manual_seed(0)
        conv, gru = nn.Conv1d(48, 64, 3, padding=1), nn.GRU(64, 64, batch_first=True, bidirectional=True)
        norm, gate, head = nn.LayerNorm(128), nn.Linear(128, 1), nn.Linear(128, 16)
        params = [*conv.parameters(), *gru.parameters(), *norm.parameters(), *gate.parameters(), *head.parameters()]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        for _ in range(steps):
            h = torch.relu(conv(x.transpose(1, 2))).transpose(1, 2)  # (32, 12, 64)
            h = norm(gru(h)[0])  # (32, 12, 128)
            h = torch.softmax(h @ h.transpose(1, 2) / 8, dim=-1) @ h
            h = h * torch.sigmoid(gate(h))  # a one-output layer: matrix-vector products (MKL GEMV)
            loss = nn.functional.cross_entropy(head(h.max(dim=1).values), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return _digest(*params, digits=12)


def _digest(*tensors: object, digits: int = 8) -> str:
    """The first ``digits`` hex digits of the SHA-256 of the tensors' bytes, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().contiguous().numpy().tobytes())  # type: ignore[attr-defined]
    return digest.hexdigest()[:digits]


def op_fingerprints() -> dict[str, str]:
    """8 hex digits per kernel family, each from one call (forward and gradients) on one thread: where two
    machines' :func:`numerics_fingerprint` differ, the families that differ here say which library computes
    other floats (``gemm``, ``gemv``: MKL; ``conv1d``: oneDNN; ``exp``/``tanh``/``sigmoid``/``sum``: ATen's vectorised
    kernels; ``gru``, ``layer_norm``, ``softmax``, ``adam``: ATen composites of those). Inputs and weights come
    from NumPy's seeded generator, not torch's: ``torch.randn`` itself has a vectorised kernel, so its numbers
    change with ``ATEN_CPU_CAPABILITY`` and would make every family differ at once."""
    import numpy as np
    import torch
    from torch import nn

    from itr_common.bench import single_thread

    rng = np.random.default_rng(0)

    def rand(*shape: int, grad: bool = True) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).requires_grad_(grad)

    def seeded(module: nn.Module) -> nn.Module:
        with torch.no_grad():
            for param in module.parameters():
                param.copy_(rand(*param.shape, grad=False) * 0.2)
        return module

    with single_thread():
        found: dict[str, str] = {}
        a, b = rand(64, 96), rand(96, 80)
        out = a @ b
        out.backward(torch.ones_like(out))
        found["gemm"] = _digest(out, a.grad, b.grad)
        a, b = rand(300, 1000), rand(1000)
        out = a @ b
        out.sum().backward()
        found["gemv"] = _digest(out, a.grad, b.grad)
        conv, x = seeded(nn.Conv1d(48, 64, 3, padding=1)), rand(8, 48, 12)
        out = conv(x)
        out.sum().backward()
        found["conv1d"] = _digest(out, x.grad, conv.weight.grad)
        x = rand(4096)
        for name, fn in (("exp", torch.exp), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
            found[name] = _digest(fn(x))
        found["sum"] = _digest(rand(100_003).sum())
        gru, x = seeded(nn.GRU(16, 24, batch_first=True, bidirectional=True)), rand(4, 7, 16)
        out = gru(x)[0]
        out.sum().backward()
        found["gru"] = _digest(out, x.grad, *(p.grad for p in gru.parameters()))
        x = rand(32, 128)
        out = nn.functional.layer_norm(x, (128,))
        out.pow(2).sum().backward()
        found["layer_norm"] = _digest(out, x.grad)
        x = rand(32, 50)
        out = torch.softmax(x / 3, dim=-1)
        out.pow(2).sum().backward()
        found["softmax"] = _digest(out, x.grad)
        weight = nn.Parameter(rand(256, grad=False))
        optimizer = torch.optim.Adam([weight], lr=1e-2)
        for _ in range(3):
            weight.grad = rand(256, grad=False)
            optimizer.step()
        found["adam"] = _digest(weight)
        return found


def fingerprint_in(env: Mapping[str, str], python: str = sys.executable) -> str:
    """:func:`numerics_fingerprint` computed in a fresh ``python`` process with environment ``env``."""
    done = subprocess.run([python, "-m", "itr_common.compare.cpu_env", "--fingerprint"], env=dict(env),
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def without_pins(environ: Mapping[str, str] | None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) less every variable :data:`PORTABLE_CPU_ENV` sets: the library defaults."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if k not in PORTABLE_CPU_ENV}


def compare_line(environ: Mapping[str, str] | None = None, python: str = sys.executable) -> str:
    """One line: this CPU, torch, and the fingerprints with the pins and with the library defaults."""
    import torch

    from itr_common.bench import cpu_model

    defaults = without_pins(environ)
    pinned = {**defaults, **portable_cpu_env({}, None)}
    return (f"numerics fingerprint on {cpu_model()} ({platform.machine()}), torch {torch.__version__}: "
            f"{fingerprint_in(pinned, python)} with the AVX2 pins (make reproduce, make demo), "
            f"{fingerprint_in(defaults, python)} with the library defaults (make test)")


def candidate_lines(environ: Mapping[str, str] | None = None, python: str = sys.executable) -> list[str]:
    """One line per :data:`CANDIDATE_CPU_ENVS` setting: its fingerprint, then the setting."""
    defaults = without_pins(environ)
    return [f"numerics fingerprint {fingerprint_in({**defaults, **pins}, python)} with "
            + " ".join(f"{k}={v}" for k, v in sorted(pins.items())) for pins in CANDIDATE_CPU_ENVS]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m itr_common.compare.cpu_env",
                                     description="export lines pinning the CPU kernels (x86-64), or fingerprints")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fingerprint", action="store_true", help="print this process's numerics fingerprint")
    which.add_argument("--compare", action="store_true",
                       help="print the fingerprints with the pins and with the library defaults, on one line")
    which.add_argument("--candidates", action="store_true",
                       help="print the fingerprint under each stricter candidate setting, one line each")
    which.add_argument("--ops", action="store_true",
                       help="print this process's fingerprint of each kernel family (gemm, conv1d, exp, ...)")
    args = parser.parse_args(argv)
    if args.fingerprint:
        print(numerics_fingerprint())
    elif args.compare:
        print(compare_line())
    elif args.candidates:
        print("\n".join(candidate_lines()))
    elif args.ops:
        print("numerics fingerprint by operation: " + " ".join(f"{k}={v}" for k, v in op_fingerprints().items()))
    else:
        for key, value in portable_cpu_env().items():
            print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
