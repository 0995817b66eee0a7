"""Region encoder of DIME for precomputed bottom-up features (LgQu/DIME ``models/VisNet.py``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EncoderImagePrecomp(nn.Module):
    """``fc`` (img_dim -> embed_size, Xavier-uniform, zero bias) over the regions.

    Forward: images (B, R, img_dim) -> ``(img_emb (B, d), rgn_emb (B, R, d))``. ``rgn_emb`` is the
    L2-normalised fc output; ``img_emb`` the mean of the (unnormalised) fc outputs, passed through
    ``bn`` for the t2i model only, then L2-normalised (unless ``no_imgnorm``; ``use_abs`` takes |.|).
    ``bn`` exists for both directions, as in the original's checkpoints.
    """

    def __init__(
        self, img_dim: int, embed_size: int, direction: str, use_abs: bool = False, no_imgnorm: bool = False
    ) -> None:
        super().__init__()
        self.embed_size = embed_size
        self.direction = direction
        self.use_abs = use_abs
        self.no_imgnorm = no_imgnorm
        self.fc = nn.Linear(img_dim, embed_size)
        self.init_weights()
        self.bn = nn.BatchNorm1d(embed_size)

    def init_weights(self) -> None:
        """Xavier-uniform fc weights r = sqrt(6 / (in + out)), zero bias."""
        r = math.sqrt(6.0) / math.sqrt(self.fc.in_features + self.fc.out_features)
        nn.init.uniform_(self.fc.weight, -r, r)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgn_emb = self.fc(images)
        img_emb = rgn_emb.mean(dim=1)
        if self.direction == "t2i":
            img_emb = self.bn(img_emb)
        if not self.no_imgnorm:
            img_emb = F.normalize(img_emb, dim=-1)
        if self.use_abs:
            img_emb = img_emb.abs()
        return img_emb, F.normalize(rgn_emb, dim=-1)


__all__ = ["EncoderImagePrecomp"]
