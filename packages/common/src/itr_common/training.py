"""The SCAN-family training loops (DIME, SelfAlign): step decay, deferred signals, option dump, and
:class:`ScanTrainer`, the mechanics both trainers share (resume, save, save on a signal, the epoch loop,
dev validation and best-model bookkeeping). Under torchrun every rank saves and resumes its own RNG streams
(:mod:`itr_common.rank_state`: ``checkpoint.rankR.pth.tar`` beside rank 0's ``checkpoint.pth.tar``), and a signal stops
every rank at the same update (:class:`~itr_common.checkpoint.SaveOnSignal` with ``info``).
:func:`validate_on_main_then_save` also serves ALADIN's trainer."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import SaveOnSignal, capture_rng_state, restore_rng_state, rng_preserved
from itr_common.dist import DistInfo, barrier, broadcast_object, wrap_model
from itr_common.logging import AverageMeter, LogCollector, TensorBoardLogger
from itr_common.losses import max_violation_at
from itr_common.metrics import RetrievalResult
from itr_common.rank_state import load_rank_state, save_rank_state

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def step_decay_lr(learning_rate: float, epoch: int, lr_update: int, gamma: float = 0.1) -> float:
    """The originals' ``adjust_learning_rate``: ``learning_rate * gamma ** (epoch // lr_update)``."""
    return learning_rate * (gamma ** (epoch // lr_update))


@contextlib.contextmanager
def signals_deferred(signals: Sequence[int] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold SIGINT/SIGTERM during a training step: a signal received meanwhile is raised again right after.

    The handlers active outside (:class:`~itr_common.checkpoint.SaveOnSignal`) then save a checkpoint whose
    parameters, optimizer state and BatchNorm statistics belong to the same step (one process), or record the
    signal for the ranks to agree on at the next ``at_boundary()`` (several processes).
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


def validate_on_main_then_save(dist: DistInfo, validate: Callable[[], bool], save: Callable[[bool], Any]) -> None:
    """Rank 0 runs ``validate()`` (RNG-neutral) while the other ranks wait; it records the score and returns
    whether it is the best so far. Then every rank calls ``save(is_best)`` for its part of the checkpoint, with
    rank 0's ``is_best`` broadcast to all.

    Called with signals deferred on every rank (the barriers open and close it): a signal received meanwhile
    stops the ranks at the ``SaveOnSignal.at_boundary()`` after it, at this update.
    """
    barrier()
    is_best = False
    if dist.is_main:
        with rng_preserved():
            is_best = validate()
    save(bool(broadcast_object(is_best)))
    barrier()


def add_sum_violation_flag(parser: argparse.ArgumentParser) -> None:
    """``--sum_violation_epochs N`` (ours, default 0 = the originals): the first N epochs sum every violating
    negative before ``--max_violation`` takes over (:func:`itr_common.losses.max_violation_at`)."""
    parser.add_argument(
        "--sum_violation_epochs", type=int, default=0, metavar="N",
        help="Sum the violations of every negative for the first N epochs, then use --max_violation (0: the "
             "original schedule, max violation from the start; a warm-up where max violation collapses to equal "
             "scores, e.g. a weak or randomly initialised text encoder)")


def format_options(opt: argparse.Namespace) -> str:
    """The options, three a line, sorted by name (the originals' ``print_options``)."""
    items = [f"{k}: {v}" for k, v in sorted(vars(opt).items())]
    rows = [" | ".join(items[i : i + 3]) for i in range(0, len(items), 3)]
    return "\n".join(["----- options -----", *rows, "-" * 19])


@dataclass
class TrainResult:
    """What a run did: per-iteration total losses of this process, the last dev result, the best dev score."""

    losses: list[float] = field(default_factory=list)
    eiters: int = 0
    best_rsum: float = 0.0
    last_validation: RetrievalResult | None = None
    checkpoint: Path | None = None


class ScanTrainer:
    """One training run on this process (part of a torchrun world or alone), as the SCAN-family originals do it.

    Every epoch: ``lr = learning_rate * gamma ** (epoch // lr_update)``, one pass over the train loader (each step
    and each validation with SIGINT/SIGTERM deferred), dev validation (rank 0, RNG-neutral) every ``val_step``
    iterations and at the end of the epoch, each validation saving the checkpoint (and the best one) on rank 0 and
    each other rank R's RNG streams and position to ``checkpoint.rankR.pth.tar`` (``model_best.rankR.pth.tar``).
    ``position`` (epoch, batches done in it) and the RNG streams are snapshot at every step boundary
    (:meth:`mark_boundary`): what any save, a signal's included, writes. Under torchrun a signal is only recorded;
    after each iteration (its step and any validation) and each epoch end the ranks agree whether any received one
    (``signal_guard.at_boundary()``, one scalar all_reduce) and all save that same boundary, then exit 128 + signal.
    A subclass builds ``model``, data (``loader``, ``sampler``, ``batch_sampler``,
    ``dev_split``) and calls :meth:`setup_optimisation`; it provides :meth:`state`, :meth:`load_model_state`,
    :meth:`step`, :meth:`loss_meters`, :meth:`evaluate_dev` and the checkpoint writer ``save_checkpoint``.
    All the configuration comes from ``opt``: ``seed``, ``learning_rate``, ``lr_update``, ``num_epochs``,
    ``log_step``, ``val_step``, ``fp16``, ``logger_name``, and for :meth:`max_violation_at` (the subclass's
    :meth:`step` asks it) ``max_violation`` and ``sum_violation_epochs`` (:func:`add_sum_violation_flag`).
    """

    log: logging.Logger = logging.getLogger(__name__)
    checkpoint_file: str = "checkpoint.pth.tar"
    best_file: str = "model_best.pth.tar"
    gamma: float = 0.1
    save_checkpoint: Callable[[dict, bool, str], Path]  # a subclass sets staticmethod(<its writer>)

    def __init__(self, opt: argparse.Namespace, dist: DistInfo) -> None:
        self.opt, self.dist, self.device = opt, dist, dist.device
        self.eiters, self.best_rsum, self.best_r1 = 0, 0.0, 0.0
        self.start_epoch = self.start_batch = 0
        self.position = (0, 0)  # (epoch, batches done in it): where a resumed run continues
        self.boundary_rng: dict[str, Any] | None = None  # RNG streams at ``position`` (mark_boundary)
        self.result = TrainResult()
        self.signal_guard = SaveOnSignal(self.save_on_signal, DEFERRED_SIGNALS, info=dist)

    def setup_optimisation(self, params: Iterable[torch.nn.Parameter]) -> None:
        """DDP wrapper, per-rank dropout seed, Adam over ``params``, AMP and the TensorBoard logger."""
        opt, dist = self.opt, self.dist
        self.ddp = wrap_model(self.model, find_unused_parameters=True)
        torch.manual_seed(opt.seed + 1000 * dist.rank)  # dropout streams differ between processes
        self.optimizer = torch.optim.Adam(params, lr=opt.learning_rate)
        self.amp = Amp(AmpConfig.from_original(fp16=opt.fp16, device=self.device))
        self.tb = TensorBoardLogger(opt.logger_name, flush_secs=5, enabled=dist.is_main)

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self, epoch: int, batch: int) -> dict:
        """The checkpoint dict for a run that has done ``batch`` batches of ``epoch``."""
        raise NotImplementedError

    def progress_state(self, epoch: int, batch: int) -> dict[str, Any]:
        """The optimizer, AMP, RNG and position entries every checkpoint ends with (RNG: the last boundary's)."""
        return {"optimizer": self.optimizer.state_dict(), "amp": self.amp.state_dict(), "rng": self._rng(),
                "resume": {"epoch": epoch, "batch": batch}}

    def _rng(self) -> dict[str, Any]:
        return self.boundary_rng if self.boundary_rng is not None else capture_rng_state()

    def mark_boundary(self, epoch: int, batch: int) -> None:
        """A step boundary: ``batch`` batches of ``epoch`` done. Remember it with the RNG streams of this moment,
        what every save until the next boundary writes (a signal between two steps saves this update)."""
        self.position = (epoch, batch)
        self.boundary_rng = capture_rng_state()

    def own_state(self) -> dict[str, Any]:
        """What differs between ranks, at the last boundary: RNG streams; with the position and ``Eiters``
        that :meth:`resume` checks against rank 0's."""
        epoch, batch = self.position
        return {"Eiters": self.eiters, "rng": self._rng(), "resume": {"epoch": epoch, "batch": batch}}

    def save(self, is_best: bool) -> None:
        """Rank 0: the checkpoint (SCAN layout + ``world_size``; copied to the best file when ``is_best``); rank R > 0:
        its own RNG streams and position in ``checkpoint.rankR.pth.tar`` (and ``model_best.rankR.pth.tar``)."""
        folder = Path(self.opt.logger_name)

        def write(state: Mapping[str, Any], path: Path) -> None:
            self.result.checkpoint = self.save_checkpoint(dict(state), is_best, self.opt.logger_name)

        save_rank_state(folder / self.checkpoint_file, self.dist, self.own_state(), lambda: self.state(*self.position),
                        write=write, copies=[folder / self.best_file] if is_best else [])

    def save_on_signal(self) -> str:
        """SaveOnSignal's callback at an update boundary: save, and say what (SaveOnSignal prints it)."""
        self.save(is_best=False)
        return "{} at epoch {}, batch {}".format(Path(self.opt.logger_name) / self.checkpoint_file, *self.position)

    def load_model_state(self, state: dict, path: str) -> None:
        """Load the model part of the checkpoint ``state`` read from ``path``."""
        raise NotImplementedError

    def resume(self, path: str, state: dict) -> None:
        """Continue from the checkpoint ``state`` read from ``path``: model, counters, optimizer, AMP, and this rank's
        RNG streams (rank R > 0: from ``checkpoint.rankR.pth.tar``; refused with one line when missing, saved at
        another update or by another number of processes; a checkpoint of an earlier version, rank 0's RNG only,
        resumes in one process)."""
        self.log.info("=> loading checkpoint '%s'", path)
        self.load_model_state(state, path)
        self.eiters = int(state.get("Eiters", 0))
        self.best_rsum = float(state.get("best_rsum", 0.0))
        self.best_r1 = float(state.get("best_r1", 0.0))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "amp" in state:
            self.amp.load_state_dict(state["amp"])
        if "resume" in state:
            self.start_epoch, self.start_batch = int(state["resume"]["epoch"]), int(state["resume"]["batch"])
        else:  # an original checkpoint: its 'epoch' counts the epochs begun
            self.start_epoch, self.start_batch = int(state.get("epoch", 0)), 0
        own = load_rank_state(state, path, self.dist, same=("Eiters", "resume"))
        if "rng" in own:  # an original checkpoint has none: each rank keeps setup_optimisation's seed
            restore_rng_state(own["rng"])
        self.position = (self.start_epoch, self.start_batch)
        self.log.info("=> loaded checkpoint '%s' (epoch %d, batch %d, best_rsum %.2f)", path, self.start_epoch,
                      self.start_batch, self.best_rsum)

    # -------------------------------------------------------------------------------------- training
    def step(self, batch: Any, epoch: int) -> Any:
        """One optimisation step on ``batch``; returns the losses (with a ``total`` tensor)."""
        raise NotImplementedError

    def loss_meters(self, losses: Any, batch: Any) -> Iterable[tuple[str, float, int]]:
        """``(name, value, count)`` for each loss meter of a step."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def max_violation_at(self, epoch: int) -> bool:
        """Whether the rank loss of ``epoch`` keeps only the hardest negatives (``--max_violation`` after
        ``--sum_violation_epochs``)."""
        return max_violation_at(epoch, bool(self.opt.max_violation), self.opt.sum_violation_epochs)

    def learning_rate_at(self, epoch: int) -> float:
        return step_decay_lr(self.opt.learning_rate, epoch, self.opt.lr_update, self.gamma)

    def train_epoch(self, epoch: int, skip: int) -> None:
        opt = self.opt
        self.set_epoch(epoch)
        self.batch_sampler.skip(skip)
        meters = LogCollector()
        batch_time, data_time = AverageMeter(), AverageMeter()
        n_batches = len(self.batch_sampler)
        end = time.time()
        for i, batch in enumerate(self.loader, start=skip):
            data_time.update(time.time() - end, 1)
            with signals_deferred():
                losses = self.step(batch, epoch)
                self.mark_boundary(epoch, i + 1)
            meters.update("Eit", self.eiters)
            meters.update("lr", self.optimizer.param_groups[0]["lr"])
            for name, value, n in self.loss_meters(losses, batch):
                meters.update(name, value, n)
            self.result.losses.append(float(losses.total.detach()))
            batch_time.update(time.time() - end, 1)
            end = time.time()
            if self.eiters % opt.log_step == 0:
                self.log.info("Epoch: [%d][%d/%d]\t%s\tTime %.3f (%.3f)\tData %.3f (%.3f)", epoch, i, n_batches,
                              meters, batch_time.val, batch_time.avg, data_time.val, data_time.avg)
            for name, value in (("epoch", epoch), ("step", i), ("batch_time", batch_time.val),
                                ("data_time", data_time.val)):
                self.tb.log_value(name, value, step=self.eiters)
            meters.tb_log(self.tb, step=self.eiters)
            if self.eiters % opt.val_step == 0:
                with signals_deferred():
                    self.validate_and_save()
            self.signal_guard.at_boundary()  # every rank, every iteration: a signal stops all at this update

    def evaluate_dev(self) -> RetrievalResult:
        """Encode ``dev`` (logging ``encode_data elapses``) and score it."""
        raise NotImplementedError

    def validate(self) -> tuple[float, float]:
        """Dev recalls (rank 0); returns ``(r1 + r5 + r1i + r5i, r1)``."""
        result = self.evaluate_dev()
        self.result.last_validation = result
        (r1, r5, r10, medr, meanr), (r1i, r5i, r10i, medri, meanri) = result.i2t, result.t2i
        self.log.info("Image to text: %.1f, %.1f, %.1f, %.1f, %.1f", r1, r5, r10, medr, meanr)
        self.log.info("Text to image: %.1f, %.1f, %.1f, %.1f, %.1f", r1i, r5i, r10i, medri, meanri)
        score = result.selection_rsum
        for name, value in (("r1", r1), ("r5", r5), ("r10", r10), ("medr", medr), ("meanr", meanr), ("r1i", r1i),
                            ("r5i", r5i), ("r10i", r10i), ("medri", medri), ("meanri", meanri), ("rsum", score)):
            self.tb.log_value(name, value, step=self.eiters)
        return score, r1

    def validate_and_save(self) -> None:
        """Dev validation on rank 0, then every rank saves (:func:`validate_on_main_then_save`)."""
        def validate() -> bool:
            self.log.info("validation at epoch %d, batch %d (iteration %d)", *self.position, self.eiters)
            rsum, r1 = self.validate()
            is_best = rsum > self.best_rsum
            self.best_rsum, self.best_r1 = max(rsum, self.best_rsum), max(r1, self.best_r1)
            return is_best

        validate_on_main_then_save(self.dist, validate, self.save)

    def fit(self) -> TrainResult:
        opt = self.opt
        if self.dist.is_main:
            self.log.info("%s", format_options(opt))
        with self.signal_guard:
            for epoch in range(self.start_epoch, opt.num_epochs):
                lr = self.learning_rate_at(epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                skip = self.start_batch if epoch == self.start_epoch else 0
                hardest = self.max_violation_at(epoch)
                if self.dist.is_main and (epoch == self.start_epoch or hardest != self.max_violation_at(epoch - 1)):
                    self.log.info("epoch %d: rank loss with the %s", epoch,
                                  "hardest negative (max violation)" if hardest else "sum of all violations")
                with signals_deferred():
                    self.mark_boundary(epoch, skip)
                self.train_epoch(epoch, skip)
                with signals_deferred():
                    self.mark_boundary(epoch + 1, 0)
                    self.validate_and_save()
                self.signal_guard.at_boundary()
        self.tb.close()
        self.result.eiters, self.result.best_rsum = self.eiters, self.best_rsum
        return self.result


__all__ = ["DEFERRED_SIGNALS", "ScanTrainer", "TrainResult", "add_sum_violation_flag", "format_options",
           "signals_deferred", "step_decay_lr", "validate_on_main_then_save"]
