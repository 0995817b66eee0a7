"""The flags of ``camera_SelfAlign/train_SelfAlign.py`` and ``vsrn_SelfAlign/train_SelfAlign.py``: the original
names, types and defaults (Zjamie813/SelfAlign), then ours.

Added here: ``--selfalign 0`` (the plain CAMERA / VSRN baseline trained by the same code: no concept or
context module, no context part in the embeddings, the base text tower), ``--seed`` (the original's fixed
1024), ``--device``, ``--fp16``, ``--eval_chunk``, ``--sum_violation_epochs`` (a warm-up of summed violations
before max violation; 0, the default, is the originals' schedule). ``--max_violation`` is ``type=bool, default=True`` in
SelfAlign and ``store_true`` in CAMERA/VSRN: both spellings work here (``--max_violation`` alone, or with
a value: ``True``/``False``/``1``/``0``; the original turned any value, even ``False``, into True).
Unused flags the originals declare are accepted and documented as unused.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from itr_common.errors import ArgumentParser, fail
from itr_common.training import add_sum_violation_flag

VARIANTS = ("camera", "vsrn")


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "y", "t"):
        return True
    if lowered in ("0", "false", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True/False or 1/0, found '{value}'")


def _common_flags(add, *, workers: int, lr: float, lr_update: int) -> None:
    add("--data_path", default="./scan_data", help="path to datasets")
    add("--data_name", default="f30k_precomp", help="{coco,f30k}_precomp: the folder under --data_path")
    add("--margin", default=0.2, type=float, help="Rank loss margin.")
    add("--num_epochs", default=30, type=int, help="Number of training epochs.")
    add("--batch_size", default=128, type=int, help="Size of a training mini-batch.")
    add("--embed_size", default=2048, type=int, help="Dimensionality of the joint embedding.")
    add("--grad_clip", default=2.0, type=float, help="Gradient clipping threshold.")
    add("--learning_rate", default=lr, type=float, help="Initial learning rate.")
    add("--lr_update", default=lr_update, type=int, help="Number of epochs to update the learning rate.")
    add("--workers", default=workers, type=int, help="Number of data loader workers.")
    add("--log_step", default=10, type=int, help="Number of steps to print and record the log.")
    add("--val_step", default=500, type=int, help="Number of steps to run validation.")
    add("--logger_name", default="runs/runX", help="Path to save the model and Tensorboard log.")
    add("--resume", default="", type=str, metavar="PATH", help="path to latest checkpoint (default: none)")
    add("--max_violation", type=str2bool, nargs="?", const=True, default=True,
        help="Use max instead of sum in the rank loss (default True).")
    add("--img_dim", default=2048, type=int, help="Dimensionality of the image embedding.")


def _added_flags(add) -> None:
    add("--selfalign", type=int, default=1, choices=(0, 1),
        help="1: SelfAlign (concept + context alignment); 0: the plain base model trained by the same code")
    add("--seed", type=int, default=1024, help="Seed of parameter init and data order (the original's init_seed).")
    add("--device", default=None, help="cpu | cuda | cuda:N (default: cuda:LOCAL_RANK when available, else cpu).")
    add("--fp16", action="store_true", help="Mixed precision (autocast; fp16 + loss scaling on CUDA, bf16 on CPU).")
    add("--eval_chunk", type=int, default=0,
        help="Queries per scoring block in validation (0: as many as 2**25 scores allow).")


def build_camera_parser(prog: str = "train_SelfAlign.py") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Train CAMERA+SelfAlign (or plain CAMERA with --selfalign 0).")
    add = parser.add_argument
    _common_flags(add, workers=1, lr=1e-4, lr_update=10)
    add("--lr_decay_gamma", default=0.1, type=float, help="Decay coefficient for learning rate updating")
    add("--bert_path", default="./uncased_L-12_H-768_A-12/", type=str, help="The BERT model path.")
    add("--max_words", default=32, type=int, help="maximum number of words in a sentence.")
    add("--drop", type=float, default=0.0, help="Dropout")
    add("--head", type=int, default=64, help="Number of heads in AGSA")
    add("--smry_k", type=int, default=12, help="Number of views in summarization module")
    add("--smry_lamda", type=float, default=0.01, help="Trade-off in summarization module")
    add("--ctx_fc_relu", type=int, default=1, help="1: ReLU after the context BatchNorms, 0: none")
    add("--local_clu_num", type=int, default=1024, help="Number of concept prototypes.")
    add("--v5_tao", type=float, default=0.7, help="softmax temperature (caption context vs image locals)")
    add("--v6_tao", type=float, default=0.7, help="softmax temperature (image context vs caption locals)")
    add("--local_tea", type=str, default="CRS", help="T, CRS (ablation switch; unused by the released code)")
    _added_flags(add)
    add_sum_violation_flag(parser)
    return parser


def build_vsrn_parser(prog: str = "train_SelfAlign.py") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Train VSRN+SelfAlign (or plain VSRN with --selfalign 0).")
    add = parser.add_argument
    _common_flags(add, workers=10, lr=2e-4, lr_update=10)
    add("--vocab_path", default="./vocab/", help="Path to saved vocabulary pickle files.")
    add("--word_dim", default=300, type=int, help="Dimensionality of the word embedding.")
    add("--crop_size", default=224, type=int, help="Size of an image crop as the CNN input (unused: precomp).")
    add("--num_layers", default=1, type=int, help="Number of GRU layers.")
    add("--finetune", action="store_true", help="Fine-tune the image encoder (unused: precomp).")
    add("--cnn_type", default="vgg19", help="The CNN used for image encoder (unused: precomp).")
    add("--use_restval", action="store_true", help="Use the restval data for training on MSCOCO (unused: precomp).")
    add("--measure", default="cosine", help="Similarity measure used (cosine).")
    add("--use_abs", action="store_true", help="Take the absolute value of embedding vectors.")
    add("--no_imgnorm", action="store_true", help="Do not normalize the image embeddings.")
    add("--reset_train", action="store_true", help="Unused (inherited from VSE++).")
    add("--dim_vid", type=int, default=2048, help="dim of the region features the caption model reads")
    add("--dim_hidden", type=int, default=512, help="size of the rnn hidden layer")
    add("--bidirectional", type=int, default=0, help="0 for disable, 1 for enable. encoder/decoder bidirectional.")
    add("--input_dropout_p", type=float, default=0.2, help="strength of dropout in the Language Model RNN")
    add("--rnn_type", type=str, default="gru", help="lstm or gru")
    add("--rnn_dropout_p", type=float, default=0.5, help="strength of dropout in the Language Model RNN")
    add("--dim_word", type=int, default=300, help="the encoding size of each token in the vocabulary")
    add("--max_len", type=int, default=60, help="max length of captions(containing <sos>,<eos>)")
    add("--iters_per_epoch", type=int, default=0, help="len(train_loader) (set by the script)")
    add("--local_clu_num", type=int, default=1024, help="Number of concept prototypes.")
    add("--ctx_relu", type=int, default=1, help="1: ReLU after the context BatchNorms, 0: none")
    add("--v5_tao", type=float, default=0.7, help="softmax temperature (caption context vs image locals)")
    add("--v6_tao", type=float, default=0.7, help="softmax temperature (image context vs caption locals)")
    add("--exp_sim", type=float, default=0.5, help="unused by the released code")
    _added_flags(add)
    add_sum_violation_flag(parser)
    return parser


def build_parser(variant: str, prog: str = "train_SelfAlign.py") -> ArgumentParser:
    return build_camera_parser(prog) if variant == "camera" else build_vsrn_parser(prog)


def default_options(variant: str) -> argparse.Namespace:
    return build_parser(variant).parse_args([])


def complete_options(variant: str, opt: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags an original checkpoint's ``opt`` lacks with today's defaults (a copy)."""
    merged = vars(default_options(variant))
    merged.update(vars(opt))
    return argparse.Namespace(**merged)


