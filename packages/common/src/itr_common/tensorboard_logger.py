"""Drop-in for the ``tensorboard_logger`` package the SCAN-family originals use::

    import itr_common.tensorboard_logger as tb_logger    # was: import tensorboard_logger as tb_logger

    tb_logger.configure(opt.logger_name, flush_secs=5)
    tb_logger.log_value("epoch", epoch, step=model.Eiters)

The only state is :data:`default`, one :class:`itr_common.logging.DefaultTensorBoard` that owns the
``TensorBoardLogger`` made by the last :func:`configure` (a process-wide logger is this API's contract).
"""

from __future__ import annotations

from pathlib import Path

from itr_common.logging import DefaultTensorBoard, TensorBoardLogger

__all__ = ["configure", "log_value"]

default = DefaultTensorBoard()


def configure(logdir: str | Path, flush_secs: int = 2) -> TensorBoardLogger:
    """Start (or restart) the default logger writing event files under ``logdir``."""
    return default.configure(logdir, flush_secs=flush_secs)


def log_value(name: str, value: float, step: int | None = None) -> None:
    """Record scalar ``value`` under ``name`` at ``step`` with the default logger."""
    default.log_value(name, value, step)
