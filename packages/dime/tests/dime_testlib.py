"""Helpers of the DIME tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from itr_common.testing import single_thread, subprocess_env, tiny_bert
from itr_dime.options import default_options

__all__ = ["PACKAGE_DIR", "PYTHON", "README_I2T", "README_T2I", "TINY_FLAGS", "python_env", "single_thread",
           "tiny_bert", "tiny_opt", "train_argv", "train_command"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# The README's training command with a tiny config (sizes of the synthetic world's tiny preset).
TINY_FLAGS = [
    "--img_dim", "32", "--embed_size", "32", "--hid_IMRC", "64", "--hid_router", "32", "--num_head_IMRC", "4",
    "--workers", "0", "--log_step", "1000",
]
README_I2T = ["--direction", "i2t", "--extra_stc", "1", "--lambda_softmax=4"]
README_T2I = ["--direction", "t2i", "--extra_img", "1", "--lambda_softmax=9"]


def tiny_opt(direction: str = "i2t", **changes: object) -> argparse.Namespace:
    """Default options at tiny sizes: embed 16, 4 heads, hidden 24/12, 8-d image features."""
    opt = default_options()
    opt.direction = direction
    opt.embed_size, opt.hid_IMRC, opt.hid_router, opt.num_head_IMRC, opt.img_dim = 16, 24, 12, 4, 8
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


def train_argv(world: Path, logger_name: Path, data_name: str = "f30k_precomp", readme: list[str] | None = None,
               *extra: str) -> list[str]:
    """``train.py`` arguments: the README command on ``world`` with the tiny config."""
    return [
        "--data_path", str(world / "data"), "--bert_path", str(world / "bert"), "--data_name", data_name,
        "--logger_name", str(logger_name), *(README_I2T if readme is None else readme), *TINY_FLAGS, *extra,
    ]


def train_command(world: Path, logger_name: Path, *extra: str) -> list[str]:
    """The README command as a user runs it: ``python train.py ...`` (the package folder's script)."""
    return [PYTHON, str(PACKAGE_DIR / "train.py"), *train_argv(world, logger_name, "f30k_precomp", None, *extra)]


python_env = subprocess_env  # the kit's environment of a child process (one thread, offline, fixed hash seed)
PYTHON = sys.executable
