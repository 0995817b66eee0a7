"""``train_SelfAlign.py`` (alias ``train.py``) of both variants: the README's training commands.

    cd camera_SelfAlign && python train.py --data_path $DATA_PATH --bert_path $BERT_PATH \\
        --logger_name runs/flickr --data_name f30k_precomp --num_epochs 30 --lr_update 10
    cd vsrn_SelfAlign && python train.py --data_path $DATA_PATH --logger_name runs/flickr \\
        --data_name f30k_precomp --lr_update 10
    ... --selfalign 0                                   # the plain CAMERA / VSRN baseline, same code
    torchrun --nproc_per_node N train.py ...            # several processes (DDP, DistributedSampler)

Every epoch: ``lr = learning_rate * gamma ** (epoch // lr_update)`` (gamma = ``--lr_decay_gamma`` for
CAMERA, 0.1 for VSRN), one pass over ``train`` with Adam and gradient clipping (CAMERA+SelfAlign: the
prototypes' gradients are dropped after clipping during epoch 0, as the original), validation on ``dev``
(r1 + r5 + r1i + r5i) every ``val_step`` iterations and at the end of the epoch, each validation saving
``checkpoint.pth.tar`` (and ``model_best.pth.tar``) under ``--logger_name``. ``--resume`` continues
exactly where a run stopped (epoch, batch, optimizer, RNG); SIGINT/SIGTERM save, then exit (130/143).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import SaveOnSignal, capture_rng_state, load_state_dict_mapped, restore_rng_state
from itr_common.data.precomp import PrecompSplit
from itr_common.dist import DistInfo, barrier, init_distributed, shutdown, wrap_model
from itr_common.errors import cli_entry, fail, require_dir, require_file
from itr_common.logging import AverageMeter, LogCollector, TensorBoardLogger, setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.training import DEFERRED_SIGNALS, format_options, signals_deferred, step_decay_lr
from itr_common.validation import check_device, require_writable
from itr_selfalign.checkpoints import (
    CHECKPOINT_FILE,
    checkpoint_options,
    load_original_state_dict,
    original_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from itr_selfalign.data import CameraDataset, VsrnDataset, train_loader
from itr_selfalign.evaluation import FLICKR_PROTOCOL, encode_split, evaluate_encoded
from itr_selfalign.losses import Losses
from itr_selfalign.models import build_model, read_vocab
from itr_selfalign.options import parse_train_args

logger = logging.getLogger("itr_selfalign.train")


@dataclass
class TrainResult:
    """Per-iteration total losses of this process, the last dev result, the best dev score."""

    losses: list[float] = field(default_factory=list)
    eiters: int = 0
    best_rsum: float = 0.0
    last_validation: RetrievalResult | None = None
    checkpoint: Path | None = None


class Trainer:
    """One training run of a variant on this process (part of a torchrun world or alone)."""

    def __init__(self, variant: str, opt: argparse.Namespace, dist: DistInfo) -> None:
        self.variant, self.opt, self.dist, self.device = variant, opt, dist, dist.device
        camera = variant == "camera"
        if opt.resume:
            require_file(opt.resume, "checkpoint (--resume)")
            resume_state = read_checkpoint(opt.resume, variant, map_location="cpu")
            saved = checkpoint_options(resume_state, variant)
            if int(saved.selfalign) != int(opt.selfalign):
                fail(f"{opt.resume}: expected a {'SelfAlign' if opt.selfalign else 'base'} checkpoint "
                     f"(--selfalign {opt.selfalign}), found a {'SelfAlign' if saved.selfalign else 'base'} one")
        else:
            resume_state = None
        splits = {s: PrecompSplit(opt.data_path, opt.data_name, s, require_boxes=camera) for s in ("train", "dev")}
        for name, split in splits.items():
            dim = split.images.shape[2]
            if dim != opt.img_dim:
                fail(f"--img_dim: expected {dim} (the feature size of {split.files['ims']}), found {opt.img_dim}")
            if name == "dev" and split.images.shape[1] != splits["train"].images.shape[1]:
                fail(f"{split.files['ims']}: expected {splits['train'].images.shape[1]} regions like train, "
                     f"found {split.images.shape[1]}")
        if camera:
            require_dir(opt.bert_path, "BERT directory (--bert_path)")
            self.text = load_bert_tokenizer(opt.bert_path)
            make = lambda split: CameraDataset(split, self.text, opt.max_words)  # noqa: E731
        else:
            self.text = read_vocab(opt)
            opt.vocab_size = len(self.text)
            make = lambda split: VsrnDataset(split, self.text, opt.max_len)  # noqa: E731
        if dist.is_main:
            require_writable(opt.logger_name, "--logger_name")
        self.train_set, self.dev_set = make(splits["train"]), make(splits["dev"])
        self.dev_split = splits["dev"]
        torch.manual_seed(opt.seed)
        self.loader, self.sampler, self.batch_sampler = train_loader(
            self.train_set, opt.batch_size, opt.workers, dist.rank, dist.world_size, seed=opt.seed)
        if not camera:
            opt.iters_per_epoch = len(self.batch_sampler)
        self.model = build_model(variant, opt).to(self.device)
        self.ddp = wrap_model(self.model, find_unused_parameters=True)
        torch.manual_seed(opt.seed + 1000 * dist.rank)
        self.params = self.model.trainable_parameters()
        self.optimizer = torch.optim.Adam(self.params, lr=opt.learning_rate)
        self.amp = Amp(AmpConfig.from_original(fp16=opt.fp16, device=self.device))
        self.tb = TensorBoardLogger(opt.logger_name, flush_secs=5, enabled=dist.is_main)
        self.gamma = opt.lr_decay_gamma if camera else 0.1
        self.eiters, self.best_rsum, self.best_r1 = 0, 0.0, 0.0
        self.start_epoch = self.start_batch = 0
        self.position = (0, 0)
        self.result = TrainResult()
        if resume_state is not None:
            self.resume(opt.resume, resume_state)

    # ----------------------------------------------------------------------------------- checkpoints
    def state(self, epoch: int, batch: int) -> dict:
        state = {"epoch": epoch + (1 if batch > 0 else 0), "model": original_state_dict(self.model),
                 "best_rsum": self.best_rsum}
        if self.variant == "camera":
            state["best_r1"] = self.best_r1
        state.update(opt=self.opt, Eiters=self.eiters)
        if self.variant == "vsrn":
            state["caption_model"] = self.model.caption_model.state_dict()
        state.update(optimizer=self.optimizer.state_dict(), amp=self.amp.state_dict(), rng=capture_rng_state(),
                     resume={"epoch": epoch, "batch": batch})
        return state

    def save(self, is_best: bool) -> None:
        if self.dist.is_main:
            self.result.checkpoint = save_checkpoint(self.state(*self.position), is_best, self.opt.logger_name)

    def save_on_signal(self) -> None:
        logger.warning("signal received: saving %s/%s at epoch %d, batch %d", self.opt.logger_name, CHECKPOINT_FILE,
                       *self.position)
        self.save(is_best=False)

    def resume(self, path: str, state: dict) -> None:
        logger.info("=> loading checkpoint '%s'", path)
        load_original_state_dict(self.model, list(state["model"]), path)
        if "caption_model" in state:
            load_state_dict_mapped(self.model.caption_model, state["caption_model"], source=f"{path} ['caption_model']")
        elif self.variant == "vsrn":
            logger.warning("%s: no 'caption_model' (an original VSRN checkpoint): the caption decoder starts afresh",
                           path)
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
    def step(self, batch, epoch: int) -> Losses:
        """One optimisation step: forward, backward, unscale, clip over every parameter, (CAMERA+SelfAlign,
        epoch 0) drop the prototypes' gradients, Adam step."""
        self.ddp.train()
        batch = batch.to(self.device)
        with self.amp.autocast():
            losses = self.ddp(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(losses.total)
        scaler = self.amp.scaler
        scaler.unscale_(self.optimizer)
        if self.opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], self.opt.grad_clip)
        if self.variant == "camera" and epoch < 1:
            for p in self.model.prototype_parameters():
                p.grad = None
        scaler.step(self.optimizer)
        scaler.update()
        self.eiters += 1
        return losses

    def train_epoch(self, epoch: int, skip: int) -> None:
        opt = self.opt
        self.sampler.set_epoch(epoch)
        self.batch_sampler.skip(skip)
        meters = LogCollector()
        batch_time, data_time = AverageMeter(), AverageMeter()
        n_batches = len(self.batch_sampler)
        end = time.time()
        for i, batch in enumerate(self.loader, start=skip):
            data_time.update(time.time() - end, 1)
            with signals_deferred():
                losses = self.step(batch, epoch)
                self.position = (epoch, i + 1)
            meters.update("Eit", self.eiters)
            meters.update("lr", self.optimizer.param_groups[0]["lr"])
            for name, value in losses.items().items():
                meters.update(name, value, len(batch))
            self.result.losses.append(float(losses.total.detach()))
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
        t0 = time.time()
        enc = encode_split(self.model, self.dev_split, self.dev_set, self.opt.batch_size, self.device, self.opt.fp16)
        logger.info("encode_data elapses: %.2fs", time.time() - t0)
        result = evaluate_encoded(enc, FLICKR_PROTOCOL, chunk=self.opt.eval_chunk or None, device=self.device)
        self.result.last_validation = result
        (r1, r5, r10, medr, meanr), (r1i, r5i, r10i, medri, meanri) = result.i2t, result.t2i
        logger.info("Image to text: %.1f, %.1f, %.1f, %.1f, %.1f", r1, r5, r10, medr, meanr)
        logger.info("Text to image: %.1f, %.1f, %.1f, %.1f, %.1f", r1i, r5i, r10i, medri, meanri)
        score = result.selection_rsum
        for name, value in (("r1", r1), ("r5", r5), ("r10", r10), ("medr", medr), ("meanr", meanr), ("r1i", r1i),
                            ("r5i", r5i), ("r10i", r10i), ("medri", medri), ("meanri", meanri), ("rsum", score)):
            self.tb.log_value(name, value, step=self.eiters)
        return score, r1

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
                for group in self.optimizer.param_groups:
                    group["lr"] = step_decay_lr(opt.learning_rate, epoch, opt.lr_update, self.gamma)
                skip = self.start_batch if epoch == self.start_epoch else 0
                self.position = (epoch, skip)
                self.train_epoch(epoch, skip)
                self.position = (epoch + 1, 0)
                self.validate_and_save()
        self.tb.close()
        self.result.eiters, self.result.best_rsum = self.eiters, self.best_rsum
        return self.result


