"""The flags of DIME's ``train.py``, with the original names and defaults (LgQu/DIME ``train.py``).

Prefix abbreviations stay allowed: the README's ``--lambda_softmax=4`` means ``--lambda_softmax_CMRC 4``.
Flags added here (not in the original): ``--seed``, ``--device``, ``--fp16``, ``--shard_size``, ``--legacy_save``,
``--sum_violation_epochs`` (the original has no way to turn ``--max_violation`` off: it is ``store_true`` with
default True).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from itr_common.errors import ArgumentParser, fail
from itr_common.training import add_sum_violation_flag
from itr_common.validation import check_device, number
from itr_common.validation import check_options as check_values
from itr_dime.attention import RAW_FEATURE_NORMS
from itr_dime.pairs import DIRECTIONS


def add_training_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every flag of the original ``train.py`` (same names, types, defaults), then ours."""
    add = parser.add_argument
    add("--logger_name", default="runs/runX", help="Path to save the model and Tensorboard log.")
    add("--data_path", default="/data", help="path to datasets")
    add("--data_name", default="precomp", help="{coco,f30k}_precomp: the folder under --data_path")
    add("--bert_path", default="./", type=str, help="The BERT model path (vocab.txt, bert_config.json, ...)")
    add("--max_words", default=32, type=int, help="maximum number of words in a sentence.")
    add("--extra_stc", type=int, default=0, help="Sample (extra_stc * bs) extra sentences.")
    add("--extra_img", type=int, default=0, help="Sample (extra_img * bs) extra images.")
    # optimisation
    add("--num_epochs", default=30, type=int, help="Number of training epochs.")
    add("--batch_size", default=32, type=int, help="Size of a training mini-batch (per process).")
    add("--learning_rate", default=0.0002, type=float, help="Initial learning rate.")
    add("--lr_update", default=15, type=int, help="Number of epochs to update the learning rate.")
    add("--grad_clip", default=2.0, type=float, help="Gradient clipping threshold.")
    add("--drop", type=float, default=0.0, help="Dropout (unused by the original model).")
    add("--margin", default=0.2, type=float, help="Rank loss margin.")
    add("--max_violation", action="store_true", default=True, help="Use max instead of sum in the rank loss.")
    add("--trade_off", default=0.5, type=float, help="Trade-off parameter for path regularization.")
    # base
    add("--img_dim", default=2048, type=int, help="Dimensionality of the image features.")
    add("--embed_size", default=256, type=int, help="Dimensionality of the joint embedding.")
    add("--direction", type=str, default="i2t", help="Version of model, i2t | t2i")
    add("--workers", default=2, type=int, help="Number of data loader workers.")
    add("--log_step", default=10, type=int, help="Number of steps to print and record the log.")
    add("--val_step", default=2000, type=int, help="Number of steps to run validation.")
    add("--resume", default="", type=str, metavar="PATH", help="path to latest checkpoint (default: none)")
    add("--finetune", action="store_true", help="Fine-tune the image encoder (unused with precomputed features).")
    add("--use_restval", action="store_true", help="Use the restval data for training on MSCOCO (unused: precomp).")
    add("--measure", default="cosine", help="Similarity measure used (cosine only).")
    add("--use_abs", action="store_true", help="Take the absolute value of the global image embedding.")
    add("--no_imgnorm", action="store_true", help="Do not normalize the global image embedding.")
    add("--reset_train", action="store_true", help="Unused (inherited from VSE++).")
    # DIME
    add("--num_head_IMRC", type=int, default=16, help="Number of heads in Intra-Modal Reasoning Cell")
    add("--hid_IMRC", type=int, default=512, help="Hidden size of FeedForward in Intra-Modal Reasoning Cell")
    add("--raw_feature_norm_CMRC", default="clipped_l2norm", help="|".join(RAW_FEATURE_NORMS))
    add("--lambda_softmax_CMRC", default=4.0, type=float, help="Attention softmax temperature.")
    add("--hid_router", type=int, default=512, help="Hidden size of MLP in routers")
    # added
    add("--seed", type=int, default=0, help="Seed of parameter init, data order and negative sampling.")
    add("--device", default=None, help="cpu | cuda | cuda:N (default: cuda:LOCAL_RANK when available, else cpu).")
    add("--fp16", action="store_true", help="Mixed precision (autocast; fp16 + loss scaling on CUDA, bf16 on CPU).")
    add("--shard_size", type=int, default=None, help="Items per scoring block (2 x batch_size).")
    add("--legacy_save", action="store_true",
        help="Save checkpoints in PyTorch's pre-1.6 (non-zip) format, which the original's PyTorch 1.0 reads.")
    add_sum_violation_flag(parser)
    return parser


