"""Cross-Modal Refinement: SCAN attention over the other modality, then a gated residual update.

(LgQu/DIME ``models/Refinement.py``.) For pair (i, j):

- i2t: each region of image i attends over the words of caption j (its first ``stc_lens[j]`` tokens);
- t2i: each of the ``max_words`` word positions of caption j (padding included) attends over the regions
  of image i;

then ``q + fc_2(ReLU(fc_1(q * tanh(fc_scale(c)) + fc_shift(c))))`` with ``c`` the attended context.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from itr_dime.attention import cross_attention
from itr_dime.pairs import PairContext


class Refinement(nn.Module):
    """Attend, then modulate the query by the context. Input (a, b, L, d), output (n_img, n_stc, L, d)."""

    def __init__(self, embed_size: int, raw_feature_norm: str, lambda_softmax: float, direction: str) -> None:
        super().__init__()
        self.raw_feature_norm = raw_feature_norm
        self.lambda_softmax = lambda_softmax
        self.direction = direction
        self.fc_scale = nn.Linear(embed_size, embed_size)
        self.fc_shift = nn.Linear(embed_size, embed_size)
        self.fc_1 = nn.Linear(embed_size, embed_size)
        self.fc_2 = nn.Linear(embed_size, embed_size)

    def refine(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``query + fc_2(ReLU(fc_1(query * tanh(fc_scale(context)) + fc_shift(context))))`` (shapes broadcast)."""
        scaling = torch.tanh(self.fc_scale(context))
        shifting = self.fc_shift(context)
        return query + self.fc_2(F.relu(self.fc_1(query * scaling + shifting)))

    def forward(self, local: torch.Tensor, ctx: PairContext) -> torch.Tensor:
        if self.direction == "i2t":
            # regions (a, b, R, d) attend over caption j's words (1, n_stc, W, d)
            context, mask = ctx.wrd.unsqueeze(0), ctx.word_mask()
        else:
            # words (a, b, W, d) attend over image i's regions (n_img, 1, R, d)
            context, mask = ctx.rgn.unsqueeze(1), None
        attended, _ = cross_attention(local, context, self.raw_feature_norm, self.lambda_softmax, mask)
        return self.refine(local, attended)


__all__ = ["Refinement"]
