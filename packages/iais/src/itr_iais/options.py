"""Command lines of ``train_itm_hard_negatives.py`` and ``inf_itm.py`` (flags, defaults, config files).

The flags and defaults are the original's. ``--config file.json`` sets every key of the file except
those also given on the command line (UNITER's ``parse_with_config``), through ``itr_common.config``;
an unknown key fails naming the closest valid one. Ours on top: ``--resume`` and a few data flags
that the original only reads from the JSON (``--train_txt_dbs`` ...), so a tiny run can point
elsewhere from the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from itr_common.config import apply_config, load_config, pair_train_dbs, require_config_values
from itr_common.errors import ArgumentParser, UserError, fail, require_file
from itr_common.validation import (
    boolean,
    check_options,
    choice,
    describe_value,
    integer,
    number,
    text,
)
from itr_iais.losses import IAIS_CHOICES

PACKAGE_DIR = Path(__file__).resolve().parents[2]
"""``packages/iais`` (the folder holding ``config/``) in a source checkout or editable install."""

BUNDLED_CONFIG_DIR = PACKAGE_DIR / "config"
MODEL_CONFIGS = ("uniter-base.json", "uniter-large.json")


def _iais_value(value: str) -> str | bool:
    """``--IAIS`` takes ``singular`` / ``distributed``; ``False`` (any case) or ``none`` switches it off."""
    if value.lower() in ("false", "none", "0", ""):
        return False
    if value not in IAIS_CHOICES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(IAIS_CHOICES)} or False, found '{value}'")
    return value


def train_parser() -> ArgumentParser:
    """The original ``train_itm_hard_negatives.py`` flags (same names and defaults) plus ours."""
    p = ArgumentParser(
        prog="train_itm_hard_negatives.py",
        description="Fine-tune UNITER for image-text retrieval with hard negatives (+ IAIS).",
    )
    p.add_argument("--compressed_db", action="store_true", help="use compressed LMDB")
    p.add_argument("--checkpoint", default=None, type=str, help="pretrained UNITER weights (uniter-base.pt)")
    p.add_argument("--output_dir", default=None, type=str, help="where checkpoints and logs are written")
    p.add_argument("--max_txt_len", type=int, default=60, help="max number of tokens in text (BERT BPE)")
    p.add_argument("--conf_th", type=float, default=0.2, help="threshold for dynamic bounding boxes (-1 for fixed)")
    p.add_argument("--max_bb", type=int, default=100, help="max number of bounding boxes")
    p.add_argument("--min_bb", type=int, default=10, help="min number of bounding boxes")
    p.add_argument("--num_bb", type=int, default=36, help="static number of bounding boxes")
    p.add_argument("--train_batch_size", default=32, type=int,
                   help="positive examples per update (implemented with gradient accumulation)")
    p.add_argument("--negative_size", default=511, type=int, help="negatives scored per positive (forward only)")
    p.add_argument("--hard_neg_size", default=31, type=int, help="hard negatives per positive actually trained on")
    p.add_argument("--inf_minibatch_size", default=512, type=int, help="images per forward pass in evaluation")
    p.add_argument("--margin", default=0.2, type=float, help="margin of the ranking loss")
    p.add_argument("--learning_rate", default=3e-5, type=float, help="peak learning rate")
    p.add_argument("--valid_steps", default=1000, type=int, help="validate (and save) every X updates")
    p.add_argument("--num_train_steps", default=100000, type=int, help="total number of updates")
    p.add_argument("--optim", default="adam", choices=["adam", "adamax", "adamw"], help="optimizer")
    p.add_argument("--betas", default=[0.9, 0.98], nargs="+", type=float, help="Adam betas")
    p.add_argument("--dropout", default=0.1, type=float, help="dropout probability of every dropout layer")
    p.add_argument("--weight_decay", default=0.01, type=float, help="weight decay")
    p.add_argument("--grad_norm", default=0.25, type=float, help="gradient clipping (-1 for no clipping)")
    p.add_argument("--warmup_steps", default=4000, type=int, help="linear warmup updates")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--full_val", action="store_true", help="full retrieval evaluation at every validation")
    p.add_argument("--fp16", action="store_true", help="mixed precision (itr_common.amp)")
    p.add_argument("--n_workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--pin_mem", action="store_true", help="pin memory")
    p.add_argument("--config", help="JSON config file (its keys are defaults the command line overrides)")
    p.add_argument("--IAIS", default=False, type=_iais_value, metavar="{distributed,singular,False}",
                   help="add the IAIS loss: singular or distributed alignment")
    # keys the original reads from the JSON config only
    p.add_argument("--train_txt_dbs", nargs="+", default=None, help="training txt_db directories")
    p.add_argument("--train_img_dbs", nargs="+", default=None, help="training img_db directories (one per txt_db)")
    p.add_argument("--val_txt_db", default=None, help="validation txt_db")
    p.add_argument("--val_img_db", default=None, help="validation img_db")
    p.add_argument("--test_txt_db", default=None, help="test txt_db")
    p.add_argument("--test_img_db", default=None, help="test img_db")
    p.add_argument("--model_config", default=None, help="uniter-base.json / uniter-large.json")
    # ours
    p.add_argument("--resume", action="store_true",
                   help="continue from the last {output_dir}/ckpt/train_state_{N}.pt instead of refusing a "
                        "non-empty output_dir")
    return p


def inference_parser() -> ArgumentParser:
    """The original ``inf_itm.py`` flags."""
    p = ArgumentParser(prog="inf_itm.py", description="Score every image-caption pair and report recall.")
    p.add_argument("--txt_db", default=None, type=str, help="text LMDB (txt_db directory)")
    p.add_argument("--img_db", default=None, type=str, help="image LMDB (img_db directory)")
    p.add_argument("--checkpoint", default=None, type=str, help="model checkpoint (model_step_N.pt)")
    p.add_argument("--model_config", default=None, type=str, help="model config json")
    p.add_argument("--output_dir", default=None, type=str, help="where config.json, results.bin, scores.json go")
    p.add_argument("--train_config", default=None, type=str, help="hps.json of training (for the prepro hps)")
    p.add_argument("--compressed_db", action="store_true", help="use compressed LMDB")
    p.add_argument("--conf_th", type=float, default=0.2, help="threshold for dynamic bounding boxes (-1 for fixed)")
    p.add_argument("--max_bb", type=int, default=100, help="max number of bounding boxes")
    p.add_argument("--min_bb", type=int, default=10, help="min number of bounding boxes")
    p.add_argument("--num_bb", type=int, default=36, help="static number of bounding boxes")
    p.add_argument("--batch_size", default=400, type=int, help="images per forward pass")
    p.add_argument("--fp16", action="store_true", help="mixed precision (itr_common.amp)")
    p.add_argument("--n_workers", type=int, default=4, help="data workers (unused: images are read per block)")
    p.add_argument("--pin_mem", action="store_true", help="pin memory")
    p.add_argument("--IAIS", action="store_true", help="use the IAIS input layout (same scores)")
    return p


def resolve_config_path(path: str) -> Path:
    """The ``--config`` file; the README's ``.jgon`` typo and bundled names resolve with a notice."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    tries = []
    if candidate.suffix == ".jgon":
        tries.append(candidate.with_suffix(".json"))
    if not candidate.is_absolute():
        tries += [BUNDLED_CONFIG_DIR / candidate.name]
        if candidate.suffix == ".jgon":
            tries.append(BUNDLED_CONFIG_DIR / candidate.with_suffix(".json").name)
    for alt in tries:
        if alt.is_file():
            print(f"notice: --config {path} not found; using {alt}", file=sys.stderr)
            return alt
    require_file(candidate, "--config file")
    return candidate  # unreachable: require_file fails


