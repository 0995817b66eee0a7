"""``alad/train.py``: ALADIN training (mesnico/ALADIN), the README's command::

    cd alad
    python train.py --data_dir <data-folder>/coco_ir --img_feat_file <features-folder>/features.tsv \\
        --eval_model_dir <checkpoint-target-folder>/checkpoint-0132780 --config configs/<config>.yaml \\
        --logger_name <output-folder> --val_step 7000 --max_seq_length 50 --max_img_seq_length 34
    torchrun --nproc_per_node N train.py ...        # several processes (DDP)

Adam (the YAML's lr) over every parameter; per iteration the StepLR value for the epoch
(``lr * gamma ** (epoch // step-size)``, the original's ``scheduler.step(epoch)``), the loss, gradient
clipping (grad-clip) and a step. Validation on ``minival`` every ``val_step`` iterations and after each
epoch: the matching head's rsum, plus the alignment head's when the loss-type trains it; each saves
``checkpoint.pth.tar`` and, when that sum is the best so far, ``model_best_rsum.pth.tar`` under
``--logger_name``. ``--resume`` continues a run (epoch, batch, optimizer, scheduler, RNG; bit for bit on
CPU); SIGINT/SIGTERM save a resumable checkpoint at the next step boundary and exit (130/143). Under torchrun
every rank R > 0 also saves its own RNG streams to ``checkpoint.rankR.pth.tar`` (``model_best_rsum.rankR.pth.tar``)
and restores them on ``--resume`` (``itr_common.rank_state``), so a multi-process resume is exact too; a signal
(to any rank) stops every rank at the same step boundary, where they agree on it (``SaveOnSignal.at_boundary``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from itr_aladin.config import load_alad_config
from itr_aladin.data import PairCollate, open_split, train_loader, worker_errors_as_one_line
from itr_aladin.evaluation import encode_split, evaluate_heads, format_row, full_rsum
from itr_aladin.model import ALADModel, check_embed_size
from itr_aladin.options import (
    check_lengths,
    parse_train_args,
    restore_training_settings,
    use_checkpoint_feature_dim,
)
from itr_aladin.oscar import OscarConfig, check_vocab, load_oscar_weights
from itr_common.checkpoint import (
    SaveOnSignal,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)
from itr_common.dist import DistInfo, init_distributed, shutdown_after, wrap_model
from itr_common.errors import UserError, cli_entry, fail, require_file
from itr_common.logging import AverageMeter, LogCollector, TensorBoardLogger, setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.rank_state import load_rank_state, save_rank_state
from itr_common.text import load_bert_tokenizer
from itr_common.training import DEFERRED_SIGNALS, signals_deferred, validate_on_main_then_save
from itr_common.validation import require_writable

logger = logging.getLogger("itr_aladin.train")
CHECKPOINT_FILE = "checkpoint.pth.tar"
BEST_FILE = "model_best_rsum.pth.tar"


@dataclass
class TrainResult:
    """What a run did: per-step losses of this process, the last validation, the best selection sum."""

    losses: list[float] = field(default_factory=list)
    eiters: int = 0
    best_rsum: float = 0.0
    last_validation: dict[str, RetrievalResult] = field(default_factory=dict)
    checkpoint: Path | None = None


def read_aladin_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """An ALADIN ``.pth.tar`` (model, optimizer, scheduler, opt, config, Eiters, epoch), loaded safely."""
    state = load_checkpoint(require_file(path, "ALADIN checkpoint"), map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or not isinstance(state["model"], dict):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        fail(f"{path}: expected an ALADIN checkpoint with a 'model' state dict, found {found}")
    return state


class Trainer:
    """One ALADIN training run on this process."""

    def __init__(self, args: argparse.Namespace, dist: DistInfo) -> None:
        self.args, self.dist, self.device = args, dist, dist.device
        self.config = load_alad_config(args.config)
        training = self.config["training"]
        args.per_gpu_train_batch_size = args.per_gpu_eval_batch_size = training["bs"]
        args.do_test = args.do_eval = True
        notes: list[str] = []
        args = restore_training_settings(args, notes)
        self.oscar_config = OscarConfig.from_dir(args.eval_model_dir)
        check_vocab(args.eval_model_dir, self.oscar_config)
        check_embed_size(self.config, self.oscar_config)
        check_lengths(args, self.oscar_config)
        require_file(Path(args.eval_model_dir) / "pytorch_model.bin", "VinVL weights (pytorch_model.bin)")
        use_checkpoint_feature_dim(args, self.oscar_config, notes)
        self.loaded = None  # the --resume / --load-teacher-model checkpoint, read before any work
        for flag, path in (("--resume", args.resume), ("--load-teacher-model", args.load_teacher_model)):
            if path:
                require_file(path, f"checkpoint ({flag})")
                self.loaded = read_aladin_checkpoint(path, map_location="cpu")
        self.tokenizer = load_bert_tokenizer(args.eval_model_dir, do_lower_case=True)
        self.train_data = open_split(args, "train", is_train=True)
        self.val_data = open_split(args, "minival", is_train=True)
        if dist.is_main:
            require_writable(args.logger_name, "--logger_name")
        for note in notes:
            logger.warning("%s", note)

        torch.manual_seed(args.seed)
        self.model = ALADModel(self.config, self.oscar_config)
        load_oscar_weights(self.model.img_txt_enc.oscar_model, args.eval_model_dir)
        self.model.to(self.device)
        self.ddp = wrap_model(self.model, find_unused_parameters=True)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=training["lr"])
        self.scheduler = None
        if training["scheduler"] == "steplr":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, training["step-size"], training["gamma"])
        collate = PairCollate(self.tokenizer, args.max_seq_length, args.max_img_seq_length)
        self.loader, self.sampler, self.batches = train_loader(
            self.train_data, collate, training["bs"], args.num_workers, args.seed, dist.rank, dist.world_size)
        self.tb = TensorBoardLogger(args.logger_name, flush_secs=5, enabled=dist.is_main)
        self.best_rsum = 0.0
        self.start = (0, 0)
        self.position = (0, 0)
        self.boundary_rng: dict[str, Any] | None = None  # the RNG streams at ``position`` (mark_boundary)
        self.result = TrainResult()
        torch.manual_seed(args.seed + 1000 * dist.rank)  # the dropout stream of this process
        if self.loaded is not None:
            self.load(args.resume or args.load_teacher_model, resume=bool(args.resume), state=self.loaded)
            self.loaded = None

    # ------------------------------------------------------------------------------------- checkpoints
    def mark_boundary(self, epoch: int, batch: int) -> None:
        """A step boundary (``batch`` batches of ``epoch`` done) and this moment's RNG streams: what every save
        until the next boundary writes, so that all ranks save the same update."""
        self.position = (epoch, batch)
        self.boundary_rng = capture_rng_state()

    def own_state(self) -> dict[str, Any]:
        """This rank's part of a checkpoint: its RNG streams, with the counters :meth:`load` checks."""
        epoch, batch = self.position
        return {"Eiters": self.model.Eiters, "rng": self.boundary_rng or capture_rng_state(),
                "resume": {"epoch": epoch, "batch": batch}}

    def state(self) -> dict[str, Any]:
        epoch, batch = self.position
        return {
            "epoch": epoch + (1 if batch > 0 else 0),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "opt": argparse.Namespace(**{k: v for k, v in vars(self.args).items()
                                         if isinstance(v, str | int | float | bool | type(None))}),
            "config": self.config,
            "Eiters": self.model.Eiters,
            "best_rsum": self.best_rsum,
            "rng": self.boundary_rng or capture_rng_state(),
            "resume": {"epoch": epoch, "batch": batch},
        }

    def save(self, is_best: bool) -> None:
        """Rank 0: ``checkpoint.pth.tar`` (+ ``model_best_rsum.pth.tar``), the original layout + ``world_size``;
        rank R > 0: its RNG streams and position in ``checkpoint.rankR.pth.tar`` (+ ``model_best_rsum.rankR...``)."""
        folder = Path(self.args.logger_name)

        def write(state: dict[str, Any], path: Path) -> None:
            self.result.checkpoint = save_atomic(state, path)
            if is_best:
                save_atomic(state, folder / BEST_FILE)

        save_rank_state(folder / CHECKPOINT_FILE, self.dist, self.own_state(), self.state, write=write,
                        copies=[folder / BEST_FILE] if is_best else [])

    def load(self, path: str, resume: bool, state: dict[str, Any] | None = None) -> None:
        logger.info("=> loading checkpoint '%s'", path)
        if state is None:
            state = read_aladin_checkpoint(path, map_location="cpu")
        self.model.load_aladin_state_dict(state["model"], strict=resume, source=str(path))
        if not resume:
            logger.info("=> loaded only model from checkpoint '%s'", path)
            return
        for key in ("optimizer", "epoch"):
            if key not in state:
                fail(f"{path}: expected '{key}' in a checkpoint to resume, found keys {sorted(state)}")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            fail(f"{path}: its optimizer state does not fit this model/config ({err})")
        if self.scheduler is not None and state.get("scheduler") is not None and not self.args.reinitialize_scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        self.model.Eiters = int(state.get("Eiters", 0))
        self.best_rsum = float(state.get("best_rsum", 0.0))
        if "resume" in state:
            self.start = (int(state["resume"]["epoch"]), int(state["resume"]["batch"]))
        else:  # an original checkpoint: 'epoch' counts the epochs begun
            self.start = (int(state["epoch"]), 0)
        # this rank's RNG streams (rank R > 0: its own file; refused when missing, of another update or process
        # count, or for a state of an earlier version holding rank 0's only); none in an original checkpoint
        own = load_rank_state(state, path, self.dist, same=("Eiters", "resume"))
        if "rng" in own:
            restore_rng_state(own["rng"])
        self.position = self.start
        logger.info("=> loaded checkpoint '%s' (epoch %d, batch %d)", path, *self.start)

    # ---------------------------------------------------------------------------------------- training
    def set_lr(self, epoch: int) -> None:
        """StepLR's value for ``epoch`` (closed form, as ``scheduler.step(epoch)``)."""
        if self.scheduler is None:
            return
        self.scheduler.last_epoch = epoch
        gamma, step = self.scheduler.gamma, self.scheduler.step_size
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * gamma ** (epoch // step)

    def step(self, images: Any, texts: Any, epoch: int) -> tuple[float, dict[str, float]]:
        self.ddp.train()
        self.set_lr(epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.ddp(images.to(self.device), texts.to(self.device), epoch)
        loss.backward()
        grad_clip = self.config["training"]["grad-clip"]
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        return float(loss.detach()), parts

    def train_epoch(self, epoch: int, skip: int) -> None:
        self.sampler.set_epoch(epoch)
        self.batches.skip(skip)
        meters = LogCollector()
        batch_time, data_time = AverageMeter(), AverageMeter()
        with worker_errors_as_one_line():
            self._train_batches(epoch, skip, meters, batch_time, data_time)

    def _train_batches(self, epoch: int, skip: int, meters: LogCollector, batch_time: AverageMeter,
                       data_time: AverageMeter) -> None:
        for i, (images, texts) in enumerate(self.loader, start=skip):
            # a SIGINT/SIGTERM waits for the step, its position and any validation it triggers
            with signals_deferred():
                self._iteration(epoch, i, images, texts, meters, batch_time, data_time)
            self.signal_guard.at_boundary()  # torchrun: the ranks agree here on a signal and all save this update

    def _iteration(self, epoch: int, i: int, images: Any, texts: Any, meters: LogCollector,
                   batch_time: AverageMeter, data_time: AverageMeter) -> None:
        args = self.args
        data_time.update(time.time() - self.batch_end, 1)
        loss, parts = self.step(images, texts, epoch)
        self.mark_boundary(epoch, i + 1)
        self.result.losses.append(loss)
        eiters = self.model.Eiters
        meters.update("Eit", eiters)
        for name, value in parts.items():
            meters.update(f"{name}_loss", value, images.img_feats.shape[0])
        batch_time.update(time.time() - self.batch_end, 1)
        self.batch_end = time.time()
        if eiters % args.log_step == 0:
            logger.info("Epoch: [%d][%d/%d]\t%s\tTime %.3f (%.3f)\tData %.3f (%.3f)", epoch, i, len(self.batches),
                        meters, batch_time.val, batch_time.avg, data_time.val, data_time.avg)
        self.tb.log_value("epoch", epoch, eiters)
        self.tb.log_value("lr", self.optimizer.param_groups[0]["lr"], eiters)
        meters.tb_log(self.tb, step=eiters)
        if eiters % args.val_step == 0:
            self.validate_and_save()

    def save_on_signal(self) -> str:
        """SaveOnSignal's callback at a step boundary (one process: from the handler, steps run with the signals
        deferred; torchrun: from ``at_boundary()``, on every rank at the same update)."""
        self.save(is_best=False)
        return f"{Path(self.args.logger_name) / CHECKPOINT_FILE} at epoch {self.position[0]}, batch {self.position[1]}"

    def validate(self) -> float:
        """The original's selection sum: matching rsum (+ alignment rsum when the loss-type trains it)."""
        args = self.args
        enc = encode_split(self.model, self.val_data, self.tokenizer, args.max_seq_length, args.max_img_seq_length,
                           self.config["training"]["bs"], 0, self.device)
        heads = ("matching", "alignment") if "alignment" in self.config["training"]["loss-type"] else ("matching",)
        results = evaluate_heads(self.model, enc, ["1k"], heads, self.device, {"split": "minival"})
        rsum = 0.0
        for head in heads:
            result = results[head]["1k"]
            logger.info("%s", format_row(head, "minival", result))
            rsum += full_rsum(result)
            for name, value in zip(("r1", "r5", "r10", "medr", "meanr"), result.i2t, strict=True):
                self.tb.log_value(f"{head}/{name}", value, self.model.Eiters)
            for name, value in zip(("r1i", "r5i", "r10i", "medri", "meanri"), result.t2i, strict=True):
                self.tb.log_value(f"{head}/{name}", value, self.model.Eiters)
        self.tb.log_value("rsum", rsum, self.model.Eiters)
        self.result.last_validation = {h: results[h]["1k"] for h in heads}
        return rsum

    def validate_and_save(self) -> None:
        """Validation on rank 0, then every rank saves (:func:`itr_common.training.validate_on_main_then_save`)."""
        def validate() -> bool:
            logger.info("validation at epoch %d, batch %d (iteration %d)", *self.position, self.model.Eiters)
            rsum = self.validate()
            is_best = rsum > self.best_rsum
            self.best_rsum = max(rsum, self.best_rsum)
            return is_best

        validate_on_main_then_save(self.dist, validate, self.save)

    def fit(self) -> TrainResult:
        with SaveOnSignal(self.save_on_signal, DEFERRED_SIGNALS, info=self.dist) as self.signal_guard:
            for epoch in range(self.start[0], self.args.num_epochs):
                skip = self.start[1] if epoch == self.start[0] else 0
                with signals_deferred():
                    self.mark_boundary(epoch, skip)
                self.batch_end = time.time()
                self.train_epoch(epoch, skip)
                with signals_deferred():
                    self.mark_boundary(epoch + 1, 0)
                    self.validate_and_save()
                self.signal_guard.at_boundary()
        self.tb.close()
        self.result.eiters = self.model.Eiters
        self.result.best_rsum = self.best_rsum
        return self.result


def run(args: argparse.Namespace) -> TrainResult:
    """Train with :func:`itr_aladin.options.parse_train_args`'s namespace (any process of a torchrun world)."""
    device = args.device or ("cpu" if args.no_cuda or not torch.cuda.is_available() else None)
    dist = init_distributed(device=device)
    setup_logging(dist.rank)
    with shutdown_after():
        return Trainer(args, dist).fit()


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``aladin-train`` / ``python train.py`` / ``python -m itr_aladin.train``."""
    run(parse_train_args(argv))


def train(argv: Sequence[str]) -> TrainResult:
    """The training run of ``argv`` as a result object (tests, API); bad input raises UserError."""
    return run(parse_train_args(argv))


if __name__ == "__main__":
    main()

__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "TrainResult", "UserError", "main", "read_aladin_checkpoint", "run",
           "train"]
