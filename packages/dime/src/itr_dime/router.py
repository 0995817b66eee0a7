"""The dynamic router attached to every DIME cell (LgQu/DIME ``models/Router.py``)."""

from __future__ import annotations

import torch
from torch import nn

ROUTER_BIAS_INIT = 1.5
"""Initial bias of the router's last layer: every path starts open (tanh(1.5) ~ 0.905)."""


def router_activation(x: torch.Tensor) -> torch.Tensor:
    """ReLU(tanh(x)): a gate in [0, 1) that is exactly 0 for non-positive logits."""
    return torch.relu(torch.tanh(x))


class Router(nn.Module):
    """Path probabilities of one cell from its input's local features.

    ``mlp`` = Linear(embed_size, hid) - ReLU - Linear(hid, num_out_path), last bias 1.5.
    Input (..., L, d): the mean over the L local features is routed. Output (..., num_out_path).
    """

    def __init__(self, num_out_path: int, embed_size: int, hid: int) -> None:
        super().__init__()
        self.num_out_path = num_out_path
        self.mlp = nn.Sequential(nn.Linear(embed_size, hid), nn.ReLU(True), nn.Linear(hid, num_out_path))
        nn.init.constant_(self.mlp[2].bias, ROUTER_BIAS_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return router_activation(self.mlp(x.mean(-2)))


__all__ = ["ROUTER_BIAS_INIT", "Router", "router_activation"]
