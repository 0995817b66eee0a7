"""Optimiser and schedule of ``train_itm.py`` (``get_optimizer``, ``get_schedule_linear``).

AdamW is the Hugging Face one of transformers 2.3 (``itr_common.optim.AdamW``): lr from the config,
eps 1e-8, betas (0.9, 0.999), weight decay 0.0 in both groups (biases and LayerNorm weights, the rest).
The schedule warms up linearly over 10% of all updates, then decays linearly to 0.
"""

from __future__ import annotations

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from itr_common.optim import AdamW

NO_DECAY = ("bias", "LayerNorm.weight")
ADAM_EPS = 1e-8
WARMUP_FRACTION = 0.1


def get_optimizer(model: nn.Module, learning_rate: float = 1e-5, adam_eps: float = ADAM_EPS,
                  weight_decay: float = 0.0) -> AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not any(nd in n for nd in NO_DECAY)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(nd in n for nd in NO_DECAY)], "weight_decay": 0.0},
    ]
    return AdamW(groups, lr=learning_rate, eps=adam_eps)


def linear_factor(step: int, warmup_steps: int, training_steps: int) -> float:
    """``step / warmup`` while warming up, then ``(total - step) / (total - warmup)``, floored at 0."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    return max(0.0, float(training_steps - step) / float(max(1, training_steps - warmup_steps)))


def get_schedule_linear(optimizer, warmup_steps: int, training_steps: int, last_epoch: int = -1) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: linear_factor(step, warmup_steps, training_steps), last_epoch)


def warmup_for(total_updates: int) -> int:
    """``int(0.1 * total_updates)`` (the configs' ``warmup_steps`` is not read, as in the original)."""
    return int(WARMUP_FRACTION * total_updates)