def resolve_model_config(path: str | None, flag: str = "--model_config") -> Path:
    """The UNITER model config; the Docker path ``/src/config/uniter-*.json`` falls back to the bundled copy."""
    if not path:
        fail(f"{flag}: expected a uniter-*.json model config, found none")
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    bundled = BUNDLED_CONFIG_DIR / candidate.name
    if candidate.name in MODEL_CONFIGS and bundled.is_file():
        print(f"notice: {flag} {path} not found; using the bundled {bundled}", file=sys.stderr)
        return bundled
    return require_file(candidate, f"{flag} file")


def parse_train_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Flags, then the JSON config under them, then the original's option guards."""
    parser = train_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.config is not None:
        config_path = resolve_config_path(args.config)
        args = apply_config(args, parser, load_config(config_path), source=config_path, argv=argv)
    del args.config
    args.IAIS = _coerce_iais(args.IAIS)
    if isinstance(args.betas, list | tuple) and all(isinstance(b, int | float) and not isinstance(b, bool)
                                                    for b in args.betas):
        args.betas = [float(b) for b in args.betas]
    check_train_args(args)
    return args


def _coerce_iais(value: object) -> str | bool:
    """A config file's ``IAIS`` value (false, "singular", "distributed") as the flag's value."""
    if value is False or value is None:
        return False
    try:
        return _iais_value(str(value))
    except argparse.ArgumentTypeError as err:
        raise UserError(f"IAIS: {err}") from None


