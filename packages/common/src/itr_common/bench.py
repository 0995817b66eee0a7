"""What the ``benchmarks/bench_<pkg>.py`` scripts share: the device's name in a report, the report's JSON file."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from itr_common.fileio import write_json_atomic


def device_label(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's (``platform.processor()``, or ``cpu``)."""
    return torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"


def save_report(out: str | os.PathLike | None, report: dict[str, Any]) -> Path | None:
    """Write ``report`` as indented JSON to ``out`` (folder made first, file atomically); nothing for None or ""."""
    if not out:
        return None
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(out, report)


__all__ = ["device_label", "save_report"]
