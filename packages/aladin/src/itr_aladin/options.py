"""The command lines of ``alad/train.py`` and ``alad/test.py`` (every original flag and default) and
``restore_training_settings`` (reads the VinVL checkpoint's ``training_args.bin`` without running code).

Oscar's flags are kept even where ALADIN ignores them (``--learning_rate``, ``--scheduler``,
``--num_train_epochs`` of test.py, ...): the batch size, learning rate and schedule come from the YAML.
Additions of this reproduction: ``--out`` (test.py's result JSON) and ``--device``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from itr_aladin.oscar import TRAINING_ARGS_NAME
from itr_common.checkpoint import load_checkpoint
from itr_common.errors import ArgumentParser, fail
from itr_common.validation import check_device

LOGGER = logging.getLogger(__name__)

OVERRIDE_PARAMS = ("do_lower_case", "img_feature_type", "add_od_labels", "od_label_type", "use_img_layernorm",
                   "img_layer_norm_eps")
"""What ALADIN's ``restore_training_settings`` copies from training_args.bin (not the sequence lengths)."""


def _oscar_flags(parser: ArgumentParser, test: bool) -> None:
    add = parser.add_argument
    add("--data_dir", default="datasets/coco_ir", type=str, help="The input data dir with all required files.")
    add("--img_feat_file", default="datasets/coco_ir/features.tsv", type=str,
        help="The absolute address of the image feature file.")
    add("--model_name_or_path", default=None, type=str, help="unused by ALADIN (Oscar flag)")
    add("--output_dir", default="output/", type=str, help="unused by ALADIN (Oscar flag)")
    add("--loss_type", default="sfmx", type=str, help="unused by ALADIN (Oscar flag)")
    add("--config_name", default="", type=str, help="unused by ALADIN (Oscar flag)")
    add("--tokenizer_name", default="", type=str, help="unused by ALADIN (Oscar flag)")
    add("--max_seq_length", default=70, type=int, help="maximum caption / tag sequence length in wordpieces")
    add("--do_train", action="store_true", help="unused by ALADIN (Oscar flag)")
    add("--do_test", action="store_true", help="unused by ALADIN (Oscar flag; forced on)")
    add("--do_eval", action="store_true", help="unused by ALADIN (Oscar flag; forced on)")
    add("--test_split", default="test", type=str, help="data split name (test.py evaluates 'test')")
    add("--eval_img_keys_file", default="", type=str,
        help="image keys file (in --data_dir) of the evaluated images: test_img_keys_1k.tsv / test_img_keys.tsv")
    add("--eval_caption_index_file", default="", type=str, help="unused by ALADIN (Oscar flag)")
    add("--cross_image_eval", action="store_true", help="unused by ALADIN (Oscar flag)")
    add("--add_od_labels", default=False, action="store_true", help="add object tags (restored from training_args.bin)")
    add("--od_label_type", default="vg", type=str, help="label type, support vg, gt, oid")
    add("--att_mask_type", default="CLR", type=str, help="attention mask type; ALADIN's passes use 'CLR'")
    add("--do_lower_case", action="store_true", help="uncased model (restored from training_args.bin)")
    add("--drop_out", default=0.1, type=float, help="unused by ALADIN (the checkpoint's config.json sets dropout)")
    add("--max_img_seq_length", default=50, type=int, help="The maximum total input image sequence length.")
    add("--img_feature_dim", default=2054, type=int, help="unused: config.json's img_feature_dim is used")
    add("--img_feature_type", default="frcnn", type=str, help="Image feature type.")
    add("--use_img_layernorm", type=int, default=1, help="Normalize image features with bertlayernorm")
    add("--img_layer_norm_eps", default=1e-12, type=float, help="The eps in image feature laynorm layer")
    add("--per_gpu_train_batch_size", default=32, type=int, help="overridden by the YAML's bs")
    add("--per_gpu_eval_batch_size", default=64, type=int, help="overridden by the YAML's bs")
    add("--output_mode", default="classification", type=str, help="unused by ALADIN (Oscar flag)")
    add("--num_labels", default=2, type=int, help="unused by ALADIN (Oscar flag)")
    add("--num_captions_per_img_train", default=5, type=int, help="captions per training image")
    add("--num_captions_per_img_val", default=5, type=int, help="captions per evaluated image")
    add("--gradient_accumulation_steps", type=int, default=1, help="unused by ALADIN (Oscar flag)")
    add("--learning_rate", default=2e-5, type=float, help="unused by ALADIN (the YAML's lr is used)")
    add("--weight_decay", default=0.05, type=float, help="unused by ALADIN (Oscar flag)")
    add("--adam_epsilon", default=1e-8, type=float, help="unused by ALADIN (Oscar flag)")
    add("--max_grad_norm", default=1.0, type=float, help="unused by ALADIN (the YAML's grad-clip is used)")
    add("--warmup_steps", default=0, type=int, help="unused by ALADIN (Oscar flag)")
    add("--scheduler", default="linear", type=str, help="unused by ALADIN (the YAML's scheduler is used)")
    add("--num_workers", default=4, type=int, help="Workers in dataloader.")
    if test:
        add("--num_train_epochs", default=20, type=int, help="unused by ALADIN (Oscar flag)")
    add("--max_steps", default=-1, type=int, help="unused by ALADIN (Oscar flag)")
    add("--logging_steps", type=int, default=20, help="unused by ALADIN (Oscar flag)")
    add("--save_steps", type=int, default=-1, help="unused by ALADIN (Oscar flag)")
    add("--evaluate_during_training", action="store_true", help="unused by ALADIN (Oscar flag)")
    add("--eval_model_dir", type=str, default="", help="the VinVL coco_ir checkpoint directory (checkpoint-0132780)")
    add("--no_cuda", action="store_true", help="Avoid using CUDA.")
    add("--seed", type=int, default=88, help="random seed for initialization.")


