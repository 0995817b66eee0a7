"""Building the bi-encoder from the command-line options, with every input checked before any work."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from itr_common.checkpoint import load_checkpoint
from itr_common.data.uniter_lmdb import DetectFeatLmdb
from itr_common.errors import fail
from itr_common.models.uniter import IMG_DIM, img_dim_of
from itr_common.validation import require_writable
from itr_lightningdot.checkpoints import (
    biencoder_state_from,
    load_biencoder_checkpoint,
    load_img_checkpoint,
    load_txt_checkpoint,
    load_txt_pretrained,
)
from itr_lightningdot.model import BiEncoder, build_biencoder

LOGGER = logging.getLogger(__name__)
TEXT_TOWER_PREFIXES = ("txt_model.", "bert.txt_model.")  # a bi-encoder's text tower: not the image size


def read_once() -> Callable[[str | Path], Any]:
    """A checkpoint reader that reads each file once: the image size and then the weights come from the same read
    (a released bi-encoder or UNITER-base checkpoint is hundreds of MB)."""
    held: dict[str, Any] = {}

    def read(path: str | Path) -> Any:
        key = str(path)
        if key not in held:
            held[key] = load_checkpoint(path)
        return held[key]

    return read


def checkpoint_img_dim(args: argparse.Namespace, read: Callable[[str | Path], Any] = load_checkpoint) -> int:
    """Region feature size from the bi-encoder checkpoint, else the UNITER checkpoint, else 2048 (``read``: how a
    checkpoint file is read)."""
    if args.biencoder_checkpoint:
        state, _ = biencoder_state_from(read(args.biencoder_checkpoint), args.biencoder_checkpoint)
        dim = img_dim_of(state, TEXT_TOWER_PREFIXES)
        if dim is not None:
            return dim
    if args.img_checkpoint:
        state = read(args.img_checkpoint)
        if isinstance(state, Mapping):
            dim = img_dim_of(state, TEXT_TOWER_PREFIXES)
            if dim is not None:
                return dim
    return IMG_DIM


def check_img_dbs(img_dbs: Iterable[DetectFeatLmdb], img_dim: int, source: str) -> None:
    """Every img_db's region features have the width the image tower was built for."""
    for db in img_dbs:
        if not db.names:
            fail(f"{db.img_dir}: expected at least one image, found none")
        feat, _ = db[db.names[0]]
        if feat.shape[1] != img_dim:
            fail(f"{db.img_dir}: region features have {feat.shape[1]} dims, but {source} expects {img_dim}")


def build_model(args: argparse.Namespace, load_pretrained: bool = True) -> tuple[BiEncoder, int]:
    """The bi-encoder as the original builds it: UNITER from ``img_checkpoint``, BERT from
    ``txt_model_config`` (+ ``txt_checkpoint``), then ``biencoder_checkpoint`` over both. Returns (model, img_dim)."""
    read = read_once()
    img_dim = checkpoint_img_dim(args, read)
    model = build_biencoder(args.img_model_config, args.txt_model_config, args.project_dim, img_dim,
                            getattr(args, "txt_model_type", "bert-base"),
                            getattr(args, "img_model_type", "uniter-base"),
                            getattr(args, "fix_img_encoder", False), getattr(args, "fix_txt_encoder", False))
    if load_pretrained and not args.biencoder_checkpoint:
        if args.img_checkpoint:
            load_img_checkpoint(model, args.img_checkpoint, read(args.img_checkpoint))
        else:
            LOGGER.info("no img_checkpoint: random initialisation of the image tower")
        if getattr(args, "txt_model_type", "bert-base") == "bert-base":
            load_txt_pretrained(model, args.txt_model_config)
        if args.txt_checkpoint:
            load_txt_checkpoint(model, args.txt_checkpoint)
    if args.biencoder_checkpoint:
        load_biencoder_checkpoint(model, args.biencoder_checkpoint, read(args.biencoder_checkpoint))
    return model, img_dim


def pick_device(no_cuda: bool, dist_device: torch.device | None = None) -> torch.device:
    if dist_device is not None and not no_cuda:
        return dist_device
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def writable_dir(path: str | Path, what: str) -> Path:
    """Create ``path`` (and parents) once ``require_writable`` passed, or fail with one line.

    Every rank of a torchrun world calls this on the same folder at once: require_writable probes with a unique
    temporary file per process (one fixed probe name let a rank delete its peer's probe, failing it)."""
    path = require_writable(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"{what} {path}: expected a writable directory, found {err.strerror or err}")
    return path
