"""Optimizer and learning-rate schedule of UNITER/IAIS (``optim/misc.py``, ``optim/sched.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from itr_common.optim import AdamW

OPTIMIZERS = ("adam", "adamax", "adamw")
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
ADAMW_EPS = 1e-6
"""The epsilon of the HuggingFace AdamW the original ships (``optim/adamw.py`` default)."""
MIN_LR = 1e-8

__all__ = ["AdamW", "build_optimizer", "get_lr_sched", "parameter_groups", "set_dropout", "set_lr",
           "warmup_linear"]


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
