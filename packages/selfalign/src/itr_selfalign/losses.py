"""The training objectives of both variants, as pure functions on the encoders' outputs.

CAMERA: ``triplet(max over views) + smry_lamda * diversity`` (+ SelfAlign: ``+ L_concept + ctx_loss``).
VSRN: ``triplet(dot product) + caption`` (+ SelfAlign: ``+ L_concept + ctx_loss``).
The triplet is the VSE++ loss summed over the batch (:func:`itr_common.losses.contrastive_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from itr_common.losses import contrastive_loss
from itr_selfalign.alignment import NEGATIVES, ConceptAlignment, context_loss
from itr_selfalign.camera import CameraImage, CameraText, camera_caption_embedding, camera_image_embedding
from itr_selfalign.layers import multi_view_scores
from itr_selfalign.vsrn import VsrnImage, VsrnText, vsrn_caption_embedding, vsrn_image_embedding


def diversity_regularization(smry: torch.Tensor) -> torch.Tensor:
    """CAMERA's ``DiversityRegularization``: smry (B, R, k) normalised over the regions, ``sum ||L^T L - I||^2``
    over the batch (not averaged)."""
    mat = F.normalize(smry, dim=1)
    gram = mat.transpose(1, 2) @ mat
    eye = torch.eye(smry.shape[2], device=smry.device, dtype=gram.dtype)
    return (gram - eye).pow(2).sum()


@dataclass
class Losses:
    """The terms of one step (0-d tensors); ``total`` is what is back-propagated."""

    total: torch.Tensor
    rank: torch.Tensor
    div: torch.Tensor | None = None
    caption: torch.Tensor | None = None
    concept: torch.Tensor | None = None
    context: torch.Tensor | None = None

    def items(self) -> dict[str, float]:
        names = {"rank": "Rank", "div": "Div", "caption": "Le_caption", "concept": "Local", "context": "ctx_loss"}
        out = {label: float(value.detach()) for key, label in names.items()
               if (value := getattr(self, key)) is not None}
        out["Le"] = float(self.total.detach())
        return out


def selfalign_terms(region_loss: ConceptAlignment, img_concepts: torch.Tensor, cap_concepts: torch.Tensor,
                    lengths: torch.Tensor, img_ctx, cap_ctx, v5_tao: float, v6_tao: float,
                    neg_num: int | None = NEGATIVES) -> tuple[torch.Tensor, torch.Tensor]:
    """(concept loss, context loss) of one batch."""
    concept = region_loss(img_concepts, cap_concepts, lengths)
    ctx = context_loss(img_ctx.attended, img_ctx.locals, cap_ctx.attended, cap_ctx.locals, v5_tao, v6_tao, neg_num)
    return concept, ctx


def _hardest(opt, max_violation: bool | None) -> bool:
    return bool(opt.max_violation) if max_violation is None else max_violation


def camera_losses(img: CameraImage, cap: CameraText, lengths: torch.Tensor, opt,
                  region_loss: ConceptAlignment | None = None, max_violation: bool | None = None) -> Losses:
    """The CAMERA(+SelfAlign) objective of one batch (``opt``: margin, max_violation, smry_lamda, v5_tao, v6_tao);
    ``max_violation`` (the trainer's choice for the epoch) overrides ``opt.max_violation``."""
    scores = multi_view_scores(camera_image_embedding(img).float(), camera_caption_embedding(cap).float())
    rank = contrastive_loss(scores, opt.margin, _hardest(opt, max_violation))
    div = diversity_regularization(img.smry.float())
    total = rank + div * opt.smry_lamda
    if region_loss is None:
        return Losses(total, rank, div=div)
    concept, ctx = selfalign_terms(region_loss, img.concepts.float(), cap.concepts.float(), lengths, img.context,
                                   cap.context, opt.v5_tao, opt.v6_tao)
    return Losses(total + concept + ctx, rank, div=div, concept=concept, context=ctx)


def vsrn_losses(img: VsrnImage, cap: VsrnText, lengths: torch.Tensor, caption: torch.Tensor, opt,
                region_loss: ConceptAlignment | None = None, max_violation: bool | None = None) -> Losses:
    """The VSRN(+SelfAlign) objective of one batch; ``caption`` is the caption-generation loss, ``max_violation``
    as in :func:`camera_losses`."""
    scores = vsrn_image_embedding(img).squeeze(1).float() @ vsrn_caption_embedding(cap).float().t()
    rank = contrastive_loss(scores, opt.margin, _hardest(opt, max_violation))
    total = rank + caption
    if region_loss is None:
        return Losses(total, rank, caption=caption)
    concept, ctx = selfalign_terms(region_loss, img.concepts.float(), cap.concepts.float(), lengths, img.context,
                                   cap.context, opt.v5_tao, opt.v6_tao)
    return Losses(total + concept + ctx, rank, caption=caption, concept=concept, context=ctx)


__all__ = ["Losses", "camera_losses", "diversity_regularization", "selfalign_terms", "vsrn_losses"]
