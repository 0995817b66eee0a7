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

import torch

from itr_common.checkpoint import load_state_dict_mapped
from itr_common.data.precomp import PrecompSplit
from itr_common.dist import DistInfo, init_distributed, shutdown_after
from itr_common.errors import cli_entry, fail, require_dir, require_file
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.training import ScanTrainer, TrainResult
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

__all__ = ["Trainer", "TrainResult", "main_camera", "main_vsrn", "run"]


class Trainer(ScanTrainer):
    """One training run of a variant on this process (part of a torchrun world or alone)."""

    log = logger
    checkpoint_file = CHECKPOINT_FILE
    save_checkpoint = staticmethod(save_checkpoint)

    def __init__(self, variant: str, opt: argparse.Namespace, dist: DistInfo) -> None:
        super().__init__(opt, dist)
        self.variant = variant
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
        self.params = self.model.trainable_parameters()
        self.setup_optimisation(self.params)
        self.gamma = opt.lr_decay_gamma if camera else 0.1
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
        state.update(self.progress_state(epoch, batch))
        return state

    def load_model_state(self, state: dict, path: str) -> None:
        load_original_state_dict(self.model, list(state["model"]), path)
        if "caption_model" in state:
            load_state_dict_mapped(self.model.caption_model, state["caption_model"], source=f"{path} ['caption_model']")
        elif self.variant == "vsrn":
            logger.warning("%s: no 'caption_model' (an original VSRN checkpoint): the caption decoder starts afresh",
                           path)

    # -------------------------------------------------------------------------------------- training
    def step(self, batch, epoch: int) -> Losses:
        """One optimisation step: forward, backward, unscale, clip over every parameter, (CAMERA+SelfAlign,
        epoch 0) drop the prototypes' gradients, Adam step."""
        self.ddp.train()
        batch = batch.to(self.device)
        with self.amp.autocast():
            losses = self.ddp(batch, self.max_violation_at(epoch))
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

    def loss_meters(self, losses: Losses, batch) -> list[tuple[str, float, int]]:
        return [(name, value, len(batch)) for name, value in losses.items().items()]

    def evaluate_dev(self) -> RetrievalResult:
        t0 = time.time()
        enc = encode_split(self.model, self.dev_split, self.dev_set, self.opt.batch_size, self.device, self.opt.fp16)
        logger.info("encode_data elapses: %.2fs", time.time() - t0)
        return evaluate_encoded(enc, FLICKR_PROTOCOL, chunk=self.opt.eval_chunk or None, device=self.device)


def run(variant: str, opt: argparse.Namespace) -> TrainResult:
    """Train ``variant`` (``camera`` | ``vsrn``) with parsed options (any process of a torchrun world)."""
    check_device(opt.device)
    dist = init_distributed(device=opt.device)
    setup_logging(dist.rank)
    with shutdown_after():
        return Trainer(variant, opt, dist).fit()


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
