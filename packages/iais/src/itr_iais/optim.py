"""Optimizer and learning-rate schedule of UNITER/IAIS (``optim/misc.py``, ``optim/sched.py``)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamax", "adamw")
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
ADAMW_EPS = 1e-6
"""The epsilon of the HuggingFace AdamW the original ships (``optim/adamw.py`` default)."""
MIN_LR = 1e-8


def warmup_linear(step: int, warmup_step: int, tot_step: int) -> float:
    """BERT schedule factor: ``step / warmup`` while warming up, then linear decay to 0 at ``tot_step``."""
    if step < warmup_step:
        return step / warmup_step
    return max(0.0, (tot_step - step) / (tot_step - warmup_step))


def get_lr_sched(global_step: int, learning_rate: float, warmup_steps: int, num_train_steps: int) -> float:
    """``learning_rate * warmup_linear(...)``, floored at 1e-8 where it would be <= 0."""
    lr = learning_rate * warmup_linear(global_step, warmup_steps, num_train_steps)
    return lr if lr > 0 else MIN_LR


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weight decay on every parameter whose name has none of :data:`NO_DECAY`, none on the rest."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if not any(nd in n for nd in NO_DECAY)]
    no_decay = [p for n, p in named if any(nd in n for nd in NO_DECAY)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class AdamW(torch.optim.Optimizer):
    """The HuggingFace AdamW that UNITER/IAIS ship (``optim/adamw.py``), update for update.

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


def build_optimizer(
    model: nn.Module, optim: str, learning_rate: float, betas: Sequence[float], weight_decay: float
) -> torch.optim.Optimizer:
    """``adam`` / ``adamax`` (L2 decay per group, as torch applies it) or ``adamw`` (:class:`AdamW`, eps 1e-6)."""
    groups = parameter_groups(model, weight_decay)
    betas = (float(betas[0]), float(betas[1]))
    if optim == "adamw":
        return AdamW(groups, lr=learning_rate, betas=betas, eps=ADAMW_EPS)
    if optim == "adam":
        return torch.optim.Adam(groups, lr=learning_rate, betas=betas)
    if optim == "adamax":
        return torch.optim.Adamax(groups, lr=learning_rate, betas=betas)
    raise ValueError(f"optim must be one of {OPTIMIZERS}, found '{optim}'")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def set_dropout(model: nn.Module, drop_p: float) -> list[str]:
    """Set every ``nn.Dropout`` to ``drop_p`` (the config's ``dropout``); returns the names changed."""
    changed = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and module.p != drop_p:
            module.p = drop_p
            changed.append(name)
    return changed
