"""Mixed precision: the originals' apex switches mapped onto ``torch.autocast`` + ``torch.amp.GradScaler``.

The originals turn mixed precision on with ``fp16: true`` (UNITER/IAIS/LightningDOT JSON configs, apex
``amp.initialize(..., opt_level='O2')``) or ``--fp16 --fp16_opt_level O2`` (LightningDOT, apex). As in
apex, ``fp16`` is the switch and the opt level says how:

=========  ==========================================================================================
O0         off: fp32 everywhere (what apex O0 is)
O1         autocast: ops run in half precision where safe, weights stay fp32
O2, O3     autocast as O1. apex O2/O3 cast the model's weights to fp16 (O2 keeping fp32 master
           weights in the optimizer); here the weights stay fp32 and autocast casts per op, which is
           PyTorch's supported replacement and numerically at least as safe.
=========  ==========================================================================================

Device: on CUDA the autocast dtype is float16 with a dynamic ``GradScaler``; on CPU it is bfloat16 and the
scaler is disabled (bf16 has fp32's exponent range, so no loss scaling is needed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from itr_common.errors import UserError

OPT_LEVELS = ("O0", "O1", "O2", "O3")


@dataclass(frozen=True)
class AmpConfig:
    """What mixed precision does: autocast on ``device_type`` with ``dtype``, and whether to scale the loss."""

    enabled: bool = False
    device_type: str = "cpu"
    dtype: torch.dtype = torch.float32
    use_scaler: bool = False
    opt_level: str = "O0"

    @classmethod
    def from_original(
        cls,
        fp16: bool = False,
        opt_level: str | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> AmpConfig:
        """Map the originals' ``fp16`` / apex ``opt_level`` onto autocast for ``device``.

        ``opt_level`` None with ``fp16`` true means UNITER's apex O2. ``device`` defaults to CUDA when
        available. ``dtype`` overrides the autocast dtype (e.g. bfloat16 on GPUs that have it).
        An opt level outside O0-O3 raises :class:`UserError` even when ``fp16`` is off.
        """
        if opt_level is not None and opt_level not in OPT_LEVELS:
            raise UserError(f"--fp16_opt_level: expected one of {', '.join(OPT_LEVELS)}, found '{opt_level}'")
        level = opt_level or ("O2" if fp16 else "O0")
        dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device: expected an available CUDA device, found '{dev}' without CUDA")
        if not fp16 or level == "O0":
            return cls(False, dev.type, torch.float32, False, "O0")
        chosen = dtype or (torch.float16 if dev.type == "cuda" else torch.bfloat16)
        return cls(True, dev.type, chosen, dev.type == "cuda" and chosen == torch.float16, level)


class Amp:
    """Autocast, loss scaling, gradient clipping and the optimiser step in one object.

    Typical step::

        with amp.autocast():
            loss = model(batch)
        amp.backward(loss)
        grad_norm = amp.step(optimizer, max_grad_norm=2.0)
        optimizer.zero_grad()
    """

    def __init__(self, config: AmpConfig) -> None:
        self.config = config
        self.scaler = torch.amp.GradScaler(config.device_type, enabled=config.use_scaler)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the forward pass inside this; a no-op when mixed precision is off."""
        with torch.autocast(self.config.device_type, dtype=self.config.dtype, enabled=self.config.enabled):
            yield

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Backward of the (scaled, on CUDA fp16) scalar ``loss``; call several times to accumulate."""
        self.scaler.scale(loss).backward(retain_graph=retain_graph)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.Tensor] | None = None,
        max_grad_norm: float | None = None,
    ) -> torch.Tensor:
        """Unscale, clip to ``max_grad_norm`` (if > 0), step, update the scale; return the grad norm.

        ``parameters`` default to every parameter of ``optimizer``. The returned norm is the total L2
        norm of the unscaled gradients before clipping (a 0-dim tensor; inf/nan when the scaler skipped
        this step because of an overflow).
        """
        self.scaler.unscale_(optimizer)
        params = (
            list(parameters)
            if parameters is not None
            else [p for group in optimizer.param_groups for p in group["params"]]
        )
        params = [p for p in params if p.grad is not None]
        limit = max_grad_norm if max_grad_norm is not None and max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, limit) if params else torch.tensor(0.0)
        self.scaler.step(optimizer)
        self.scaler.update()
        return grad_norm

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state (empty when disabled); plain numbers, safe under weights_only."""
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a disabled scaler, or an empty saved state, is left as is)."""
        scaler_state = state.get("scaler", {})
        if scaler_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(scaler_state)


def autocast_for(device: torch.device, fp16: bool) -> contextlib.AbstractContextManager:
    """Inference autocast (fp16 on CUDA, bf16 on CPU) when ``fp16``, else nothing."""
    if not fp16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
