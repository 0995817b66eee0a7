"""What the ``benchmarks/bench_<pkg>.py`` scripts share: the device's name in a report, the report's JSON file."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from itr_common.fileio import write_json_atomic


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous count (tiny tensors only contend for the cores
    otherwise; a fingerprint must not depend on the thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``: "AMD EPYC 7B13"), else ``platform.processor()`` or the
    architecture. On Linux ``platform.processor()`` says only ``x86_64``, which cannot tell apart two machines
    whose float results differ."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_label(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's model (:func:`cpu_model`)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def save_report(out: str | os.PathLike | None, report: dict[str, Any]) -> Path | None:
    """Write ``report`` as indented JSON to ``out`` (folder made first, file atomically); nothing for None or ""."""
    if not out:
        return None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out, report)


__all__ = ["cpu_model", "device_label", "save_report"]