def build_train_parser(prog: str = "aladin-train") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="ALADIN training (alad/train.py).")
    _oscar_flags(parser, test=False)
    add = parser.add_argument
    add("--num_epochs", default=20, type=int, help="Number of training epochs.")
    add("--log_step", default=10, type=int, help="Number of steps to print and record the log.")
    add("--val_step", default=500, type=int, help="Number of steps to run validation.")
    add("--test_step", default=100000000, type=int, help="unused (as in the original)")
    add("--logger_name", default="runs/runX", help="Path to save the model and Tensorboard log.")
    add("--resume", default="", type=str, metavar="PATH",
        help="path to latest checkpoint (default: none). Loads model, optimizer, scheduler")
    add("--load-teacher-model", default="", type=str, metavar="PATH",
        help="path to a checkpoint whose model is loaded non-strictly (e.g. a trained alignment head)")
    add("--reinitialize-scheduler", action="store_true", help="Reinitialize scheduler. To use with --resume")
    add("--config", type=str, help="Which configuration to use. See into 'configs' folder")
    add("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available and not --no_cuda)")
    return parser


def build_test_parser(prog: str = "aladin-test") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="ALADIN evaluation of both heads (alad/test.py).")
    _oscar_flags(parser, test=True)
    add = parser.add_argument
    add("--load_checkpoint", default="", type=str, metavar="PATH", help="the ALADIN checkpoint (.pth.tar) to test")
    add("--out", default=None, help="JSON file of both heads' results (this reproduction; default "
        "aladin_test_results.json beside --load_checkpoint)")
    add("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available and not --no_cuda)")
    return parser


