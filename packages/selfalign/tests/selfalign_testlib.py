"""Helpers of the SelfAlign tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from itr_common.testing import single_thread, subprocess_env, tiny_bert
from itr_selfalign.options import default_options

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# The README commands with a tiny config (sizes of the synthetic world's tiny preset: 32-d features).
COMMON_TINY = ["--img_dim", "32", "--embed_size", "32", "--local_clu_num", "16", "--workers", "0",
               "--log_step", "1000"]
CAMERA_TINY = [*COMMON_TINY, "--head", "4", "--smry_k", "4"]
VSRN_TINY = [*COMMON_TINY, "--word_dim", "16", "--dim_vid", "32", "--dim_hidden", "16", "--dim_word", "16",
             "--max_len", "20"]
TINY = {"camera": CAMERA_TINY, "vsrn": VSRN_TINY}
VARIANT_DIRS = {"camera": PACKAGE_DIR / "camera_SelfAlign", "vsrn": PACKAGE_DIR / "vsrn_SelfAlign"}


def train_argv(variant: str, world: Path, logger_name: Path, *extra: str, data_name: str = "f30k_precomp") -> list[str]:
    """``train_SelfAlign.py`` arguments: the README command of ``variant`` on ``world`` with the tiny config."""
    text = ["--bert_path", str(world / "bert")] if variant == "camera" else ["--vocab_path", str(world / "vocab")]
    return ["--data_path", str(world / "data"), *text, "--data_name", data_name, "--logger_name", str(logger_name),
            *TINY[variant], *extra]


def tiny_opt(variant: str, selfalign: int = 1, **changes: object) -> argparse.Namespace:
    """Default options at tiny sizes (embed 16, 4 heads / 3 views for CAMERA; vocab 30 for VSRN)."""
    opt = default_options(variant)
    opt.selfalign, opt.embed_size, opt.img_dim, opt.local_clu_num = selfalign, 16, 8, 6
    if variant == "camera":
        opt.head, opt.smry_k = 4, 3
    else:
        opt.word_dim, opt.dim_vid, opt.dim_hidden, opt.dim_word, opt.max_len, opt.vocab_size = 6, 16, 8, 6, 8, 30
    for key, value in changes.items():
        setattr(opt, key, value)
    return opt


python_env = subprocess_env  # the kit's environment of a child process (one thread, offline, fixed hash seed)


__all__ = ["PACKAGE_DIR", "PYTHON", "TINY", "VARIANT_DIRS", "python_env", "single_thread", "tiny_bert", "tiny_opt",
           "train_argv"]
