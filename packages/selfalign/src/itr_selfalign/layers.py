"""Blocks of the two bases, with the originals' module and parameter names.

CAMERA (LgQu/CAMERA ``models/``): :class:`AGSA` (adaptive gating self-attention), :class:`PositionEncoder`
(absolute box geometry -> sigmoid gate), :class:`Summarization` (dilated multi-view summarisation),
:func:`multi_view_scores` (``MultiViewMatching``: max over views). VSRN (KunpengLi1994/VSRN
``GCN_lib/Rs_GCN.py``): :class:`RsGCN`. Shared: the originals' :func:`l2norm` and Xavier :func:`init_fc`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def l2norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The originals' ``l2norm``: ``x / sqrt(sum(x**2, dim))`` with **dim 1 by default**.

    On a (B, N, D) tensor dim 1 is the region/word axis, not the features: CAMERA+SelfAlign's text
    tokens and VSRN's regions are normalised this way in the original code, and so here (no epsilon).
    """
    return x / x.pow(2).sum(dim=dim, keepdim=True).sqrt()


def init_fc(fc: nn.Linear) -> nn.Linear:
    """Xavier-uniform weights ``U(-r, r)``, ``r = sqrt(6 / (in + out))``, zero bias (the originals' init_weights)."""
    r = math.sqrt(6.0) / math.sqrt(fc.in_features + fc.out_features)
    with torch.no_grad():
        fc.weight.uniform_(-r, r)
        if fc.bias is not None:
            fc.bias.fill_(0)
    return fc


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class GatedQueryAttLayer(nn.Module):
    """One AGSA attention layer: h heads of d_k = d/h; query and key gated by
    ``M = sigmoid(fc_g(fc_q(Q) * fc_k(K)))`` (first d_k channels gate Q, last d_k gate K)."""

    def __init__(self, embed_size: int, h: int, is_share: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        self.h, self.embed_size, self.d_k, self.drop_p = h, embed_size, embed_size // h, drop
        if is_share:
            self.linear = nn.Linear(embed_size, embed_size)
            self._shared = True
        else:
            self.linears = clones(nn.Linear(embed_size, embed_size), 3)
            self._shared = False
        if drop > 0:
            self.dropout = nn.Dropout(drop)
        self.fc_q = nn.Linear(self.d_k, self.d_k)
        self.fc_k = nn.Linear(self.d_k, self.d_k)
        self.fc_g = nn.Linear(self.d_k, self.d_k * 2)

    def forward(self, inp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """inp (B, N, d) -> (B, N, d)."""
        b = inp.size(0)
        linears = [self.linear] * 3 if self._shared else list(self.linears)
        query, key, value = (lin(inp).view(b, -1, self.h, self.d_k).transpose(1, 2) for lin in linears)
        gate = torch.sigmoid(self.fc_g(self.fc_q(query) * self.fc_k(key)))  # (B, h, N, 2 d_k)
        query = query * gate[..., : self.d_k]
        key = key * gate[..., self.d_k :]
        scores = query @ key.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        p_attn = F.softmax(scores, dim=-1)
        if self.drop_p > 0:
            p_attn = self.dropout(p_attn)
        x = p_attn @ value
        return x.transpose(1, 2).contiguous().view(b, -1, self.h * self.d_k)


class AGSA(nn.Module):
    """Adaptive Gating Self-Attention: ``x = rgn * pos`` (when given), then per layer
    ``emb = emb + dropout(BN(att(x)))`` (BatchNorm1d over all B*N positions)."""

    def __init__(self, num_layers: int, embed_size: int, h: int = 1, is_share: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.bns = clones(nn.BatchNorm1d(embed_size), num_layers)
        self.dropout = clones(nn.Dropout(drop), num_layers)
        self.att_layers = clones(GatedQueryAttLayer(embed_size, h, is_share, drop=drop), num_layers)

    def forward(self, rgn_emb: torch.Tensor, pos_emb: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """rgn_emb (B, N, d), pos_emb (B, N, d) or None -> (B, N, d)."""
        b, n, _ = rgn_emb.shape
        x = rgn_emb if pos_emb is None else rgn_emb * pos_emb
        x = self.att_layers[0](x, mask)
        emb = rgn_emb + self.dropout[0](self.bns[0](x.reshape(b * n, -1)).view(b, n, -1))
        for i in range(1, self.num_layers):
            x = self.att_layers[i](emb, mask)
            emb = emb + self.dropout[i](self.bns[i](x.reshape(b * n, -1)).view(b, n, -1))
        return emb


def absolute_encode(boxes: torch.Tensor, imgs_wh: torch.Tensor) -> torch.Tensor:
    """boxes (B, N, 4) x1,y1,x2,y2 px, imgs_wh (B, 2) -> (B, N, 6) ``[x/W, y/H, w/W, h/H, w/h, wh/(WH)]``."""
    x, y = boxes[..., 0], boxes[..., 1]
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    expand_wh = torch.cat([imgs_wh, imgs_wh], dim=1).unsqueeze(1)  # (B, 1, 4)
    ratio_wh = (w / h).unsqueeze(-1)
    ratio_area = ((w * h) / (imgs_wh[:, 0] * imgs_wh[:, 1]).unsqueeze(-1)).unsqueeze(-1)
    geometry = torch.stack([x, y, w, h], dim=2) / expand_wh
    return torch.cat([geometry, ratio_wh, ratio_area], dim=-1)


class PositionEncoder(nn.Module):
    """``sigmoid(proj(absolute_encode(boxes, sizes)))``: (B, N, d) gates for the regions."""

    def __init__(self, embed_dim: int, posi_dim: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(posi_dim, embed_dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, boxes: torch.Tensor, imgs_wh: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.proj(absolute_encode(boxes, imgs_wh)))


SUMMARY_CHANNELS = (256, 128, 128, 128, 128, 128, 128)
SUMMARY_KERNELS = (1, 3, 3, 3, 5, 5, 5)
SUMMARY_DILATIONS = (1, 1, 2, 3, 1, 2, 3)
SUMMARY_PADDINGS = (0, 1, 2, 3, 2, 4, 6)


class Summarization(nn.Module):
    """Multi-view summarisation: 7 dilated Conv1d over the regions (ReLU, 1024 channels together)
    -> ``convs_fc`` Linear(1024, k): the (B, N, k) summary logits."""

    def __init__(self, embed_size: int, smry_k: int) -> None:
        super().__init__()
        self.convs_dilate = nn.ModuleList([
            nn.Conv1d(embed_size, c, k, dilation=d, padding=p)
            for c, k, d, p in zip(SUMMARY_CHANNELS, SUMMARY_KERNELS, SUMMARY_DILATIONS, SUMMARY_PADDINGS, strict=True)
        ])
        self.convs_fc = nn.Linear(sum(SUMMARY_CHANNELS), smry_k)

    def forward(self, rgn_emb: torch.Tensor) -> torch.Tensor:
        x = rgn_emb.transpose(1, 2)
        x = torch.cat([F.relu(conv(x)) for conv in self.convs_dilate], dim=1)
        return self.convs_fc(x.transpose(1, 2))


def multi_view_scores(imgs: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """``MultiViewMatching``: imgs (n, V, d), caps (m, d) -> (n, m) max over the V views of the dot product.

    One matrix product: (n*V, d) @ (d, m), then the max over views.
    """
    n, v, d = imgs.shape
    return (imgs.reshape(n * v, d) @ caps.t()).view(n, v, -1).amax(dim=1)


class RsGCN(nn.Module):
    """VSRN's Rs_GCN on (B, D, N): ``R = theta(v)^T phi(v) / N``; ``v + W(R g(v))`` with
    ``W = Conv1d + BatchNorm1d`` whose BN starts at zero (each block is the identity at init)."""

    def __init__(self, in_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.in_channels, self.inter_channels = in_channels, inter_channels
        self.g = nn.Conv1d(in_channels, inter_channels, kernel_size=1)
        self.W = nn.Sequential(nn.Conv1d(inter_channels, in_channels, kernel_size=1), nn.BatchNorm1d(in_channels))
        nn.init.constant_(self.W[1].weight, 0)
        nn.init.constant_(self.W[1].bias, 0)
        self.theta = nn.Conv1d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv1d(in_channels, inter_channels, kernel_size=1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        g_v = self.g(v).permute(0, 2, 1)  # (B, N, C)
        theta_v = self.theta(v).permute(0, 2, 1)  # (B, N, C)
        phi_v = self.phi(v)  # (B, C, N)
        r = theta_v @ phi_v
        y = (r / r.size(-1)) @ g_v  # (B, N, C)
        return self.W(y.permute(0, 2, 1).contiguous()) + v


__all__ = ["AGSA", "GatedQueryAttLayer", "PositionEncoder", "RsGCN", "Summarization", "absolute_encode", "clones",
           "init_fc", "l2norm", "multi_view_scores"]
