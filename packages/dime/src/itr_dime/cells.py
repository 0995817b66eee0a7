"""The four DIME cells, each with its dynamic router (LgQu/DIME ``models/Cells.py``).

Every cell maps local features ``x`` (a, b, L, d) in the pair layout of :mod:`itr_dime.pairs` to
``(embedding, path_prob)``: the refined locals (broadcast shape (a', b', L, d)) and the router's
gates (a, b, num_out_path), computed from the cell's own input.
"""

from __future__ import annotations

from argparse import Namespace

import torch
import torch.nn.functional as F
from torch import nn

from itr_dime.attention import SelfAttention
from itr_dime.pairs import PairContext
from itr_dime.refinement import Refinement
from itr_dime.router import Router


def global_local_guidance(local: torch.Tensor, local_mid: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """``local * (1 + normalize(local_mid * guide, dim=-2))``: the GLGC formula.

    ``local_mid = fc_1(local)`` (a, b, L, d); ``guide`` the other modality's global embedding, broadcast
    as (a', b', 1, d). The L2 normalisation runs over the L local features, per channel.
    """
    x = F.normalize(local_mid * guide, dim=-2)
    return (1 + x) * local


class RectifiedIdentityCell(nn.Module):
    """ReLU(x): keeps the input (rectified)."""

    def __init__(self, opt: Namespace, num_out_path: int) -> None:
        super().__init__()
        self.keep_mapping = nn.ReLU()
        self.router = Router(num_out_path, opt.embed_size, opt.hid_router)

    def forward(self, x: torch.Tensor, ctx: PairContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keep_mapping(x), self.router(x)


class IntraModelReasoningCell(nn.Module):
    """Self-attention (``num_head_IMRC`` heads) + FFN (``hid_IMRC``) over the locals of one item."""

    def __init__(self, opt: Namespace, num_out_path: int) -> None:
        super().__init__()
        self.router = Router(num_out_path, opt.embed_size, opt.hid_router)
        self.sa = SelfAttention(opt.embed_size, opt.hid_IMRC, opt.num_head_IMRC)

    def forward(self, x: torch.Tensor, ctx: PairContext) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, length, d = x.shape
        emb = self.sa(x.reshape(a * b, length, d)).view(a, b, length, -1)
        return emb, self.router(x)


class GlobalLocalGuidanceCell(nn.Module):
    """Locals gated by the other modality's global embedding (sentence for i2t, image for t2i).

    ``fc_2`` exists in the original (and its checkpoints) but is never used.
    """

    def __init__(self, opt: Namespace, num_out_path: int) -> None:
        super().__init__()
        self.direction = opt.direction
        self.router = Router(num_out_path, opt.embed_size, opt.hid_router)
        self.fc_1 = nn.Linear(opt.embed_size, opt.embed_size)
        self.fc_2 = nn.Linear(opt.embed_size, opt.embed_size)

    def forward(self, x: torch.Tensor, ctx: PairContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self.direction == "i2t":
            guide = ctx.stc[None, :, None, :]  # (1, n_stc, 1, d)
        else:
            guide = ctx.img[:, None, None, :]  # (n_img, 1, 1, d)
        return global_local_guidance(x, self.fc_1(x), guide), self.router(x)


class CrossModalRefinementCell(nn.Module):
    """:class:`~itr_dime.refinement.Refinement` of the locals by the other modality's locals."""

    def __init__(self, opt: Namespace, num_out_path: int) -> None:
        super().__init__()
        self.direction = opt.direction
        self.refine = Refinement(opt.embed_size, opt.raw_feature_norm_CMRC, opt.lambda_softmax_CMRC, opt.direction)
        self.router = Router(num_out_path, opt.embed_size, opt.hid_router)

    def forward(self, x: torch.Tensor, ctx: PairContext) -> tuple[torch.Tensor, torch.Tensor]:
        return self.refine(x, ctx), self.router(x)


__all__ = [
    "CrossModalRefinementCell",
    "GlobalLocalGuidanceCell",
    "IntraModelReasoningCell",
    "RectifiedIdentityCell",
    "global_local_guidance",
]
