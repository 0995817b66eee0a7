"""UNITER for ITM with hard negatives and the IAIS loss (lancopku/IAIS ``model/itm.py``).

Training one group (one text with ``negative_size + 1`` images, or one image with as many texts):

1. pass 1, ``eval`` mode without gradients: score every pair of the group;
2. keep the positive (row 0) and the ``hard_size`` highest-scoring negatives;
3. pass 2, ``train`` mode: score those ``hard_size + 1`` pairs, margin rank loss on sigmoid scores,
   and with IAIS the alignment loss of the positive pair from the last layer's attention logits
   (returned by the same forward pass, see ``itr_common.models.uniter``).

State-dict keys are the original's (``uniter.*``, ``itm_output.*``, ``rank_output.*``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from itr_common.models.uniter import IMG_DIM, UniterConfig, UniterForImageTextRetrieval, img_dim_of
from itr_iais.losses import iais_loss, margin_rank_loss

Batch = dict[str, Any]
SAMPLE_FROM = ("t", "i")


@dataclass
class HardNegOutput:
    """rank_loss (G, hard_size) per negative; iais (scalar) when asked; logs: the IAIS entries to log."""

    rank_loss: Tensor
    iais: Tensor | None = None
    logs: dict[str, Tensor] = field(default_factory=dict)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Tensors of ``batch`` moved to ``device`` (non-blocking); other values unchanged."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def expand_group(batch: Batch, sample_from: str) -> Batch:
    """Broadcast the shared side of a group: the text (from text) or the image (from image)."""
    batch = dict(batch)
    size = batch["attn_masks"].size(0)
    if sample_from == "t":
        if batch["input_ids"].size(0) == 1:
            batch["input_ids"] = batch["input_ids"].expand(size, -1)
    elif sample_from == "i":
        for key in ("img_feat", "img_pos_feat"):
            if batch[key].size(0) == 1:
                batch[key] = batch[key].expand(size, -1, -1)
    else:
        raise ValueError(f"sample_from must be one of {SAMPLE_FROM}, found '{sample_from}'")
    return batch


def select_hard(batch: Batch, scores: Tensor, hard_size: int, sample_from: str) -> Batch:
    """The positive (row 0) and the ``hard_size`` highest-scoring negatives of a scored group.

    scores (B, 1). From text, the joint sequence is cut to the longest kept pair; the compact
    layout's ``gather_index`` follows the selected rows in both directions.
    """
    hard = scores.squeeze(-1)[1:].topk(hard_size, sorted=False).indices + 1
    indices = torch.cat([hard.new_zeros(1), hard])
    out: Batch = {"sample_size": hard_size + 1}
    attn = batch["attn_masks"].index_select(0, indices)
    position_ids = batch["position_ids"]
    if position_ids.size(0) != 1:
        position_ids = position_ids[: hard_size + 1]
    gather_index = batch.get("gather_index")
    if gather_index is not None:
        gather_index = gather_index.index_select(0, indices)
    txt_mask, img_mask = batch.get("txt_attn_masks"), batch.get("img_attn_masks")
    if sample_from == "t":
        max_len = int(attn.sum(dim=1).max().item())  # one shared text: no padding inside
        max_i = max_len - batch["input_ids"].size(1)
        attn = attn[:, :max_len]
        out["img_feat"] = batch["img_feat"].index_select(0, indices)[:, :max_i]
        out["img_pos_feat"] = batch["img_pos_feat"].index_select(0, indices)[:, :max_i]
        out["input_ids"] = batch["input_ids"][: hard_size + 1]
        if gather_index is not None:
            gather_index = gather_index[:, :max_len]
        if txt_mask is not None:
            txt_mask, img_mask = txt_mask[:, :max_len], img_mask[:, :max_len]
    else:
        out["input_ids"] = batch["input_ids"].index_select(0, indices)
        out["img_feat"] = batch["img_feat"][: hard_size + 1]
        out["img_pos_feat"] = batch["img_pos_feat"][: hard_size + 1]
    out.update(position_ids=position_ids, attn_masks=attn)
    if gather_index is not None:
        out["gather_index"] = gather_index
    if txt_mask is not None:
        out["txt_attn_masks"], out["img_attn_masks"] = txt_mask, img_mask
    return out


def load_model_config(
    path: str | os.PathLike, state_dict: Mapping[str, Tensor] | None = None, feature_dim: int | None = None
) -> UniterConfig:
    """A ``uniter-*.json`` config; without an ``img_dim`` key the region size comes from the checkpoint's
    ``img_linear`` (else ``feature_dim``, else the original's constant 2048)."""
    values = json.loads(Path(path).read_text()) if Path(path).is_file() else None
    if values is None or not isinstance(values, dict) or "img_dim" in values:
        return UniterConfig.from_json_file(path)
    img_dim = (img_dim_of(state_dict) if state_dict is not None else None) or feature_dim or IMG_DIM
    return UniterConfig.from_json_file(path, img_dim=img_dim)


class UniterForImageTextRetrievalHardNeg(UniterForImageTextRetrieval):
    """UNITER ITM ranking model trained with hard negatives (+ IAIS); keys as the original."""

    def __init__(self, config: UniterConfig | dict | str, margin: float = 0.2, hard_size: int = 31) -> None:
        super().__init__(config)
        self.margin = margin
        self.hard_size = hard_size

    def score(self, batch: Batch) -> Tensor:
        """Rank logits (B, 1) of a batch (compact layout with ``gather_index`` or the IAIS layout)."""
        scores, _ = super().forward(
            batch["input_ids"],
            batch["position_ids"],
            batch["img_feat"],
            batch["img_pos_feat"],
            batch["attn_masks"],
            batch.get("gather_index"),
        )
        return scores

    def forward(self, batch: Batch, sample_from: str = "t", iais: str | None = None) -> HardNegOutput:
        """Hard-negative training step on one group; ``iais`` one of ``L-/V-singular|distributed`` or None."""
        batch = expand_group(batch, sample_from)
        was_training = self.training
        with torch.no_grad():
            self.eval()
            scores = self.score(batch)
            hard_batch = select_hard(batch, scores, self.hard_size, sample_from)
        self.train(was_training)
        return self.hard_loss(hard_batch, iais)

    def hard_loss(self, hard_batch: Batch, iais: str | None = None) -> HardNegOutput:
        """Margin rank loss (G, hard) of selected groups (positive first) and, with ``iais``, the IAIS loss."""
        sample_size = hard_batch["sample_size"]
        scores, encoded = super().forward(
            hard_batch["input_ids"],
            hard_batch["position_ids"],
            hard_batch["img_feat"],
            hard_batch["img_pos_feat"],
            hard_batch["attn_masks"],
            hard_batch.get("gather_index"),
            attention_logits_layers=(-1,) if iais else (),
        )
        rank_loss = margin_rank_loss(scores, sample_size, self.margin)
        if not iais:
            return HardNegOutput(rank_loss)
        last = self.config.num_hidden_layers - 1
        logits = encoded.attention_logits[last][::sample_size].float()  # ground-truth pairs only
        txt_mask, img_mask = hard_batch["txt_attn_masks"], hard_batch["img_attn_masks"]
        loss = iais_loss(logits, txt_mask, img_mask, iais)
        return HardNegOutput(rank_loss, loss, {f"self_attn_loss/layer_{last}": loss.detach(), "self_attn_loss": loss})
