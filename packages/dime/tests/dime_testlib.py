"""Helpers of the DIME tests (imported by name: conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from itr_dime.options import default_options

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


def tiny_bert(hidden: int = 12, seed: int = 0) -> torch.nn.Module:
    """A random 1-layer Hugging Face BertModel (vocab 40, hidden 12)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=32)
    return BertModel(config).eval()


def train_argv(world: Path, logger_name: Path, data_name: str = "f30k_precomp", readme: list[str] | None = None,
               *extra: str) -> list[str]:
    """``train.py`` arguments: the README command on ``world`` with the tiny config."""
    return [
        "--data_path", str(world / "data"), "--bert_path", str(world / "bert"), "--data_name", data_name,
        "--logger_name", str(logger_name), *(README_I2T if readme is None else readme), *TINY_FLAGS, *extra,
    ]


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    return env


PYTHON = sys.executable


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread (the tests' tensors are tiny: more threads only contend on 2 cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