def run(variant: str, opt: argparse.Namespace) -> TrainResult:
    """Train ``variant`` (``camera`` | ``vsrn``) with parsed options (any process of a torchrun world)."""
    check_device(opt.device)
    dist = init_distributed(device=opt.device)
    setup_logging(dist.rank)
    try:
        return Trainer(variant, opt, dist).fit()
    finally:
        shutdown()


def _prog() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else "train_SelfAlign.py"


@cli_entry
def main_camera(argv: Sequence[str] | None = None) -> None:
    """``selfalign-camera-train`` / ``camera_SelfAlign/train_SelfAlign.py`` / ``train.py``."""
    run("camera", parse_train_args("camera", argv, _prog()))


@cli_entry
def main_vsrn(argv: Sequence[str] | None = None) -> None:
    """``selfalign-vsrn-train`` / ``vsrn_SelfAlign/train_SelfAlign.py`` / ``train.py``."""
    run("vsrn", parse_train_args("vsrn", argv, _prog()))


if __name__ == "__main__":  # python -m itr_selfalign.train {camera,vsrn} ...
    if len(sys.argv) < 2 or sys.argv[1] not in ("camera", "vsrn"):
        sys.exit("usage: python -m itr_selfalign.train {camera,vsrn} [train_SelfAlign.py flags]")
    {"camera": main_camera, "vsrn": main_vsrn}[sys.argv[1]](sys.argv[2:])
