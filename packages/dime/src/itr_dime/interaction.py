"""DIME's interaction module: three routing layers, the scoring heads and the path embedding.

(LgQu/DIME ``models/InteractionModule.py``.) Submodule names follow the original so that its
checkpoints load by key: ``dynamic_itr_l0``, ``dynamic_itr_l1``, ``dynamic_itr_l2``, ``path_mapping``, ``bn``.
"""

from __future__ import annotations

from argparse import Namespace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from itr_dime.pairs import PairContext, as_pairs
from itr_dime.routing import NUM_CELLS, DynamicInteractionLayer

NUM_ROUTING_LAYERS = 3
PATH_HID = 128


class InteractionOutput(NamedTuple):
    """``scores`` (n_img, n_stc); ``paths`` (n, 36) the averaged gates of every path: per image for i2t
    (averaged over captions), per caption for t2i (averaged over images)."""

    scores: torch.Tensor
    paths: torch.Tensor


def pool_and_score(refined: torch.Tensor, bn: nn.BatchNorm1d, other: torch.Tensor) -> torch.Tensor:
    """The scoring head shared by both directions.

    ``refined`` (n_img, n_stc, L, d) refined locals of every pair; BatchNorm1d over all of them; mean + max
    over the L locals; L2 normalisation; dot product with ``other``, the other modality's global embedding
    broadcast as (1, n_stc, d) (sentences, i2t) or (n_img, 1, d) (images, t2i). Returns (n_img, n_stc).
    """
    n_img, n_stc, length, d = refined.shape
    x = bn(refined.reshape(-1, d)).view(n_img, n_stc, length, d)
    pooled = F.normalize(x.mean(2) + x.amax(2), dim=-1)
    return (pooled * other).sum(-1)


def path_embedding_similarity(paths: torch.Tensor, path_mapping: nn.Linear) -> torch.Tensor:
    """Gram matrix of the L2-normalised ``path_mapping(paths)``: (n, 36) -> (n, n)."""
    emb = F.normalize(path_mapping(paths), dim=-1)
    return emb @ emb.t()


class InteractionModule(nn.Module):
    """Routing layers 0 and 1 (four output paths each) and 2 (one), then the direction's scoring head.

    ``forward(ctx)`` returns :class:`InteractionOutput`; ``path_similarity(paths)`` the (n, n) Gram matrix
    used by the path regularisation. Total paths: 4*4 + 4*4 + 4 = 36, mapped by ``path_mapping`` to 128.
    """

    def __init__(self, opt: Namespace, num_layer_routing: int = NUM_ROUTING_LAYERS, path_hid: int = PATH_HID) -> None:
        super().__init__()
        self.direction = opt.direction
        self.num_cells = NUM_CELLS
        self.dynamic_itr_l0 = DynamicInteractionLayer(opt, NUM_CELLS, NUM_CELLS, first=True)
        self.dynamic_itr_l1 = DynamicInteractionLayer(opt, NUM_CELLS, NUM_CELLS)
        self.dynamic_itr_l2 = DynamicInteractionLayer(opt, NUM_CELLS, 1)
        total_paths = NUM_CELLS**2 * (num_layer_routing - 1) + NUM_CELLS
        self.path_mapping = nn.Linear(total_paths, path_hid)
        self.bn = nn.BatchNorm1d(opt.embed_size)

    def forward(self, ctx: PairContext) -> InteractionOutput:
        paths_l0_out, gates_l0 = self.dynamic_itr_l0(ctx.local_input(), ctx)
        paths_l1_out, gates_l1 = self.dynamic_itr_l1(paths_l0_out, ctx)
        (refined,), gates_l2 = self.dynamic_itr_l2(paths_l1_out, ctx)

        n_img, n_stc = ctx.n_img, ctx.n_stc
        refined = as_pairs(refined, n_img, n_stc)
        if self.direction == "i2t":
            scores = pool_and_score(refined, self.bn, ctx.stc.unsqueeze(0))
        else:
            scores = pool_and_score(refined, self.bn, ctx.img.unsqueeze(1))

        gates = [as_pairs(g, n_img, n_stc).reshape(n_img, n_stc, -1) for g in (gates_l0, gates_l1, gates_l2)]
        paths = torch.cat(gates, dim=-1)  # (n_img, n_stc, 36), per layer in (out path, cell) order
        paths = paths.mean(dim=1) if self.direction == "i2t" else paths.mean(dim=0)
        return InteractionOutput(scores, paths)

    def path_similarity(self, paths: torch.Tensor) -> torch.Tensor:
        """(n, 36) averaged gates -> (n, n) cosine similarities of their 128-d path embeddings."""
        return path_embedding_similarity(paths, self.path_mapping)


__all__ = ["InteractionModule", "InteractionOutput", "path_embedding_similarity", "pool_and_score"]