def check_common(args: argparse.Namespace) -> None:
    """Type/range checks of the flags ALADIN uses, before any work."""
    for name, low in (("max_seq_length", 3), ("max_img_seq_length", 2), ("img_feature_dim", 1),
                      ("num_captions_per_img_train", 1), ("num_captions_per_img_val", 1), ("num_workers", 0)):
        value = getattr(args, name)
        if value < low:
            fail(f"--{name}: expected an int >= {low}, found {value}")
    if args.att_mask_type != "CLR":
        fail(f"--att_mask_type: ALADIN's two separate passes use the 'CLR' mask, found '{args.att_mask_type}'")
    if not args.eval_model_dir:
        fail("--eval_model_dir: expected the VinVL coco_ir checkpoint directory (e.g. checkpoint-0132780), found none")
    if args.seed < 0:
        fail(f"--seed: expected an int >= 0 (numpy's seed range, as the original's set_seed), found {args.seed}")
    check_device(args.device)


def check_lengths(args: argparse.Namespace, config: Any) -> None:
    """``--max_seq_length`` token positions must exist in the checkpoint's position table."""
    if args.max_seq_length > config.max_position_embeddings:
        fail(f"--max_seq_length: expected at most {config.max_position_embeddings} (max_position_embeddings of "
             f"{args.eval_model_dir}/config.json), found {args.max_seq_length}")


def read_training_args(checkpoint_dir: str | os.PathLike) -> argparse.Namespace | None:
    """``training_args.bin`` (a pickled argparse.Namespace) loaded with the weights-only unpickler; None if absent."""
    path = Path(checkpoint_dir) / TRAINING_ARGS_NAME
    if not path.is_file():
        return None
    loaded = load_checkpoint(path)
    if not isinstance(loaded, argparse.Namespace):
        fail(f"{path}: expected a pickled argparse.Namespace, found {type(loaded).__name__}")
    return loaded


def restore_training_settings(args: argparse.Namespace, notes: list[str] | None = None) -> argparse.Namespace:
    """Copy ``OVERRIDE_PARAMS`` from ``{eval_model_dir}/training_args.bin`` where they differ.

    Each override is logged, or appended to ``notes`` (logged by the caller once every input is checked,
    so that bad input still gives a single line)."""
    notes_out = notes if notes is not None else []
    train_args = read_training_args(args.eval_model_dir)
    if train_args is None:
        notes_out.append(f"{args.eval_model_dir}: no {TRAINING_ARGS_NAME}; keeping the command-line settings")
    else:
        for param in OVERRIDE_PARAMS:
            if hasattr(train_args, param):
                train_v, test_v = getattr(train_args, param), getattr(args, param)
                if train_v != test_v:
                    notes_out.append(f"Override {param} with train args: {test_v} -> {train_v}")
                    setattr(args, param, train_v)
    if notes is None:
        for note in notes_out:
            LOGGER.warning("%s", note)
    return args


def use_checkpoint_feature_dim(args: argparse.Namespace, config: Any, notes: list[str]) -> None:
    """Region rows have the model's ``img_feature_dim`` (config.json), as in the original, whose model is built
    from config.json and whose reader reshapes rows to (num_boxes, -1): ``--img_feature_dim`` is not used."""
    if args.img_feature_dim != config.img_feature_dim:
        notes.append(f"--img_feature_dim {args.img_feature_dim}: using {config.img_feature_dim}, the img_feature_dim "
                     f"of {args.eval_model_dir}/config.json")
        args.img_feature_dim = config.img_feature_dim


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_train_parser().parse_args(argv)
    if not args.config:
        fail("--config: expected a YAML config (configs/<config>.yaml), found none")
    for name, low in (("num_epochs", 1), ("log_step", 1), ("val_step", 1)):
        if getattr(args, name) < low:
            fail(f"--{name}: expected an int >= {low}, found {getattr(args, name)}")
    if args.resume and args.load_teacher_model:
        fail("--resume and --load-teacher-model: expected one of them, found both")
    check_common(args)
    return args


def parse_test_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_test_parser().parse_args(argv)
    if not args.load_checkpoint:
        fail("--load_checkpoint: expected an ALADIN checkpoint (.pth.tar), found none")
    check_common(args)
    return args


__all__ = ["OVERRIDE_PARAMS", "build_test_parser", "build_train_parser", "check_lengths", "parse_test_args",
           "parse_train_args", "read_training_args", "restore_training_settings", "use_checkpoint_feature_dim"]
