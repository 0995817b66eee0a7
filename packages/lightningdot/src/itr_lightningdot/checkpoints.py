"""Checkpoints: UNITER / BERT initialisation, ``biencoder.{best,last}.pt`` (CheckpointState) and the
released ``LightningDot.pt`` layout.

- ``img_checkpoint`` (``uniter-base.pt``): UNITER weights into ``img_model.bert``. ChenRocks/UNITER
  files use ``uniter.*`` keys, LightningDOT's vendored UNITER ``bert.*``; both load (the original
  loaded a ``uniter.*`` file into nothing and silently kept random weights). Pre-training heads are
  ignored by name; a file with no backbone key is refused.
- text tower: the pretrained BERT of ``txt_model_config`` (a local directory), then ``txt_checkpoint``
  (a ``BertEncoder`` state dict, ``bert.*`` keys) if given.
- ``biencoder_checkpoint``: a ``CheckpointState`` dict (``model_dict`` = BiEncoder state dict) or a
  pre-training state dict whose ``bert.*`` keys are the BiEncoder's (``LightningDot.pt``; the heads
  ``cls.*``, ``feat_regress.*``, ``region_classifier.*``, ``itm_output.*`` are dropped by name);
  loaded strictly either way.
- train states (``--resume``): rank 0 writes the single-process layout, every other rank R its own RNG streams
  and data position to ``<state>.rankR.pt`` (``itr_common.rank_state``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from itr_common.checkpoint import load_checkpoint, load_state_dict_mapped, save_atomic
from itr_common.errors import UserError, fail
from itr_common.models.uniter import PRETRAIN_HEAD_PREFIXES, rename_original_keys
from itr_lightningdot.model import BiEncoder

LOGGER = logging.getLogger(__name__)

CHECKPOINT_STATE_KEYS = ("model_dict", "optimizer_dict", "scheduler_dict", "offset", "epoch", "encoder_params")
"""The original ``CheckpointState`` namedtuple fields, saved as a dict (``state._asdict()``)."""

PRETRAIN_HEADS = ("cls.", "feat_regress.", "region_classifier.", "itm_output.")
"""Heads of ``BiEncoderForPretraining`` (released ``LightningDot.pt``) that the bi-encoder does not use."""

HF_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
"""Buffers some transformers versions saved in BERT state dicts (not parameters; dropped by name)."""


def _state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        fail(f"{source}: expected a state dict of tensors, found {type(obj).__name__}")
    return dict(obj)


def _drop_buffers(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    dropped = [k for k in state if k.endswith(HF_BUFFERS)]
    if dropped:
        LOGGER.info("%s: dropping saved BERT buffers %s", source, dropped)
    return {k: v for k, v in state.items() if not k.endswith(HF_BUFFERS)}


def load_img_checkpoint(model: BiEncoder, path: str | os.PathLike, checkpoint: Any = None) -> list[str]:
    """UNITER weights (``uniter.*`` or ``bert.*`` keys) into the image tower; returns the keys not found.
    ``checkpoint``: what ``path`` holds, when the caller has read it already (default: read here)."""
    source = str(path)
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    state = rename_original_keys(_state_dict(checkpoint, source), model_has_bert=True)
    backbone = {}
    for key, value in state.items():
        if key.startswith(PRETRAIN_HEAD_PREFIXES) or key.startswith(("itm_output.", "rank_output.")):
            continue
        for prefix in ("uniter.", "bert.", "img_model.bert."):
            if key.startswith(prefix):
                backbone["bert." + key[len(prefix):]] = value
                break
    if not backbone:
        fail(f"{source}: expected UNITER weights (keys 'uniter.*' or 'bert.*'), found none of them "
             f"(first keys: {sorted(state)[:3]})")
    report = load_state_dict_mapped(model.img_model, backbone, strict=False, source=source)
    if report.mismatched:
        raise UserError(f"{source}: does not match the image tower: {report.summary()}")
    if report.unexpected:
        LOGGER.info("%s: not used by the image tower: %s", source, report.unexpected)
    missing = [k for k in report.missing if not k.startswith("encode_proj.")]
    if missing:
        fail(f"{source}: expected every UNITER backbone weight, missing {missing[:5]} ({len(missing)} in all)")
    return report.missing


def load_txt_pretrained(model: BiEncoder, txt_model_config: str | os.PathLike) -> None:
    """The text tower's BERT from the pretrained weights in its directory (``from_pretrained``)."""
    from itr_common.text import load_bert_model

    path = Path(txt_model_config)
    if not path.is_dir():
        LOGGER.info("txt_model_config %s is a file: the text tower keeps its random initialisation", path)
        return
    pretrained = load_bert_model(path)
    load_state_dict_mapped(model.txt_model.bert, pretrained.state_dict(), strict=True, source=str(path))


