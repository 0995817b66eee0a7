"""Command lines of ``train_itm.py``, ``eval_itm.py`` and ``pretrain.py`` (``dvl/options.py`` + pretrain.py).

Every flag of the original with its default; ``--config file.json`` sets each key of the file unless
the flag is on the command line (``parse_with_config``), through ``itr_common.config``; an unknown key
fails naming the closest valid one. Ours: ``--resume``. Paths in the bundled configs are relative to
the package folder (``./config/img_base.json``, ``./data/...``), as the original ran from its root.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from itr_common.config import apply_config, load_config, pair_train_dbs, require_config_values
from itr_common.errors import ArgumentParser, UserError, fail, require_file

PACKAGE_DIR = Path(__file__).resolve().parents[2]
"""``packages/lightningdot`` (holding ``config/``) in a source checkout or editable install."""
BUNDLED_CONFIG_DIR = PACKAGE_DIR / "config"

HARD_NEGATIVE_MODES = ("none", "random", "top", "top-random", "10-20", "20-30")
RETRIEVAL_MODES = ("img_only", "txt_only", "both")
CLS_CONCAT = ("", "add", "multiply")


def default_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--txt_model_type", default="bert-base", type=str, help="text tower: bert-base (or uniter-base)")
    p.add_argument("--txt_model_config", default="bert-base", type=str,
                   help="text tower BERT: a local directory (config + weights) or config json")
    p.add_argument("--txt_checkpoint", default=None, type=str, help="text tower weights (BertEncoder state dict)")
    p.add_argument("--img_model_type", default="uniter-base", type=str, help="image tower: uniter-base")
    p.add_argument("--img_model_config", default="./config/img_base.json", type=str, help="UNITER model config")
    p.add_argument("--img_checkpoint", default=None, type=str, help="UNITER weights (uniter-base.pt)")
    p.add_argument("--biencoder_checkpoint", default=None, type=str,
                   help="bi-encoder weights: biencoder.*.pt (CheckpointState) or LightningDot.pt")
    p.add_argument("--seperate_caption_encoder", action="store_true", help="(unused in the original)")
    p.add_argument("--train_batch_size", default=80, type=int, help="captions per training batch")
    p.add_argument("--valid_batch_size", default=80, type=int, help="items per evaluation batch")
    p.add_argument("--val_batch_size", default=None, type=int,
                   help="(a key of coco_ft_config.json that the original never read; accepted and unused)")
    p.add_argument("--gradient_accumulation_steps", default=1, type=int, help="batches per update")
    p.add_argument("--learning_rate", default=1e-5, type=float, help="peak learning rate")
    p.add_argument("--max_grad_norm", default=2.0, type=float, help="gradient clipping (<= 0: none)")
    p.add_argument("--warmup_steps", default=500, type=int, help="(unused: warmup is 10%% of the updates)")
    p.add_argument("--valid_steps", default=500, type=int, help="ours: save a resume state every X updates")
    p.add_argument("--num_train_steps", default=5000, type=int, help="(unused: training runs num_train_epochs)")
    p.add_argument("--num_train_epochs", default=0, type=int, help="training epochs")
    p.add_argument("--fp16", action="store_true", help="mixed precision (itr_common.amp)")
    p.add_argument("--seed", default=42, type=int, help="random seed")
    p.add_argument("--output_dir", default="./", type=str, help="where checkpoints and logs go")
    p.add_argument("--max_txt_len", default=64, type=int, help="captions longer than this are dropped (train)")
    p.add_argument("--local_rank", type=int, default=-1, help="(torchrun sets LOCAL_RANK; kept for old launchers)")
    p.add_argument("--config", default=None, type=str, help="JSON config (its keys are defaults of the flags)")
    p.add_argument("--itm_global_file", default=None, type=str, help="meta json (generated captions per image)")
    p.add_argument("--no_cuda", action="store_true", help="run on CPU even when CUDA is available")
    p.add_argument("--n_workers", type=int, default=2, help="number of data workers")
    p.add_argument("--pin_mem", action="store_true", help="pin memory")
    p.add_argument("--hnsw_index", action="store_true", help="evaluate with a faiss HNSW index instead of flat IP")
    p.add_argument("--fp16_opt_level", type=str, default="O1", help="apex opt level (mapped onto torch.amp)")
    p.add_argument("--img_meta", type=str, default=None, help="(set from itm_global_file)")


def add_itm_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf_th", default=0.2, type=float, help="threshold for dynamic bounding boxes (-1: fixed)")
    p.add_argument("--caption_score_weight", default=0.0, type=float, help="weight of generated-caption scores")
    p.add_argument("--negative_size", default=10, type=int, help="(unused in the original)")
    p.add_argument("--num_hard_negatives", default=0, type=int, help="hard negatives per caption and per image")
    p.add_argument("--sample_init_hard_negatives", action="store_true",
                   help="mine hard negatives with the initial model before epoch 0")
    p.add_argument("--hard_negatives_sampling", default="none", type=str, choices=HARD_NEGATIVE_MODES,
                   help="how the K hard negatives are picked from the model's own retrieval pool")
    p.add_argument("--max_bb", default=100, type=int, help="max number of bounding boxes")
    p.add_argument("--min_bb", default=10, type=int, help="min number of bounding boxes")
    p.add_argument("--num_bb", default=36, type=int, help="static number of bounding boxes")
    p.add_argument("--train_txt_dbs", default=None, nargs="+", type=str, help="training txt_db directories")
    p.add_argument("--train_img_dbs", default=None, nargs="+", type=str, help="training img_db directories")
    p.add_argument("--txt_db_mapping", default=None, type=str, help="replace a leading /db in paths by this")
    p.add_argument("--img_db_mapping", default=None, type=str, help="replace a leading /img in paths by this")
    p.add_argument("--pretrain_mapping", default=None, type=str, help="replace a leading /pretrain by this")
    p.add_argument("--val_txt_db", default=None, type=str, help="validation txt_db")
    p.add_argument("--val_img_db", default=None, type=str, help="validation img_db")
    p.add_argument("--test_txt_db", default=None, type=str, help="test txt_db")
    p.add_argument("--test_img_db", default=None, type=str, help="test img_db")
    p.add_argument("--steps_per_hard_neg", default=-1, type=int, help="(unused in the original)")
    p.add_argument("--inf_minibatch_size", default=400, type=int, help="(unused by the bi-encoder)")
    p.add_argument("--project_dim", default=0, type=int, help="projection size of both towers (0: none)")
    p.add_argument("--cls_concat", default="", type=str, help="pre-training: fuse the other tower's [CLS]")
    p.add_argument("--fix_txt_encoder", action="store_true", help="freeze the text tower")
    p.add_argument("--fix_img_encoder", action="store_true", help="freeze the image tower")
    p.add_argument("--compressed_db", action="store_true", help="use compressed LMDB")
    p.add_argument("--retrieval_mode", default="both", choices=RETRIEVAL_MODES, type=str,
                   help="both (the only mode the original still trains)")


def add_logging_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log_result_step", default=4, type=int, help="log every X batches")
    p.add_argument("--project_name", default="itm", type=str, help="experiment name (logs)")
    p.add_argument("--expr_name_prefix", default="", type=str, help="experiment name prefix (logs)")
    p.add_argument("--save_all_epochs", action="store_true", help="also save biencoder.{epoch}.pt")


def add_kd_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher_checkpoint", default=None, type=str, help="UNITER teacher for distillation")
    p.add_argument("--T", default=1.0, type=float, help="distillation temperature")
    p.add_argument("--kd_loss_weight", default=1.0, type=float, help="distillation loss weight")


def train_parser(prog: str = "train_itm.py") -> ArgumentParser:
    p = ArgumentParser(prog=prog, description="Fine-tune the LightningDOT bi-encoder (in-batch NLL, hard negatives).")
    default_params(p)
    add_itm_params(p)
    add_logging_params(p)
    add_kd_params(p)
    p.add_argument("--resume", action="store_true",
                   help="ours: continue from {output_dir}/train_state.pt instead of refusing a used output_dir")
    return p


def resolve_config_path(path: str) -> Path:
    """The ``--config`` file; a bundled name (``config/x.json``) resolves from anywhere with a notice."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    bundled = BUNDLED_CONFIG_DIR / candidate.name
    if not candidate.is_absolute() and bundled.is_file():
        print(f"notice: --config {path} not found; using {bundled}", file=sys.stderr)
        return bundled
    return require_file(candidate, "--config file")


