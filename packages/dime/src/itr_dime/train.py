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

import torch

from itr_common.data.precomp import PrecompSplit
from itr_common.dist import DistInfo, init_distributed, shutdown_after
from itr_common.errors import cli_entry, fail, require_dir, require_file
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.training import ScanTrainer, TrainResult
from itr_common.validation import check_same_size, require_writable
from itr_dime.checkpoints import CHECKPOINT_FILE, read_checkpoint, save_checkpoint
from itr_dime.data import Batch, DimeCaptionDataset, train_loader
from itr_dime.evaluation import FLICKR_PROTOCOL, encode_split, evaluate_encoded
from itr_dime.losses import DimeLoss, dime_loss
from itr_dime.model import DIME
from itr_dime.options import parse_train_args

logger = logging.getLogger("itr_dime.train")

__all__ = ["Trainer", "TrainResult", "main", "run", "train"]

class Trainer(ScanTrainer):
    """One training run of :class:`DIME` on this process (part of a torchrun world or alone)."""

    log = logger
    checkpoint_file = CHECKPOINT_FILE
    save_checkpoint = staticmethod(save_checkpoint)

    def __init__(self, opt: argparse.Namespace, dist: DistInfo) -> None:
        super().__init__(opt, dist)
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
        self.setup_optimisation(self.model.trainable_parameters())
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
            **self.progress_state(epoch, batch),
        }

    def resume(self, path: str, state: dict | None = None) -> None:
        super().resume(path, read_checkpoint(path, map_location=self.device) if state is None else state)

    def load_model_state(self, state: dict, path: str) -> None:
        self.model.load_original_state_dict(state["model"], source=path)

    # -------------------------------------------------------------------------------------- training
    def step(self, batch: Batch, epoch: int = 0) -> DimeLoss:
        """One optimisation step on ``batch``."""
        self.ddp.train()
        batch = batch.to(self.device)
        with self.amp.autocast():
            out = self.ddp(batch.images, batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.lengths)
        losses = dime_loss(
            out.scores.float(), out.sim_paths.float(), out.bert.float(), margin=self.opt.margin,
            max_violation=self.max_violation_at(epoch), trade_off=self.opt.trade_off, batch_size=self.opt.batch_size,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(losses.total)
        self.amp.step(self.optimizer, max_grad_norm=self.opt.grad_clip)
        self.eiters += 1
        return losses

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.train_set.set_epoch(epoch)

    def loss_meters(self, losses: DimeLoss, batch: Batch) -> list[tuple[str, float, int]]:
        n_img = batch.images.shape[0]
        return [("Rank", losses.rank.item(), n_img), ("Path", losses.path.item(), n_img),
                ("Le", losses.total.item(), n_img)]

    def evaluate_dev(self) -> RetrievalResult:
        t0 = time.time()
        enc = encode_split(self.model, self.dev_split, self.tokenizer, self.opt.max_words, self.opt.batch_size,
                           0, self.device, self.opt.fp16)
        logger.info("encode_data elapses: %.2fs", time.time() - t0)
        shard = self.opt.shard_size or 2 * self.opt.batch_size
        result, _ = evaluate_encoded([self.model], [enc], FLICKR_PROTOCOL, shard, self.device, self.opt.fp16)
        return result


def run(opt: argparse.Namespace) -> TrainResult:
    """Train with the options of :func:`itr_dime.options.parse_train_args` (any process of a torchrun world)."""
    dist = init_distributed(device=opt.device)
    setup_logging(dist.rank)
    with shutdown_after():
        return Trainer(opt, dist).fit()


def train(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse ``argv`` as ``train.py`` does and train; returns the :class:`TrainResult` (tests, Python API)."""
    return run(parse_train_args(argv))


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``dime-train`` / ``python train.py`` / ``python -m itr_dime.train``: exit status 0 on success."""
    train(argv)


if __name__ == "__main__":
    main()
