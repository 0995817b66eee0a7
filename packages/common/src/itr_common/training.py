"""Pieces of the SCAN-family training loops (DIME, SelfAlign): step decay, deferred signals, option dump."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def step_decay_lr(learning_rate: float, epoch: int, lr_update: int, gamma: float = 0.1) -> float:
    """The originals' ``adjust_learning_rate``: ``learning_rate * gamma ** (epoch // lr_update)``."""
    return learning_rate * (gamma ** (epoch // lr_update))


@contextlib.contextmanager
def signals_deferred(signals: Sequence[int] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold SIGINT/SIGTERM during a training step: a signal received meanwhile is raised again right after.

    The handlers active outside (:class:`~itr_common.checkpoint.SaveOnSignal`) then save a checkpoint whose
    parameters, optimizer state and BatchNorm statistics belong to the same step.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signal.raise_signal(received[0])


def format_options(opt: argparse.Namespace) -> str:
    """The options, three a line, sorted by name (the originals' ``print_options``)."""
    items = [f"{k}: {v}" for k, v in sorted(vars(opt).items())]
    rows = [" | ".join(items[i : i + 3]) for i in range(0, len(items), 3)]
    return "\n".join(["----- options -----", *rows, "-" * 19])


__all__ = ["DEFERRED_SIGNALS", "format_options", "signals_deferred", "step_decay_lr"]
