"""Helpers of the ALADIN tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ALAD_DIR = PACKAGE_DIR / "alad"
CONFIGS = ALAD_DIR / "configs"
ORIGINAL_CONFIGS = (
    "alad-alignment-triplet", "alad-matching-triplet-finetune", "alad-matching-distill-finetune",
    "alad-matching-triplet-e2e", "alad-alignment-and-matching-distill",
    "alad-alignment-and-matching-triplet0.1-plus-distill",
)  # fmt: skip
PYTHON = sys.executable


def config_path(name: str, tiny: bool = True) -> Path:
    return CONFIGS / f"{name}{'-tiny' if tiny else ''}.yaml"


def data_flags(world: Path) -> list[str]:
    """The README's data flags on a synthetic world tree."""
    return ["--data_dir", str(world / "coco_ir"), "--img_feat_file", str(world / "features" / "features.tsv"),
            "--eval_model_dir", str(world / "pretrained" / "checkpoint-0132780"), "--max_seq_length", "50",
            "--max_img_seq_length", "34", "--num_workers", "0"]


def train_argv(world: Path, run: Path, config: str, *extra: str, epochs: int = 1) -> list[str]:
    """``train.py`` arguments: the README command with a tiny config on ``world``."""
    return [*data_flags(world), "--config", str(config_path(config)), "--logger_name", str(run),
            "--val_step", "7000", "--num_epochs", str(epochs), "--log_step", "1000", *extra]


def eval_argv(world: Path, checkpoint: Path, out: Path, keys: str = "test_img_keys.tsv") -> list[str]:
    """``test.py`` arguments: the README command on ``world``."""
    return [*data_flags(world), "--eval_img_keys_file", keys, "--load_checkpoint", str(checkpoint), "--out", str(out)]