PREPRO_CHECKS = {"max_bb": integer(1), "min_bb": integer(0), "num_bb": integer(1)}
TRAIN_CHECKS = {
    **PREPRO_CHECKS,
    "train_batch_size": integer(1), "num_train_steps": integer(1), "valid_steps": integer(1),
    "inf_minibatch_size": integer(1), "negative_size": integer(1), "hard_neg_size": integer(1),
    "max_txt_len": integer(1), "warmup_steps": integer(0), "seed": integer(0), "n_workers": integer(0),
    "learning_rate": number(above=0), "margin": number(low=0), "dropout": number(0, below=1),
    "weight_decay": number(low=0), "betas": number(0, below=1, many=True), "grad_norm": number(),
    "conf_th": number(), "fp16": boolean(), "full_val": boolean(), "pin_mem": boolean(),
    "compressed_db": boolean(), "resume": boolean(), "checkpoint": text(optional=True),
    "output_dir": text(), "model_config": text(), "optim": choice("adam", "adamax", "adamw"),
}
"""Type and range of every training option (after the config file is merged under the flags)."""
INFERENCE_CHECKS = {
    **PREPRO_CHECKS, "batch_size": integer(1), "n_workers": integer(0), "conf_th": number(),
}


def check_switch_values(args: argparse.Namespace) -> None:
    """``grad_norm`` and ``conf_th``: -1 (no clipping / a fixed number of boxes, the original's switch) or in range."""
    for key, check in (("grad_norm", number(above=0)), ("conf_th", number(0, 1))):
        value = getattr(args, key)
        if value != -1 and not check.accepts(value):
            fail(f"--{key}: expected -1 or {check.describe()}, found {describe_value(value)}")


def check_train_args(args: argparse.Namespace) -> None:
    """The original's guards as one-line errors, plus the inputs the run cannot start without."""
    if not args.output_dir:
        fail("--output_dir: expected a directory for checkpoints and logs, found none")
    require_config_values(args, ("train_txt_dbs", "train_img_dbs", "val_txt_db", "val_img_db", "test_txt_db",
                                 "test_img_db"))
    check_options(args, TRAIN_CHECKS)
    pair_train_dbs(args)
    budget = (args.max_bb if args.conf_th == -1 else args.num_bb) + args.max_txt_len + 2
    if budget > 512:
        fail(f"max_txt_len: expected regions + max_txt_len + 2 <= 512 positions, found {budget}")
    if (args.negative_size + 1) % 8 != 0 or (args.hard_neg_size + 1) % 8 != 0:
        fail(f"negative_size/hard_neg_size: expected negative_size + 1 and hard_neg_size + 1 to be multiples of 8 "
             f"(the original's tensor-core guard), found {args.negative_size} and {args.hard_neg_size}")
    if args.hard_neg_size > args.negative_size:
        fail(f"hard_neg_size: expected at most negative_size={args.negative_size}, found {args.hard_neg_size}")
    if len(args.betas) != 2:
        fail(f"betas: expected two numbers, found {args.betas}")
    check_switch_values(args)
    if args.min_bb > args.max_bb:
        fail(f"--min_bb: expected at most --max_bb {args.max_bb}, found {args.min_bb}")