def resolve_bundled(path: str | None) -> str | None:
    """``./config/img_base.json`` and the like fall back to the bundled copy when run elsewhere."""
    if not path:
        return path
    candidate = Path(path)
    if candidate.exists():
        return path
    bundled = BUNDLED_CONFIG_DIR / candidate.name
    if candidate.parent.name == "config" and bundled.is_file():
        return str(bundled)
    return path


def map_db_path(args: argparse.Namespace, value: str) -> str:
    """One path with a leading /pretrain, /db or /img replaced by its ``*_mapping`` (when set)."""
    for prefix, target in (("/pretrain", args.pretrain_mapping), ("/db", args.txt_db_mapping),
                           ("/img", args.img_db_mapping)):
        if target and value.startswith(prefix):
            return value.replace(prefix, target, 1)
    return value


def map_db_dirs(args: argparse.Namespace) -> None:
    """The original ``map_db_dirs``: prefix substitution of /pretrain, /db, /img in every path value."""

    def mapped(value: str) -> str:
        return map_db_path(args, value)

    for key, value in list(vars(args).items()):
        if isinstance(value, str):
            setattr(args, key, mapped(value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            setattr(args, key, [mapped(v) for v in value])


def parse_with_config(parser: ArgumentParser, argv: Sequence[str] | None,
                      config_key: str = "config") -> argparse.Namespace:
    """Parse ``argv``, then apply the config json named by ``config_key`` (bundled names resolved) except the
    keys given on the command line; ``args.config`` is the resolved path (None without a config)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    value = getattr(args, config_key)
    if value is not None:
        path = resolve_config_path(value)
        args = apply_config(args, parser, load_config(path), source=path, argv=argv)
        args.config = str(path)
    return args


def _positive(args: argparse.Namespace, *keys: str, allow_zero: Sequence[str] = ()) -> None:
    for key in keys:
        value = getattr(args, key)
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{key}: expected an integer, found {value!r}")
        if value < 0 or (value == 0 and key not in allow_zero):
            fail(f"{key}: expected a {'non-negative' if key in allow_zero else 'positive'} integer, found {value}")


def _number(args: argparse.Namespace, key: str, lo: float | None = None, hi: float | None = None) -> None:
    value = getattr(args, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"{key}: expected a number, found {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        wanted = f"a value >= {lo}" if hi is None else f"a value <= {hi}" if lo is None else f"a value in [{lo}, {hi}]"
        fail(f"{key}: expected {wanted}, found {value}")


def check_common(args: argparse.Namespace) -> None:
    """Types and ranges shared by training and evaluation; the original's position-budget guard."""
    _positive(args, "max_bb", "min_bb", "num_bb", "valid_batch_size")
    _positive(args, "project_dim", "n_workers", allow_zero=("project_dim", "n_workers"))
    if not isinstance(args.max_txt_len, int) or isinstance(args.max_txt_len, bool) or args.max_txt_len == 0 \
            or args.max_txt_len < -1:
        fail(f"max_txt_len: expected a positive integer (or -1 for all), found {args.max_txt_len!r}")
    _number(args, "conf_th", -1, 1)
    budget = (args.max_bb if args.conf_th == -1 else args.num_bb) + args.max_txt_len + 2
    if budget > 512:
        fail(f"max_txt_len: expected regions + max_txt_len + 2 <= 512 positions, found {budget}")
    if args.fp16_opt_level not in ("O0", "O1", "O2", "O3"):
        fail(f"fp16_opt_level: expected one of O0, O1, O2, O3, found '{args.fp16_opt_level}'")
    if args.retrieval_mode != "both":
        fail(f"retrieval_mode: the original stopped supporting '{args.retrieval_mode}' (ValueError); expected 'both'")
    for key in ("txt_model_config", "img_model_config"):
        if not isinstance(getattr(args, key), str):
            fail(f"{key}: expected a path, found {getattr(args, key)!r}")
    args.img_model_config = resolve_bundled(args.img_model_config)
    require_file(args.img_model_config, "img_model_config (UNITER model config)")
    if not Path(args.txt_model_config).exists():
        raise UserError(f"txt_model_config: expected a local BERT directory (nothing is downloaded), "
                        f"found '{args.txt_model_config}'")
    for key in ("img_checkpoint", "txt_checkpoint", "biencoder_checkpoint", "itm_global_file"):
        value = getattr(args, key, None)
        if isinstance(value, str) and value.lower() in ("none", ""):
            setattr(args, key, None)
            value = None
        if value is not None:
            if not isinstance(value, str):
                fail(f"{key}: expected a path, found {value!r}")
            require_file(value, key)


def check_train_args(args: argparse.Namespace) -> None:
    """Every value typed and in range, every input there, before any work."""
    map_db_dirs(args)
    check_common(args)
    _positive(args, "train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "log_result_step",
              "valid_steps")
    _positive(args, "num_hard_negatives", allow_zero=("num_hard_negatives",))
    _number(args, "learning_rate", 0, None)
    _number(args, "max_grad_norm")
    _number(args, "caption_score_weight", 0, 1)
    if args.hard_negatives_sampling not in HARD_NEGATIVE_MODES:
        fail(f"hard_negatives_sampling: expected one of {', '.join(HARD_NEGATIVE_MODES)}, "
             f"found '{args.hard_negatives_sampling}'")
    if args.num_hard_negatives == 0 and args.hard_negatives_sampling != "none":
        fail(f"hard_negatives_sampling: '{args.hard_negatives_sampling}' needs num_hard_negatives > 0 "
             f"(the original asserted this after the first epoch)")
    if args.sample_init_hard_negatives and args.num_hard_negatives == 0:
        fail("sample_init_hard_negatives: expected num_hard_negatives > 0 (the original's assertion)")
    if args.teacher_checkpoint:
        fail("teacher_checkpoint: distillation needs GLOBAL_VARIABLES.N_EXAMPLES_TEACHER and a teacher "
             "config.json/model.pt pair the original never released; not supported")
    if args.caption_score_weight and not args.itm_global_file:
        fail("caption_score_weight: expected itm_global_file (generated captions per image) when the weight is > 0")
    require_config_values(args, ("train_txt_dbs", "train_img_dbs", "val_txt_db", "val_img_db"))
    pair_train_dbs(args)
    if bool(args.test_txt_db) != bool(args.test_img_db):
        fail("test_txt_db/test_img_db: expected both or neither")
    check_db_dirs(args, ("train_txt_dbs", "train_img_dbs", "val_txt_db", "val_img_db", "test_txt_db", "test_img_db"))


def check_db_dirs(args: argparse.Namespace, keys: Sequence[str]) -> None:
    """Every named txt_db / img_db is a directory (one line naming the key otherwise)."""
    for key in keys:
        value = getattr(args, key, None)
        for path in ([value] if isinstance(value, str) else value or []):
            if not isinstance(path, str) or not Path(path).is_dir():
                fail(f"{key}: expected a directory, found {path!r}" + ("" if isinstance(path, str) and
                     Path(path).exists() or not isinstance(path, str) else " (missing)"))


def parse_train_args(argv: Sequence[str] | None = None, prog: str = "train_itm.py") -> argparse.Namespace:
    parser = train_parser(prog)
    args = parse_with_config(parser, argv)
    check_train_args(args)
    return args


def eval_parser() -> ArgumentParser:
    """``eval_itm.py <eval_config.json> <checkpoint.pt>`` (+ ours: flags override the config)."""
    p = ArgumentParser(prog="eval_itm.py", description="Evaluate a LightningDOT checkpoint (faiss retrieval recall).")
    p.add_argument("eval_config", help="eval config json (config/{flickr30k,coco}_eval_config.json)")
    p.add_argument("biencoder_checkpoint_path", metavar="checkpoint", help="biencoder.*.pt or LightningDot.pt")
    default_params(p)
    add_itm_params(p)
    add_logging_params(p)
    p.add_argument("--splits", nargs="+", default=["dev", "test"], choices=["dev", "test"],
                   help="ours: which of the config's splits to evaluate (the original: both present)")
    p.add_argument("--result_json", default=None, help="ours: where to write the result JSON "
                                                      "(default {output_dir}/retrieval_result_{split}.json)")
    p.add_argument("--save_embeddings", default=None,
                   help="ours: write the test split's embeddings and a faiss index under this directory")
    p.add_argument("--vocab", default=None, help="ours, with --save_embeddings: the text tower's vocab.txt")
    return p


def parse_eval_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parse_with_config(eval_parser(), argv, "eval_config")
    path = Path(args.config)
    args.biencoder_checkpoint = args.biencoder_checkpoint_path
    map_db_dirs(args)
    check_common(args)
    pairs = [("dev", args.val_txt_db, args.val_img_db), ("test", args.test_txt_db, args.test_img_db)]
    args.eval_sets = [(name, t, i) for name, t, i in pairs if name in args.splits and t]
    if not args.eval_sets:
        fail(f"{path}: expected val_txt_db/val_img_db or test_txt_db/test_img_db for splits {args.splits}, found none")
    for name, txt, img in args.eval_sets:
        if not img:
            fail(f"{path}: {name} split names a txt_db ({txt}) but no img_db")
        for key, value in ((f"{name} txt_db", txt), (f"{name} img_db", img)):
            if not Path(value).is_dir():
                fail(f"{key}: expected a directory, found {value!r} (missing)")
    return args
