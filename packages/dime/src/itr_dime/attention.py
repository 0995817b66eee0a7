"""Attention blocks of DIME: the SCAN cross-attention and the Transformer-style self-attention.

Both work on any number of leading (broadcast) batch dimensions, so one call covers a whole block of
image x caption pairs instead of the original's loop over captions (LgQu/DIME ``models/Refinement.py``
``func_attention`` and ``models/SelfAttention.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from itr_common.errors import fail

RAW_FEATURE_NORMS = ("clipped_l2norm", "l2norm", "clipped_l1norm", "l1norm", "clipped", "no_norm", "softmax")
"""Values of ``--raw_feature_norm_CMRC``."""

_EPS = 1e-8


def clipped_l2norm(attn: torch.Tensor, dim: int) -> torch.Tensor:
    """LeakyReLU(0.1) then L2 normalisation along ``dim`` (``F.normalize``, eps 1e-12), as SCAN/DIME."""
    return F.normalize(F.leaky_relu(attn, 0.1), dim=dim)


def normalize_raw_attention(attn: torch.Tensor, raw_feature_norm: str, dim: int) -> torch.Tensor:
    """The first normalisation of SCAN attention, over the *query* axis ``dim``.

    ``l2norm`` and ``l1norm`` divide by the norm plus 1e-8; ``softmax`` is a softmax over ``dim``.
    """
    if raw_feature_norm == "clipped_l2norm":
        return clipped_l2norm(attn, dim)
    if raw_feature_norm == "l2norm":
        return attn / (attn.pow(2).sum(dim=dim, keepdim=True).sqrt() + _EPS)
    if raw_feature_norm == "clipped_l1norm":
        attn = F.leaky_relu(attn, 0.1)
        return attn / (attn.abs().sum(dim=dim, keepdim=True) + _EPS)
    if raw_feature_norm == "l1norm":
        return attn / (attn.abs().sum(dim=dim, keepdim=True) + _EPS)
    if raw_feature_norm == "clipped":
        return F.leaky_relu(attn, 0.1)
    if raw_feature_norm == "no_norm":
        return attn
    if raw_feature_norm == "softmax":
        return F.softmax(attn, dim=dim)
    fail(f"--raw_feature_norm_CMRC: expected one of {', '.join(RAW_FEATURE_NORMS)}, found '{raw_feature_norm}'")


def cross_attention(
    query: torch.Tensor,
    context: torch.Tensor,
    raw_feature_norm: str,
    smooth: float,
    context_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SCAN attention: every query element attends over the context elements.

    Args:
        query: (..., Lq, d); context: (..., Lc, d); leading dims broadcast against each other.
        raw_feature_norm: normalisation of the raw scores over the query axis (``clipped_l2norm``).
        smooth: inverse temperature lambda of the softmax over the context axis.
        context_mask: bool (..., Lc), True for context elements that may be attended (broadcast);
            the original truncates each caption to its length instead, which is the same softmax.

    Returns:
        weighted context (..., Lq, d) and the attention weights (..., Lq, Lc).
    """
    attn = torch.matmul(query, context.transpose(-1, -2))  # (..., Lq, Lc)
    attn = normalize_raw_attention(attn, raw_feature_norm, dim=-2)
    logits = attn * smooth
    if context_mask is not None:
        logits = logits.masked_fill(~context_mask.unsqueeze(-2), float("-inf"))
    weights = F.softmax(logits, dim=-1)
    return torch.matmul(weights, context), weights


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention with ``h`` heads, no output projection (``AttentionLayer``).

    ``linears`` are the query, key and value projections (d -> d). Input and output (N, L, d).
    """

    def __init__(self, embed_size: int, h: int, drop: float = 0.0) -> None:
        super().__init__()
        if embed_size % h:
            fail(f"--num_head_IMRC: expected a divisor of --embed_size {embed_size}, found {h}")
        self.h = h
        self.d_k = embed_size // h
        self.linears = nn.ModuleList([nn.Linear(embed_size, embed_size) for _ in range(3)])
        self.dropout = nn.Dropout(drop) if drop > 0 else None

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        n, length, _ = inp.shape
        q, k, v = (lin(inp).view(n, length, self.h, self.d_k).transpose(1, 2) for lin in self.linears)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)  # (N, h, L, L)
        p_attn = F.softmax(scores, dim=-1)
        if self.dropout is not None:
            p_attn = self.dropout(p_attn)
        x = torch.matmul(p_attn, v)  # (N, h, L, d_k)
        return x.transpose(1, 2).reshape(n, length, self.h * self.d_k)


class FeedForward(nn.Module):
    """fc2(dropout(ReLU(fc1(x)))): d -> hidden -> d."""

    def __init__(self, embed_size: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_size, hidden)
        self.fc2 = nn.Linear(hidden, embed_size)
        self.dropout = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class SelfAttention(nn.Module):
    """Self-attention then feed-forward, each with a residual, no LayerNorm, no padding mask.

    ``att_layer`` (:class:`MultiHeadSelfAttention`), ``feed_forward_layer`` (:class:`FeedForward`).
    Input and output (N, L, d).
    """

    def __init__(self, embed_size: int, hid_size: int, h: int, drop: float = 0.0) -> None:
        super().__init__()
        self.att_layer = MultiHeadSelfAttention(embed_size, h, drop=drop)
        self.feed_forward_layer = FeedForward(embed_size, hid_size, drop=drop)
        self.dropout = nn.Dropout(drop)

    def forward(self, local_emb: torch.Tensor) -> torch.Tensor:
        x = local_emb + self.dropout(self.att_layer(local_emb))
        return x + self.dropout(self.feed_forward_layer(x))


__all__ = [
    "RAW_FEATURE_NORMS",
    "FeedForward",
    "MultiHeadSelfAttention",
    "SelfAttention",
    "clipped_l2norm",
    "cross_attention",
    "normalize_raw_attention",
]
