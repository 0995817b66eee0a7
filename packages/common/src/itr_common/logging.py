"""Console logging, TensorBoard scalars, progress bars and the SCAN-family meters.

* :func:`setup_logging` / :func:`get_logger`: Python logging, INFO on rank 0 and WARNING elsewhere.
* :class:`TensorBoardLogger`: scalars through ``torch.utils.tensorboard.SummaryWriter``.
* :class:`DefaultTensorBoard` backs :mod:`itr_common.tensorboard_logger`, the drop-in for the
  ``tensorboard_logger`` package (``configure(logdir)`` / ``log_value(name, value, step)``) that the
  SCAN-family originals import as ``tb_logger``.
* :func:`progress`: tqdm, silent on ranks other than 0.
* :class:`AverageMeter` / :class:`LogCollector`: the originals' running meters (``val``, ``avg``,
  ``update``, ``tb_log``).

This module is ``itr_common.logging``; the standard library's module is imported as ``_logging``.
"""

from __future__ import annotations

import logging as _logging
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

LOG_FORMAT = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"
_HANDLER_MARK = "_itr_common_handler"


# --------------------------------------------------------------------------------------- Python logging
def get_logger(name: str) -> _logging.Logger:
    """The standard library logger called ``name`` (use ``__name__``)."""
    return _logging.getLogger(name)


def setup_logging(rank: int = 0, log_file: str | Path | None = None) -> _logging.Logger:
    """Configure the root logger: INFO on rank 0, WARNING on other ranks, to stderr.

    ``log_file`` (written by rank 0 only) receives the same lines, like UNITER's ``log/log.txt``.
    Calling it again replaces the handlers it added before. Returns the root logger.
    """
    root = _logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(_logging.INFO if rank == 0 else _logging.WARNING)
    formatter = _logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)
    handlers: list[_logging.Handler] = [_logging.StreamHandler(sys.stderr)]
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    return root


# ------------------------------------------------------------------------------------------ TensorBoard
class ScalarSink(Protocol):
    """Anything with ``log_value(name, value, step)``: a TensorBoardLogger or the tensorboard_logger shim."""

    def log_value(self, name: str, value: float, step: int | None = None) -> None: ...


class TensorBoardLogger:
    """Scalars into a TensorBoard event file under ``logdir``.

    ``step=None`` uses one more than the last step logged under that name (0 first), as the
    ``tensorboard_logger`` package did. ``enabled=False`` makes every call a no-op (pass
    ``enabled=is_main_process()`` so only rank 0 writes).
    """

    def __init__(self, logdir: str | Path, flush_secs: int = 120, enabled: bool = True) -> None:
        self.logdir = Path(logdir)
        self.enabled = enabled
        self._last_step: dict[str, int] = {}
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

            self._writer = SummaryWriter(log_dir=str(self.logdir), flush_secs=flush_secs)

    def log_value(self, name: str, value: float, step: int | None = None) -> None:
        """Record the scalar ``value`` (a number or a 0-dim tensor) under ``name`` at ``step``."""
        if step is None:
            step = self._last_step.get(name, -1) + 1
        self._last_step[name] = step
        if self._writer is not None:
            self._writer.add_scalar(name, float(value), global_step=step)

    def log_dict(self, values: Mapping[str, float], step: int | None = None, prefix: str = "") -> None:
        """Record every ``name: value`` of ``values`` as ``prefix + name``."""
        for name, value in values.items():
            self.log_value(prefix + name, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DefaultTensorBoard:
    """The one logger behind the module-level ``configure`` / ``log_value`` of the tensorboard_logger API.

    :mod:`itr_common.tensorboard_logger` holds a single instance of this class: that instance is the only
    state of the shim. ``configure`` again closes the previous logger and starts a new one.
    """

    def __init__(self) -> None:
        self.logger: TensorBoardLogger | None = None

    def configure(self, logdir: str | Path, flush_secs: int = 2) -> TensorBoardLogger:
        self.close()
        self.logger = TensorBoardLogger(logdir, flush_secs=flush_secs)
        return self.logger

    def log_value(self, name: str, value: float, step: int | None = None) -> None:
        if self.logger is None:
            raise RuntimeError("tensorboard_logger.log_value called before tensorboard_logger.configure(logdir)")
        self.logger.log_value(name, value, step)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None


# ------------------------------------------------------------------------------------------------ tqdm
def progress(
    iterable: Iterable[Any] | None = None,
    desc: str | None = None,
    total: int | None = None,
    rank: int | None = None,
    **kwargs: Any,
) -> tqdm:
    """``tqdm(iterable, desc=desc, total=total, **kwargs)``, disabled on ranks other than 0.

    ``rank`` defaults to :func:`itr_common.dist.get_rank`.
    """
    if rank is None:
        from itr_common.dist import get_rank

        rank = get_rank()
    if rank != 0:
        kwargs["disable"] = True
    return tqdm(iterable, desc=desc, total=total, **kwargs)


# ------------------------------------------------------------------------------------------------ meters
class AverageMeter:
    """The last value and the running average of a quantity (the SCAN-family meter).

    ``update(val, n)`` weights ``val`` by ``n``; the default ``n=0`` (as in the originals) records the
    value without counting it, for things like the iteration number whose average means nothing.
    The originals divided by ``count + 1e-4``; ``avg`` here is the exact weighted mean (0 before any count).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.val: float = 0
        self.avg: float = 0
        self.sum: float = 0
        self.count: float = 0

    def update(self, val: float, n: float = 0) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0

    def __str__(self) -> str:
        if self.count == 0:
            return str(self.val)
        return f"{self.val:.4f} ({self.avg:.4f})"


class LogCollector:
    """Named :class:`AverageMeter` s in insertion order, printed on one line and sent to TensorBoard."""

    def __init__(self) -> None:
        self.meters: OrderedDict[str, AverageMeter] = OrderedDict()

    def update(self, k: str, v: float, n: float = 0) -> None:
        if k not in self.meters:
            self.meters[k] = AverageMeter()
        self.meters[k].update(v, n)

    def __str__(self) -> str:
        return "  ".join(f"{k} {meter}" for k, meter in self.meters.items())

    def tb_log(self, tb_logger: ScalarSink, prefix: str = "", step: int | None = None) -> None:
        """Log each meter's last value as ``prefix + name`` through ``tb_logger.log_value``."""
        for k, meter in self.meters.items():
            tb_logger.log_value(prefix + k, meter.val, step=step)
