"""Model backbones shared by several papers (UNITER for IAIS and LightningDOT)."""

from __future__ import annotations

from itr_common.models.uniter import (
    UniterConfig,
    UniterForImageTextRetrieval,
    UniterModel,
    UniterOutput,
    load_uniter_state_dict,
)

__all__ = [
    "UniterConfig",
    "UniterForImageTextRetrieval",
    "UniterModel",
    "UniterOutput",
    "load_uniter_state_dict",
]
