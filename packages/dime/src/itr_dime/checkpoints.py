"""DIME checkpoints in the original layout, written atomically and read without running code.

A checkpoint is the dict the original ``train.py`` saves (``checkpoint.pth.tar`` every validation,
copied to ``model_best.pth.tar`` when the dev score improves)::

    {'epoch': int (epochs begun, as the original's epoch + 1), 'model': [img_enc, txt_enc, itr_module]
     state dicts, 'best_rsum': float, 'best_r1': float, 'opt': argparse.Namespace, 'Eiters': int}

plus what ``--resume`` needs to continue exactly (absent from the original's files, which still load):
``'optimizer'`` (Adam state), ``'amp'`` (loss-scaler state), ``'rng'`` (RNG states) and
``'resume'`` = ``{'epoch': epoch index, 'batch': batches of that epoch already done}``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from itr_common.checkpoint import load_checkpoint, save_atomic, save_with_best
from itr_common.errors import fail
from itr_common.fileio import atomic_open
from itr_dime.model import DIME, build_bert
from itr_dime.options import complete_options

ORIGINAL_KEYS = ("epoch", "model", "best_rsum", "best_r1", "opt", "Eiters")
CHECKPOINT_FILE = "checkpoint.pth.tar"
BEST_FILE = "model_best.pth.tar"


def save_legacy_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, _use_new_zipfile_serialization=False)`` (the format of PyTorch < 1.6, which the
    original's PyTorch 1.0 reads) to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle, _use_new_zipfile_serialization=False)
    return Path(path)


def save_checkpoint(state: dict[str, Any], is_best: bool, prefix: str | os.PathLike = "",
                    legacy: bool | None = None) -> Path:
    """Write ``prefix/checkpoint.pth.tar`` atomically; when ``is_best`` copy it (atomically, umask mode) to
    ``prefix/model_best.pth.tar`` (:func:`itr_common.checkpoint.save_with_best`). ``legacy``: PyTorch's pre-1.6
    format (default: ``--legacy_save`` of the state's ``opt``). Returns the checkpoint path."""
    if legacy is None:
        legacy = bool(getattr(state.get("opt"), "legacy_save", False))
    return save_with_best(state, is_best, prefix, name=CHECKPOINT_FILE, best_name=BEST_FILE,
                          save=save_legacy_atomic if legacy else save_atomic)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a DIME checkpoint (weights_only; ``opt`` Namespace allowed) and check its layout."""
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict):
        fail(f"{path}: expected a DIME checkpoint dict with keys {list(ORIGINAL_KEYS)}, found {type(state).__name__}")
    missing = [key for key in ("model", "opt") if key not in state]
    if missing:
        fail(f"{path}: expected a DIME checkpoint with keys {list(ORIGINAL_KEYS)}, missing {missing}")
    if not isinstance(state["opt"], argparse.Namespace):
        fail(f"{path}: expected 'opt' to be an argparse.Namespace, found {type(state['opt']).__name__}")
    return state


def has_bert_weights(state: dict[str, Any]) -> bool:
    """Whether the checkpoint's text encoder carries BERT's weights (the original saves them)."""
    model = state.get("model")
    return isinstance(model, list | tuple) and len(model) == 3 and any(
        k.startswith(("bert.", "module.bert.")) for k in model[1])


def load_model(
    path: str | os.PathLike,
    data_path: str | None = None,
    bert_path: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[DIME, argparse.Namespace, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights; returns ``(model, opt, checkpoint)``.

    ``data_path`` / ``bert_path`` replace the paths saved in ``opt``. BERT's pretrained weights are only
    read from ``bert_path`` when the checkpoint does not hold them (its config and vocabulary always are).
    """
    state = read_checkpoint(path)
    opt = complete_options(state["opt"])
    if data_path is not None:
        opt.data_path = data_path
    if bert_path is not None:
        opt.bert_path = bert_path
    bert = build_bert(opt.bert_path, load_weights=not has_bert_weights(state))
    model = DIME(opt, bert=bert)
    model.load_original_state_dict(state["model"], source=str(path))
    return model.to(device).eval(), opt, state


__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "ORIGINAL_KEYS", "has_bert_weights", "load_model", "read_checkpoint",
           "save_checkpoint", "save_legacy_atomic"]
