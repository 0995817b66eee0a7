"""A frozen BERT inside a text tower (DIME, CAMERA, SelfAlign): stop its gradients, read its last layer."""

from __future__ import annotations

import torch
from torch import nn


def freeze(module: nn.Module) -> None:
    """Stop gradients into every parameter of ``module`` (its dropout still follows train/eval mode)."""
    for param in module.parameters():
        param.requires_grad = False


def last_hidden_state(bert: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      token_type_ids: torch.Tensor) -> torch.Tensor:
    """BERT's last encoder layer (B, W, H) from a Hugging Face ``BertModel`` (or an original one, which
    returns ``(all_encoder_layers, pooled)``)."""
    out = bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    layers = out[0]
    return layers[-1] if isinstance(layers, list | tuple) else layers


__all__ = ["freeze", "last_hidden_state"]