def build_train_parser(prog: str = "train.py") -> ArgumentParser:
    return add_training_flags(ArgumentParser(prog=prog, description="Train DIME (SIGIR 2021) on precomp features."))


def default_options() -> argparse.Namespace:
    """Every training flag at its default."""
    return build_train_parser().parse_args([])


def add_bert_files(opt: argparse.Namespace) -> argparse.Namespace:
    """The derived BERT fields the original stores in ``opt`` (``vocab_file``, ``bert_config_file``,
    ``init_checkpoint``, ``do_lower_case``)."""
    opt.vocab_file = os.path.join(opt.bert_path, "vocab.txt")
    opt.bert_config_file = os.path.join(opt.bert_path, "bert_config.json")
    opt.init_checkpoint = os.path.join(opt.bert_path, "pytorch_model.bin")
    opt.do_lower_case = True
    return opt


def complete_options(opt: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags an older checkpoint's ``opt`` lacks with today's defaults (a copy)."""
    merged = vars(default_options())
    merged.update(vars(opt))
    return argparse.Namespace(**merged)


def check_options(opt: argparse.Namespace) -> None:
    """Fail with one line on a flag value the model cannot use: every number's range (finite), the device."""
    if opt.direction not in DIRECTIONS:
        fail(f"--direction: expected one of {', '.join(DIRECTIONS)}, found '{opt.direction}'")
    if opt.raw_feature_norm_CMRC not in RAW_FEATURE_NORMS:
        fail(f"--raw_feature_norm_CMRC: expected one of {', '.join(RAW_FEATURE_NORMS)}, "
             f"found '{opt.raw_feature_norm_CMRC}'")
    positive = ("batch_size", "embed_size", "img_dim", "num_head_IMRC", "hid_IMRC", "hid_router", "num_epochs",
                "lr_update", "log_step", "val_step")
    for name in positive:
        if getattr(opt, name) < 1:
            fail(f"--{name}: expected a positive integer, found {getattr(opt, name)}")
    if opt.embed_size % opt.num_head_IMRC:
        fail(f"--num_head_IMRC: expected a divisor of --embed_size {opt.embed_size}, found {opt.num_head_IMRC}")
    if opt.max_words < 2:
        fail(f"--max_words: expected at least 2 ([CLS] and [SEP]), found {opt.max_words}")
    for name in ("extra_stc", "extra_img", "workers", "sum_violation_epochs"):
        if getattr(opt, name) < 0:
            fail(f"--{name}: expected a non-negative integer, found {getattr(opt, name)}")
    if opt.shard_size is not None and opt.shard_size < 1:
        fail(f"--shard_size: expected a positive integer, found {opt.shard_size}")
    if opt.measure != "cosine":
        fail(f"--measure: expected 'cosine' (DIME scores with its interaction module), found '{opt.measure}'")
    check_values(opt, {
        "learning_rate": number(above=0), "grad_clip": number(above=0), "margin": number(low=0),
        "trade_off": number(low=0), "drop": number(low=0, below=1), "lambda_softmax_CMRC": number(above=0),
    })
    check_device(opt.device)


def parse_train_args(argv: Sequence[str] | None = None, prog: str = "train.py") -> argparse.Namespace:
    """Parse, check and complete the training options."""
    opt = build_train_parser(prog).parse_args(argv)
    check_options(opt)
    return add_bert_files(opt)


__all__ = [
    "add_bert_files",
    "add_training_flags",
    "build_train_parser",
    "check_options",
    "complete_options",
    "default_options",
    "parse_train_args",
]
