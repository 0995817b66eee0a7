"""Shared helpers of the IAIS tests: the package folder and tiny training command lines."""

from __future__ import annotations

import sys
from pathlib import Path

from itr_common.testing import single_thread, uniter_db_flags

__all__ = ["PACKAGE_DIR", "QUICK", "TINY_CONFIG", "data_flags", "single_thread", "train_argv", "train_command"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
TINY_CONFIG = PACKAGE_DIR / "config" / "train-itm-flickr-tiny-hn.json"


def data_flags(world: Path, checkpoint: Path | None = None) -> list[str]:
    """Command-line overrides pointing the tiny config at ``world`` (absolute paths)."""
    return [
        *uniter_db_flags(world),
        "--model_config", str(world / "pretrained" / "uniter-tiny.json"),
        "--checkpoint", str(checkpoint or world / "pretrained" / "uniter-tiny.pt"),
    ]


def train_argv(world: Path, out: Path, *extra: str, checkpoint: Path | None = None) -> list[str]:
    """The README training command with the tiny config, pointed at ``world`` and writing to ``out``."""
    return ["--config", str(TINY_CONFIG), *data_flags(world, checkpoint), "--output_dir", str(out), *extra]


QUICK = ("--num_train_steps", "4", "--valid_steps", "2", "--train_batch_size", "1", "--warmup_steps", "1")
"""Four updates of one iteration each, validation and checkpoints at updates 2 and 4."""


def train_command(world: Path, out: Path, *extra: str) -> list[str]:
    """The README command as a user runs it: ``python train_itm_hard_negatives.py ...`` from the package folder."""
    return [sys.executable, str(PACKAGE_DIR / "train_itm_hard_negatives.py"), *train_argv(world, out, *extra)]
