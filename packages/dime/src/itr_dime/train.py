"""``train.py`` of DIME: the README's training command (LgQu/DIME ``train.py``).

    python train.py --data_path $DATA_PATH --bert_path $BERT_PATH --data_name coco_precomp \\
        --logger_name runs/coco_DIME --direction i2t --extra_stc 1 --lambda_softmax=4
    torchrun --nproc_per_node N train.py ...        # several processes (DDP, DistributedSampler)

Every epoch: lr = learning_rate * 0.1 ** (epoch // lr_update), one pass over ``train`` with Adam and
gradient clipping, validation on ``dev`` (r1 + r5 + r1i + r5i) every ``val_step`` iterations and at the
end of the epoch, each validation saving ``checkpoint.pth.tar`` (and ``model_best.pth.tar`` when best)
under ``--logger_name``. ``--resume`` continues where a run stopped: epoch, batch, optimizer, RNG.
SIGINT/SIGTERM save a resumable checkpoint at the next step boundary, then exit (130/143).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import SaveOnSignal, capture_rng_state, restore_rng_state
from itr_common.data.precomp import PrecompSplit
from itr_common.dist import DistInfo, barrier, init_distributed, shutdown, wrap_model
from itr_common.errors import cli_entry, fail, require_dir, require_file
from itr_common.logging import AverageMeter, LogCollector, TensorBoardLogger, setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.training import DEFERRED_SIGNALS, format_options, signals_deferred, step_decay_lr
from itr_common.validation import check_same_size, require_writable
from itr_dime.checkpoints import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from itr_dime.data import Batch, DimeCaptionDataset, train_loader
from itr_dime.evaluation import FLICKR_PROTOCOL, encode_split, evaluate_encoded
from itr_dime.losses import DimeLoss, dime_loss
from itr_dime.model import DIME
from itr_dime.options import parse_train_args

logger = logging.getLogger("itr_dime.train")

@dataclass
class TrainResult:
    """What a run did: per-iteration losses of this process, the last dev result, the best score."""

    losses: list[float] = field(default_factory=list)
    eiters: int = 0
    best_rsum: float = 0.0
    last_validation: RetrievalResult | None = None
    checkpoint: Path | None = None


def learning_rate_at(opt: argparse.Namespace, epoch: int) -> float:
    """The original step decay: ``learning_rate * 0.1 ** (epoch // lr_update)``."""
    return step_decay_lr(opt.learning_rate, epoch, opt.lr_update)


class Trainer:
    """One training run of :class:`DIME` on this process (part of a torchrun world or alone)."""

    def __init__(self, opt: argparse.Namespace, dist: DistInfo) -> None:
        self.opt = opt
        self.dist = dist
        self.device = dist.device
        require_dir(opt.bert_path, "BERT directory (--bert_path)")
        if opt.resume:
            require_file(opt.resume, "checkpoint (--resume)")
        require_writable(opt.logger_name, "--logger_name")
        torch.manual_seed(opt.seed)

        self.tokenizer = load_bert_tokenizer(opt.bert_path)
        train_split = PrecompSplit(opt.data_path, opt.data_name, "train")
        self.dev_split = PrecompSplit(opt.data_path, opt.data_name, "dev")
        feat_dim = check_same_size({f"{split.split} ({split.files['ims']})": split.images.shape[2]
                                    for split in (train_split, self.dev_split)})
        if feat_dim != opt.img_dim:
            fail(f"--img_dim: expected {feat_dim} (the feature size of {train_split.files['ims']}), "
                 f"found {opt.img_dim}")
        self.train_set = DimeCaptionDataset(
            train_split, self.tokenizer, opt.max_words, opt.extra_stc, opt.extra_img, seed=opt.seed
        )
        self.loader, self.sampler, self.batch_sampler = train_loader(
            self.train_set, opt.batch_size, opt.workers, dist.rank, dist.world_size, seed=opt.seed
        )

        self.model = DIME(opt).to(self.device)
        self.ddp = wrap_model(self.model, find_unused_parameters=True)
        torch.manual_seed(opt.seed + 1000 * dist.rank)  # dropout streams differ between processes
        self.optimizer = torch.optim.Adam(self.model.trainable_parameters(), lr=opt.learning_rate)
        self.amp = Amp(AmpConfig.from_original(fp16=opt.fp16, device=self.device))
        self.tb = TensorBoardLogger(opt.logger_name, flush_secs=5, enabled=dist.is_main)

        self.eiters = 0
        self.best_rsum = 0.0
        self.best_r1 = 0.0
        self.start_epoch = 0
        self.start_batch = 0
        self.position = (0, 0)  # (epoch, batches done in it): where a resumed run continues
        self.result = TrainResult()
        if opt.resume:
            self.resume(opt.resume)

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self, epoch: int, batch: int) -> dict:
        """The checkpoint dict (original keys first), for a run that has done ``batch`` batches of ``epoch``.

        ``'epoch'`` counts the epochs begun, as the original's ``epoch + 1``.
        """
        return {
            "epoch": epoch + (1 if batch > 0 else 0),
            "model": self.model.original_state_dict(),
            "best_rsum": self.best_rsum,
            "best_r1": self.best_r1,
            "opt": self.opt,
            "Eiters": self.eiters,
            "optimizer": self.optimizer.state_dict(),
            "amp": self.amp.state_dict(),
            "rng": capture_rng_state(),
            "resume": {"epoch": epoch, "batch": batch},
        }

    def save(self, is_best: bool) -> None:
        if self.dist.is_main:
            epoch, batch = self.position
            self.result.checkpoint = save_checkpoint(self.state(epoch, batch), is_best, self.opt.logger_name)

    def save_on_signal(self) -> None:
        logger.warning("signal received: saving %s/%s at epoch %d, batch %d", self.opt.logger_name, CHECKPOINT_FILE,
                       *self.position)
        self.save(is_best=False)

    def resume(self, path: str) -> None:
        logger.info("=> loading checkpoint '%s'", path)
        state = read_checkpoint(path, map_location=self.device)
        self.model.load_original_state_dict(state["model"], source=path)
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
        if "rng" in state:
            restore_rng_state(state["rng"])
            if self.dist.rank:
                torch.manual_seed(self.opt.seed + 1000 * self.dist.rank + self.eiters)
        self.position = (self.start_epoch, self.start_batch)
        logger.info("=> loaded checkpoint '%s' (epoch %d, batch %d, best_rsum %.2f)", path, self.start_epoch,
                    self.start_batch, self.best_rsum)

    # -------------------------------------------------------------------------------------- training
    def step(self, batch: Batch) -> DimeLoss:
        """One optimisation step on ``batch``."""
        self.ddp.train()
        batch = batch.to(self.device)
        with self.amp.autocast():
            out = self.ddp(batch.images, batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.lengths)
        losses = dime_loss(
            out.scores.float(), out.sim_paths.float(), out.bert.float(), margin=self.opt.margin,
            max_violation=self.opt.max_violation, trade_off=self.opt.trade_off, batch_size=self.opt.batch_size,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(losses.total)
        self.amp.step(self.optimizer, max_grad_norm=self.opt.grad_clip)
        self.eiters += 1
        return losses

    def train_epoch(self, epoch: int, skip: int) -> None:
        opt = self.opt
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.batch_sampler.skip(skip)
        meters = LogCollector()
        batch_time, data_time = AverageMeter(), AverageMeter()
        n_batches = len(self.batch_sampler)
        end = time.time()
        for i, batch in enumerate(self.loader, start=skip):
            data_time.update(time.time() - end, 1)
            with signals_deferred():
                losses = self.step(batch)
                self.position = (epoch, i + 1)
            n_img = batch.images.shape[0]
            meters.update("Eit", self.eiters)
            meters.update("lr", self.optimizer.param_groups[0]["lr"])
            meters.update("Rank", losses.rank.item(), n_img)
            meters.update("Path", losses.path.item(), n_img)
            meters.update("Le", losses.total.item(), n_img)
            self.result.losses.append(losses.total.item())
            batch_time.update(time.time() - end, 1)
            end = time.time()
            if self.eiters % opt.log_step == 0:
                logger.info("Epoch: [%d][%d/%d]\t%s\tTime %.3f (%.3f)\tData %.3f (%.3f)", epoch, i, n_batches, meters,
                            batch_time.val, batch_time.avg, data_time.val, data_time.avg)
            for name, value in (("epoch", epoch), ("step", i), ("batch_time", batch_time.val),
                                ("data_time", data_time.val)):
                self.tb.log_value(name, value, step=self.eiters)
            meters.tb_log(self.tb, step=self.eiters)
            if self.eiters % opt.val_step == 0:
                self.validate_and_save()

    def validate(self) -> tuple[float, float]:
        """Dev recalls (rank 0); returns ``(r1 + r5 + r1i + r5i, r1)``."""
        t0 = time.time()
        enc = encode_split(self.model, self.dev_split, self.tokenizer, self.opt.max_words, self.opt.batch_size,
                           0, self.device, self.opt.fp16)
        logger.info("encode_data elapses: %.2fs", time.time() - t0)
        shard = self.opt.shard_size or 2 * self.opt.batch_size
        result, _ = evaluate_encoded([self.model], [enc], FLICKR_PROTOCOL, shard, self.device, self.opt.fp16)
        self.result.last_validation = result
        (r1, r5, r10, medr, meanr), (r1i, r5i, r10i, medri, meanri) = result.i2t, result.t2i
        logger.info("Image to text: %.1f, %.1f, %.1f, %.1f, %.1f", r1, r5, r10, medr, meanr)
        logger.info("Text to image: %.1f, %.1f, %.1f, %.1f, %.1f", r1i, r5i, r10i, medri, meanri)
        currscore = result.selection_rsum
        for name, value in (("r1", r1), ("r5", r5), ("r10", r10), ("medr", medr), ("meanr", meanr), ("r1i", r1i),
                            ("r5i", r5i), ("r10i", r10i), ("medri", medri), ("meanri", meanri),
                            ("rsum", currscore)):
            self.tb.log_value(name, value, step=self.eiters)
        return currscore, r1

    def validate_and_save(self) -> None:
        if self.dist.is_main:
            rsum, r1 = self.validate()
            is_best = rsum > self.best_rsum
            self.best_rsum = max(rsum, self.best_rsum)
            self.best_r1 = max(r1, self.best_r1)
            self.save(is_best)
        barrier()

    def fit(self) -> TrainResult:
        opt = self.opt
        if self.dist.is_main:
            logger.info("%s", format_options(opt))
        with SaveOnSignal(self.save_on_signal, DEFERRED_SIGNALS):
            for epoch in range(self.start_epoch, opt.num_epochs):
                lr = learning_rate_at(opt, epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                skip = self.start_batch if epoch == self.start_epoch else 0
                self.position = (epoch, skip)
                self.train_epoch(epoch, skip)
                self.position = (epoch + 1, 0)
                self.validate_and_save()
        self.tb.close()
        self.result.eiters = self.eiters
        self.result.best_rsum = self.best_rsum
        return self.result


def run(opt: argparse.Namespace) -> TrainResult:
    """Train with the options of :func:`itr_dime.options.parse_train_args` (any process of a torchrun world)."""
    dist = init_distributed(device=opt.device)
    setup_logging(dist.rank)
    try:
        return Trainer(opt, dist).fit()
    finally:
        shutdown()


def train(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse ``argv`` as ``train.py`` does and train; returns the :class:`TrainResult` (tests, Python API)."""
    return run(parse_train_args(argv))


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``dime-train`` / ``python train.py`` / ``python -m itr_dime.train``: exit status 0 on success."""
    train(argv)


if __name__ == "__main__":
    main()
