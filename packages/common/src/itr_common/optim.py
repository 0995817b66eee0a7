"""Optimizer pieces shared by the UNITER-family packages (IAIS, LightningDOT).

:class:`AdamW` is the Hugging Face AdamW that UNITER (``optim/adamw.py``) and LightningDOT
(``transformers.optimization.AdamW`` of transformers 2.3) use, update for update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch


class AdamW(torch.optim.Optimizer):
    """The Hugging Face AdamW of UNITER / IAIS / LightningDOT, update for update.

    ``m, v`` are the usual moments; the step is ``p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``
    (``eps`` added before the bias correction), then the decoupled decay ``p -= lr * wd * p`` on the updated
    weights. ``torch.optim.AdamW`` adds ``eps`` after the correction (a smaller effective epsilon while
    ``1 - b2^t`` is small: 7x at step 1 with b2 = 0.98) and decays before the step.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, correct_bias: bool = True) -> None:
        if lr < 0.0 or eps < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: expected lr >= 0, eps >= 0, betas in [0, 1), found {lr}, {eps}, {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] = int(state["step"]) + 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size *= math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