def add_bert_files(opt: argparse.Namespace) -> argparse.Namespace:
    """The derived BERT fields the original stores (it joins ``bert_path + 'vocab.txt'``; we join as a path,
    so ``--bert_path dir`` and ``--bert_path dir/`` both work)."""
    opt.vocab_file = os.path.join(opt.bert_path, "vocab.txt")
    opt.bert_config_file = os.path.join(opt.bert_path, "bert_config.json")
    opt.init_checkpoint = os.path.join(opt.bert_path, "pytorch_model.bin")
    opt.do_lower_case = True
    return opt


def check_options(variant: str, opt: argparse.Namespace) -> None:
    """Fail with one line on a flag value the model cannot use."""
    positive = ["batch_size", "embed_size", "img_dim", "num_epochs", "lr_update", "log_step", "val_step",
                "local_clu_num"]
    positive += ["head", "smry_k", "max_words"] if variant == "camera" else [
        "word_dim", "num_layers", "dim_hidden", "dim_word", "max_len", "dim_vid"]
    for name in positive:
        if getattr(opt, name) < 1:
            fail(f"--{name}: expected a positive integer, found {getattr(opt, name)}")
    for name in ("margin", "learning_rate", "grad_clip"):
        if not getattr(opt, name) >= 0:
            fail(f"--{name}: expected a non-negative number, found {getattr(opt, name)}")
    for name in ("v5_tao", "v6_tao"):
        if not getattr(opt, name) > 0:
            fail(f"--{name}: expected a positive temperature, found {getattr(opt, name)}")
    for name in (("ctx_fc_relu",) if variant == "camera" else ("ctx_relu", "bidirectional")):
        if getattr(opt, name) not in (0, 1):
            fail(f"--{name}: expected 0 or 1, found {getattr(opt, name)}")
    probabilities = ("drop",) if variant == "camera" else ("input_dropout_p", "rnn_dropout_p")
    for name in probabilities:
        if not 0 <= getattr(opt, name) < 1:
            fail(f"--{name}: expected a probability in [0, 1), found {getattr(opt, name)}")
    if variant == "camera" and not opt.lr_decay_gamma > 0:
        fail(f"--lr_decay_gamma: expected a positive factor, found {opt.lr_decay_gamma}")
    if variant == "camera" and not opt.smry_lamda >= 0:
        fail(f"--smry_lamda: expected a non-negative weight, found {opt.smry_lamda}")
    for name in ("workers", "eval_chunk", "sum_violation_epochs"):
        if getattr(opt, name) < 0:
            fail(f"--{name}: expected a non-negative integer, found {getattr(opt, name)}")
    if variant == "camera":
        if opt.embed_size % opt.head:
            fail(f"--head: expected a divisor of --embed_size {opt.embed_size}, found {opt.head}")
        if opt.max_words < 2:
            fail(f"--max_words: expected at least 2 ([CLS] and [SEP]), found {opt.max_words}")
    else:
        if opt.measure != "cosine":
            fail(f"--measure: expected 'cosine' (the order embedding is not part of VSRN), found '{opt.measure}'")
        if opt.rnn_type.lower() != "gru":  # the original decoder squeezes its hidden state: an LSTM's tuple crashes it
            fail(f"--rnn_type: expected gru (the caption decoder's attention reads a GRU state), "
                 f"found '{opt.rnn_type}'")
        if opt.dim_vid != opt.embed_size:
            fail(f"--dim_vid: expected --embed_size {opt.embed_size} (the caption model reads the GCN regions), "
                 f"found {opt.dim_vid}")
        if opt.max_len < 2:
            fail(f"--max_len: expected at least 2 (<start> and <end>), found {opt.max_len}")
        if opt.finetune:
            fail("--finetune: expected precomputed features (a *_precomp --data_name); CNN fine-tuning is not part "
                 "of this reproduction")


def parse_train_args(variant: str, argv: Sequence[str] | None = None,
                     prog: str = "train_SelfAlign.py") -> argparse.Namespace:
    opt = build_parser(variant, prog).parse_args(argv)
    check_options(variant, opt)
    if variant == "camera":
        add_bert_files(opt)
    return opt


__all__ = ["VARIANTS", "add_bert_files", "build_camera_parser", "build_parser", "build_vsrn_parser", "check_options",
           "complete_options", "default_options", "parse_train_args", "str2bool"]