def load_txt_checkpoint(model: BiEncoder, path: str | os.PathLike) -> None:
    """``txt_checkpoint``: a BertEncoder state dict (``bert.*`` + optional ``encode_proj.*``), bare BERT keys or a
    Google-converted BERT (``gamma``/``beta``, ``cls.*`` heads, e.g. ``bert-base-cased.pt``)."""
    from itr_common.text import from_google_key_names

    source = str(path)
    state = _drop_buffers(_state_dict(load_checkpoint(path), source), source)
    proj = {k: v for k, v in state.items() if k.startswith("encode_proj.")}
    bert, set_aside = from_google_key_names({k: v for k, v in state.items() if not k.startswith("encode_proj.")})
    if set_aside:
        LOGGER.info("%s: skipped %d keys (pre-training heads, buffers)", source, len(set_aside))
    state = {**{"bert." + k: v for k, v in bert.items()}, **proj}
    report = load_state_dict_mapped(model.txt_model, state, strict=False, source=source)
    if report.mismatched:
        raise UserError(f"{source}: does not match the text tower: {report.summary()}")
    if not report.loaded:
        fail(f"{source}: expected text-tower weights (BERT keys), none matched")
    LOGGER.info("%s: text tower keys not in the checkpoint: %s", source, report.missing)


def biencoder_state_from(obj: Any, source: str) -> tuple[dict[str, Tensor], str]:
    """The BiEncoder state dict inside a CheckpointState or a pre-training checkpoint, and which it was."""
    if isinstance(obj, Mapping) and "model_dict" in obj:
        return _drop_buffers(_state_dict(obj["model_dict"], source), source), "CheckpointState"
    state = _state_dict(obj, source)
    if not any(k.startswith("bert.") for k in state):
        fail(f"{source}: expected a CheckpointState ('model_dict') or a LightningDot.pt state dict ('bert.*' keys), "
             f"found keys {sorted(state)[:3]}")
    heads = sorted({k.split(".", 1)[0] for k in state if not k.startswith("bert.")})
    if heads:
        LOGGER.info("%s: dropping pre-training heads %s", source, heads)
    unknown = [h for h in heads if not (h + ".").startswith(PRETRAIN_HEADS)]
    if unknown:
        fail(f"{source}: unexpected top-level keys {unknown} (expected bert.* and the heads "
             f"{', '.join(p.rstrip('.') for p in PRETRAIN_HEADS)})")
    return _drop_buffers({k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}, source), \
        "pre-training (LightningDot.pt)"


def load_biencoder_checkpoint(model: BiEncoder, path: str | os.PathLike, checkpoint: Any = None) -> str:
    """Load ``biencoder_checkpoint`` strictly; returns the layout found. ``checkpoint``: what ``path`` holds, when
    the caller has read it already (default: read here)."""
    source = str(path)
    state, layout = biencoder_state_from(load_checkpoint(path) if checkpoint is None else checkpoint, source)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    tower_hint = _tower_hint(model, state)
    try:
        load_state_dict_mapped(model, state, strict=True, source=source)
    except UserError as err:
        raise UserError(f"{err}{tower_hint}") from None
    LOGGER.info("%s: loaded the bi-encoder (%s layout)", source, layout)
    return layout


def _tower_hint(model: nn.Module, state: Mapping[str, Tensor]) -> str:
    """A hint when a checkpoint holds only one tower or a different projection."""
    towers = {k.split(".", 1)[0] for k in state}
    if towers and not {"img_model", "txt_model"} <= towers:
        return f" (the checkpoint holds only {sorted(towers)}: not a full bi-encoder)"
    has_proj = any(".encode_proj." in f".{k}" for k in state)
    wants_proj = any(".encode_proj." in f".{k}" for k in model.state_dict())
    if has_proj != wants_proj:
        return f" (project_dim: the checkpoint was trained {'with' if has_proj else 'without'} a projection)"
    return ""


def checkpoint_state(model: nn.Module, optimizer: Any, scheduler: Any, epoch: int, offset: int = 0,
                     encoder_params: Any = None) -> dict[str, Any]:
    """The original ``CheckpointState._asdict()``."""
    return {
        "model_dict": model.state_dict(),
        "optimizer_dict": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_dict": scheduler.state_dict() if scheduler is not None else None,
        "offset": int(offset),
        "epoch": int(epoch),
        "encoder_params": encoder_params,
    }


def save_checkpoint(output_dir: str | os.PathLike, model: nn.Module, optimizer: Any, scheduler: Any, epoch: int,
                    offset: int = 0, cp_name: str | None = None) -> Path:
    """``biencoder.{cp_name}.pt`` or ``biencoder.{epoch}[.{offset}].pt`` (the original ``_save_checkpoint``)."""
    name = f"biencoder.{cp_name}" if cp_name else f"biencoder.{epoch}" + (f".{offset}" if offset > 0 else "")
    path = Path(output_dir) / f"{name}.pt"
    save_atomic(checkpoint_state(model, optimizer, scheduler, epoch, offset), path)
    LOGGER.info("Saved checkpoint at %s", path)
    return path


def released_state_dict(model: BiEncoder, heads: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The ``LightningDot.pt`` layout: the BiEncoder under ``bert.`` plus pre-training heads."""
    out = {"bert." + k: v for k, v in model.state_dict().items()}
    out.update(heads or {})
    return out

