"""Checkpoints of both variants in the original layout, written atomically, read without running code.

The original ``train_SelfAlign.py`` saves ``checkpoint.pth.tar`` (and ``model_best.pth.tar``)::

    {'epoch': epochs begun, 'model': [img_enc, txt_enc(, region_loss)] state dicts, 'best_rsum': float,
     'opt': argparse.Namespace, 'Eiters': int}            (+ 'best_r1' in the CAMERA variant)

The base models (CAMERA, VSRN) save two state dicts, the SelfAlign variants three (``region_loss`` holds
the concept prototypes). Beside the original entries we save ``'caption_model'`` (VSRN's caption decoder,
which the original never saves, so its ``--resume`` silently restarts it) and what an exact ``--resume``
needs: ``'optimizer'``, ``'amp'``, ``'rng'``, ``'resume'`` = ``{'epoch', 'batch'}``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from itr_common.checkpoint import load_checkpoint, load_state_dict_mapped, save_with_best, strip_module_prefix
from itr_common.errors import fail
from itr_selfalign.options import complete_options

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pth.tar"
BEST_FILE = "model_best.pth.tar"
ORIGINAL_KEYS = ("epoch", "model", "best_rsum", "opt", "Eiters")
VARIANT_NAMES = {"camera": "CAMERA", "vsrn": "VSRN"}
# Old BERT LayerNorm names (pytorch-pretrained-bert) -> today's; position_ids buffers some versions saved.
BERT_RENAMES = [(r"^(bert\..*)\.gamma$", r"\1.weight"), (r"^(bert\..*)\.beta$", r"\1.bias")]
IGNORED_KEYS = ("bert.embeddings.position_ids",)


def save_checkpoint(state: dict[str, Any], is_best: bool, prefix: str | os.PathLike = "") -> Path:
    """Write ``prefix/checkpoint.pth.tar`` atomically; when ``is_best`` copy it atomically, with the umask's mode,
    to ``model_best.pth.tar`` (:func:`itr_common.checkpoint.save_with_best`)."""
    return save_with_best(state, is_best, prefix, name=CHECKPOINT_FILE, best_name=BEST_FILE)


def variant_of(opt: argparse.Namespace) -> str | None:
    """``camera`` / ``vsrn`` from the options a checkpoint stores (CAMERA has smry_k, VSRN word_dim)."""
    if hasattr(opt, "smry_k"):
        return "camera"
    if hasattr(opt, "word_dim") or hasattr(opt, "vocab_path"):
        return "vsrn"
    return None


def read_checkpoint(path: str | os.PathLike, variant: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (weights_only; ``opt`` Namespace allowed), check its layout and its variant."""
    state = load_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "opt" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        fail(f"{path}: expected a checkpoint dict with keys {list(ORIGINAL_KEYS)}, found {found}")
    if not isinstance(state["opt"], argparse.Namespace):
        fail(f"{path}: expected 'opt' to be an argparse.Namespace, found {type(state['opt']).__name__}")
    model = state["model"]
    if not isinstance(model, list | tuple) or len(model) not in (2, 3) or not all(isinstance(m, dict) for m in model):
        fail(f"{path}: expected 'model' to be a list of 2 (base) or 3 (SelfAlign) state dicts")
    state["model"] = [strip_module_prefix(m) for m in model]  # saved from a DDP-wrapped module
    found = variant_of(state["opt"])
    if variant is not None and found != variant:
        if found is None:
            fail(f"{path}: expected a {VARIANT_NAMES[variant]} checkpoint, found another model's (its opt has neither "
                 "smry_k (CAMERA) nor word_dim (VSRN))")
        fail(f"{path}: expected a {VARIANT_NAMES[variant]} checkpoint, found {VARIANT_NAMES[found]}'s (its opt has "
             f"{'smry_k' if found == 'camera' else 'word_dim'})")
    return state


def checkpoint_options(state: dict[str, Any], variant: str) -> argparse.Namespace:
    """The checkpoint's options completed with today's defaults; ``selfalign`` from the number of state dicts."""
    opt = complete_options(variant, state["opt"])
    opt.selfalign = 1 if len(state["model"]) == 3 else 0
    return opt


def original_state_dict(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """The original ``model.state_dict()`` list: img_enc, txt_enc(, region_loss)."""
    return [m.state_dict() for m in model.original_modules()]


def load_original_state_dict(model: nn.Module, states: list[dict[str, torch.Tensor]], source: str) -> None:
    """Load the original list strictly (missing/unexpected keys named); old BERT names are renamed and
    ``bert.embeddings.position_ids`` (a buffer some BERT versions save) is skipped, logged by name."""
    modules = model.original_modules()
    if len(states) != len(modules):
        kind = "SelfAlign (3 state dicts)" if len(modules) == 3 else "base (2 state dicts)"
        fail(f"{source}: expected the 'model' list of a {kind} model, found {len(states)} state dicts")
    names = ("img_enc", "txt_enc", "region_loss")
    for name, module, state in zip(names, modules, states, strict=False):
        ignored = [k for k in state if k in IGNORED_KEYS]
        if ignored:
            logger.info("%s: %s: not a parameter, skipped: %s", source, name, ", ".join(ignored))
        kept = {k: v for k, v in state.items() if k not in IGNORED_KEYS}
        load_state_dict_mapped(module, kept, rename=BERT_RENAMES, strict=True, source=f"{source} ['model'][{name}]")


def has_bert_weights(state: dict[str, Any]) -> bool:
    return any(k.startswith("bert.") for k in state["model"][1])


__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "ORIGINAL_KEYS", "checkpoint_options", "has_bert_weights",
           "load_original_state_dict", "original_state_dict", "read_checkpoint", "save_checkpoint", "variant_of"]
