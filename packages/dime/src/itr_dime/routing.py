"""DIME's routing layers: four cells whose outputs are mixed by their routers' gates.

(LgQu/DIME ``models/DynamicInteraction.py``.) A layer with ``num_out_path = P > 1`` (layers 0 and 1)
feeds output path ``i`` of every cell into cell ``i`` of the next layer; the last layer (P = 1) merges
everything into one refined set of locals. Cell order everywhere: 0 Rectified Identity, 1 Global-Local
Guidance, 2 Intra-Modal Reasoning, 3 Cross-Modal Refinement.
"""

from __future__ import annotations

from argparse import Namespace

import torch
from torch import nn

from itr_dime.cells import (
    CrossModalRefinementCell,
    GlobalLocalGuidanceCell,
    IntraModelReasoningCell,
    RectifiedIdentityCell,
)
from itr_dime.pairs import PairContext

GATE_THRESHOLD = 1e-4
"""Gates below this (summed over cells, or per cell / num_cells in the last layer) open the skip path."""
GATE_EPS = 1e-8
NUM_CELLS = 4


def aggregate_paths(
    embs: list[torch.Tensor], path_prob: list[torch.Tensor], threshold: float = GATE_THRESHOLD, eps: float = GATE_EPS
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Mix the cells' outputs into ``P`` output paths (layers with several output paths).

    Args:
        embs: per cell j, its output (broadcastable (a, b, L, d)); ``embs[0]`` is the identity cell's.
        path_prob: per cell j, its raw gates g_j (broadcastable (a, b, P)).

    Output path i = sum_j p_ij * embs[j] + skip_i * embs[0] with p_ij = g_ij / (sum_k g_ik + eps) and
    skip_i = 1[sum_k g_ik < threshold]. Returns the P outputs and the normalised gates (a, b, P, n_cells).
    """
    skip = (sum(path_prob) < threshold).to(embs[0].dtype)  # (a, b, P)
    gates = torch.stack(path_prob, dim=-1)  # (a, b, P, n_cells)
    gates = gates / (gates.sum(dim=-1, keepdim=True) + eps)
    outputs = []
    for i in range(gates.shape[-2]):
        res = 0
        for j, emb in enumerate(embs):
            res = res + gates[..., i, j, None, None] * emb
        outputs.append(res + skip[..., i, None, None] * embs[0])
    return outputs, gates


def aggregate_last_layer(
    embs: list[torch.Tensor],
    inputs: list[torch.Tensor],
    path_prob: list[torch.Tensor],
    threshold: float = GATE_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the last layer's cells into one output.

    ``out = sum_j (g_j * embs[j] + s_j * inputs[j]) / (sum_j s_j + sum_j g_j)`` with g_j the raw gate of
    cell j (a, b, 1) and s_j = 1[g_j < threshold / n_cells]: a closed cell passes its *input* through.
    Returns the output (a, b, L, d) and the raw gates stacked (a, b, 1, n_cells).
    """
    n_cells = len(embs)
    skips = [(p < threshold / n_cells).to(p.dtype) for p in path_prob]
    res = 0
    for emb, inp, gate, skip in zip(embs, inputs, path_prob, skips, strict=True):
        res = res + gate.unsqueeze(-1) * emb
        res = res + skip.unsqueeze(-1) * inp
    res = res / (sum(skips) + sum(path_prob)).unsqueeze(-1)
    return res, torch.stack(path_prob, dim=-1)


class DynamicInteractionLayer(nn.Module):
    """One routing layer of four cells (``ric``, ``glgc``, ``imrc``, ``cmrc``) with ``num_out_path`` outputs.

    Layer 0 (``first=True``) takes one input, the locals of the context (:meth:`PairContext.local_input`),
    and feeds it to every cell. Later layers take the previous layer's four output paths, path j into
    cell j. Forward returns ``(outputs, path_prob)``: a list of ``num_out_path`` tensors (n_img, n_stc, L, d)
    and the gates (a, b, num_out_path, 4) (normalised over cells when num_out_path > 1, raw otherwise).
    """

    def __init__(self, opt: Namespace, num_cell: int, num_out_path: int, first: bool = False) -> None:
        super().__init__()
        self.threshold = GATE_THRESHOLD
        self.eps = GATE_EPS
        self.num_cell = num_cell
        self.num_out_path = num_out_path
        self.first = first
        # registration order follows the original (layer 0: ric, imrc, glgc, cmrc; others: ric, glgc, imrc, cmrc)
        # so that state_dict() lists the keys in the original order
        self.ric = RectifiedIdentityCell(opt, num_out_path)
        if first:
            self.imrc = IntraModelReasoningCell(opt, num_out_path)
            self.glgc = GlobalLocalGuidanceCell(opt, num_out_path)
        else:
            self.glgc = GlobalLocalGuidanceCell(opt, num_out_path)
            self.imrc = IntraModelReasoningCell(opt, num_out_path)
        self.cmrc = CrossModalRefinementCell(opt, num_out_path)

    def cells(self) -> list[nn.Module]:
        """The cells in path order: 0 ric, 1 glgc, 2 imrc, 3 cmrc."""
        return [self.ric, self.glgc, self.imrc, self.cmrc]

    def forward(
        self, inputs: torch.Tensor | list[torch.Tensor], ctx: PairContext
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(inputs, torch.Tensor):
            inputs = [inputs] * self.num_cell
        if len(inputs) != self.num_cell:
            raise ValueError(f"expected {self.num_cell} input paths, found {len(inputs)}")
        embs, path_prob = [], []
        for cell, x in zip(self.cells(), inputs, strict=True):
            emb, prob = cell(x, ctx)
            embs.append(emb)
            path_prob.append(prob)
        if self.num_out_path == 1:
            out, gates = aggregate_last_layer(embs, inputs, path_prob, self.threshold)
            return [out], gates
        return aggregate_paths(embs, path_prob, self.threshold, self.eps)


__all__ = [
    "GATE_EPS",
    "GATE_THRESHOLD",
    "NUM_CELLS",
    "DynamicInteractionLayer",
    "aggregate_last_layer",
    "aggregate_paths",
]
