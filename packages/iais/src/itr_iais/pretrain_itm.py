"""Stand-in for ``uniter-base.pt`` on the synthetic world: UNITER's ITM pre-training task.

IAIS fine-tunes a *pre-trained* UNITER whose ITM head already tells matching pairs from random ones
(``init_output`` starts the ranking head from it). The synthetic world's ``uniter-tiny.pt`` has the
released key layout but random weights, and hard-negative ranking from random weights collapses:
with no signal, equal scores for every pair minimise the hinge on the hardest negatives, and the
model stays there. This script gives the tiny model what pre-training gives the real one, with
UNITER's own ITM task (ChenRocks/UNITER ``model/pretrain.py`` ``forward_itm`` and ``data/itm.py``
``ItmDataset``): each caption is paired with its image or, with probability ``neg_sample_p``
(0.5), a random other image, and ``itm_output`` (Linear(H, 2)) is trained with cross-entropy.
The output is a plain state dict in the ``uniter-base.pt`` key layout (``uniter.*``, ``itm_output.*``)
that ``train_itm_hard_negatives.py --checkpoint`` loads.

    iais-pretrain-itm --txt_db synthetic/txt_db/itm_flickr30k_train.db --img_db synthetic/img_db/flickr30k \\
        --model_config synthetic/pretrained/uniter-tiny.json --output output/pretrained/uniter-tiny-itm.pt

``--initializer_range`` re-draws the weights (no ``--checkpoint``) at that std: BERT's 0.02 suits
hidden 768; at hidden 64 it leaves attention uniform and training on a long plateau. With the defaults
(std 0.1, lr 5e-4, no dropout, 1200 updates of 32 pairs) the tiny world takes about 30 s on one CPU
thread and reaches ~95% ITM accuracy on its training pairs.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import load_checkpoint, save_atomic
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.logging import get_logger, setup_logging
from itr_common.models.uniter import UniterConfig, UniterForImageTextRetrieval, load_uniter_state_dict
from itr_common.validation import check_options, integer, number, require_writable
from itr_iais.data import compact_attn_masks, get_gather_index, pad_tensors
from itr_iais.model import batch_to, load_model_config
from itr_iais.optim import build_optimizer, get_lr_sched, set_dropout, set_lr

LOGGER = get_logger(__name__)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="iais-pretrain-itm", description=__doc__.split("\n\n")[0])
    p.add_argument("--txt_db", nargs="+", required=True, help="training txt_db directories")
    p.add_argument("--img_db", nargs="+", required=True, help="img_db directory per txt_db")
    p.add_argument("--model_config", required=True, help="uniter-*.json")
    p.add_argument("--checkpoint", default=None, help="start from these weights instead of a fresh init")
    p.add_argument("--initializer_range", type=float, default=0.1, help="std of a fresh init (no --checkpoint)")
    p.add_argument("--output", required=True, help="where the uniter-base.pt-format state dict goes")
    p.add_argument("--train_batch_size", type=int, default=32, help="pairs per update")
    p.add_argument("--neg_sample_p", type=float, default=0.5, help="probability of a random (negative) image")
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--num_train_steps", type=int, default=1200)
    p.add_argument("--warmup_steps", type=int, default=100)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.98])
    p.add_argument("--grad_norm", type=float, default=5.0)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="every dropout layer (0 leaves the plateau sooner; the fine-tuning config sets its own)")
    p.add_argument("--max_txt_len", type=int, default=60)
    p.add_argument("--conf_th", type=float, default=0.2)
    p.add_argument("--max_bb", type=int, default=100)
    p.add_argument("--min_bb", type=int, default=10)
    p.add_argument("--num_bb", type=int, default=36)
    p.add_argument("--compressed_db", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    return p


class ItmPairs:
    """Captions of one or more txt_dbs with their images in memory; random ITM batches."""

    def __init__(self, opts: argparse.Namespace) -> None:
        if len(opts.txt_db) != len(opts.img_db):
            fail(f"--txt_db/--img_db: expected one img_db per txt_db, found {len(opts.txt_db)} and {len(opts.img_db)}")
        self.texts: list[tuple[torch.Tensor, str, int]] = []  # (input_ids, image name, db index)
        self.images: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        for index, (txt_path, img_path) in enumerate(zip(opts.txt_db, opts.img_db)):
            txt_db = TxtTokLmdb(txt_path, opts.max_txt_len)
            img_db = DetectFeatLmdb(img_path, opts.conf_th, opts.max_bb, opts.min_bb, opts.num_bb, opts.compressed_db)
            names = list(txt_db.img2txts)
            self.images.append({name: img_db[name] for name in names})
            txt2img = txt_db.txt2img
            self.texts += [(txt_db.combine_inputs(txt_db[t]["input_ids"]), txt2img[t], index) for t in txt_db.ids]
        self.names = [list(images) for images in self.images]

    @property
    def feature_dim(self) -> int:
        first = next(iter(self.images[0].values()))
        return int(first[0].shape[1])

    def batch(self, size: int, neg_sample_p: float) -> tuple[dict, torch.Tensor]:
        """``size`` random captions, each with its image (label 1) or a random other image (label 0)."""
        picks = random.sample(self.texts, min(size, len(self.texts)))
        ids, feats, poss, labels = [], [], [], []
        for input_ids, name, db in picks:
            label = int(random.random() >= neg_sample_p)
            if not label:
                name = random.choice([n for n in self.names[db] if n != name])
            feat, pos = self.images[db][name]
            ids.append(input_ids)
            feats.append(feat)
            poss.append(pos)
            labels.append(label)
        txt_lens, nbbs = [t.size(0) for t in ids], [f.size(0) for f in feats]
        input_ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)
        attn = compact_attn_masks(txt_lens, nbbs)
        batch = {
            "input_ids": input_ids,
            "position_ids": torch.arange(input_ids.size(1)).unsqueeze(0),
            "img_feat": pad_tensors(feats, nbbs),
            "img_pos_feat": pad_tensors(poss, nbbs),
            "attn_masks": attn,
            "gather_index": get_gather_index(txt_lens, nbbs, input_ids.size(1), attn.size(1)),
        }
        return batch, torch.tensor(labels)


def itm_logits(model: UniterForImageTextRetrieval, batch: dict) -> torch.Tensor:
    """``itm_output`` on the pooled [CLS]: (B, 2)."""
    out = model.uniter(batch["input_ids"], batch["position_ids"], batch["img_feat"], batch["img_pos_feat"],
                       batch["attn_masks"], batch["gather_index"])
    return model.itm_output(model.uniter.pooler(out.sequence_output))


def build_model(opts: argparse.Namespace, feature_dim: int) -> UniterForImageTextRetrieval:
    if opts.checkpoint:
        state = load_checkpoint(opts.checkpoint)
        model = UniterForImageTextRetrieval(load_model_config(opts.model_config, state, feature_dim))
        load_uniter_state_dict(model, state, source=str(opts.checkpoint))
        return model
    config = load_model_config(opts.model_config, None, feature_dim)
    return UniterForImageTextRetrieval(UniterConfig.from_dict({**config.to_dict(),
                                                               "initializer_range": opts.initializer_range}))


def run(opts: argparse.Namespace) -> dict[str, float]:
    """Pre-train; returns the final running ITM loss and accuracy."""
    setup_logging(0)
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    pairs = ItmPairs(opts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(opts, pairs.feature_dim).to(device).train()
    set_dropout(model, opts.dropout)
    optimizer = build_optimizer(model, "adamw", opts.learning_rate, opts.betas, opts.weight_decay)
    amp = Amp(AmpConfig.from_original(fp16=opts.fp16, device=device))
    loss_avg, acc_avg, start = 0.693, 0.5, time.time()
    for step in range(1, opts.num_train_steps + 1):
        batch, labels = pairs.batch(opts.train_batch_size, opts.neg_sample_p)
        batch, labels = batch_to(batch, device), labels.to(device)
        with amp.autocast():
            logits = itm_logits(model, batch)
        loss = F.cross_entropy(logits.float(), labels)
        amp.backward(loss)
        set_lr(optimizer, get_lr_sched(step, opts.learning_rate, opts.warmup_steps, opts.num_train_steps))
        amp.step(optimizer, max_grad_norm=opts.grad_norm)
        optimizer.zero_grad(set_to_none=True)
        loss_avg = 0.98 * loss_avg + 0.02 * loss.item()
        acc_avg = 0.98 * acc_avg + 0.02 * (logits.argmax(-1) == labels).float().mean().item()
        if step % 100 == 0 or step == opts.num_train_steps:
            LOGGER.info("ITM step %d: loss %.3f, accuracy %.3f (%.0f s)", step, loss_avg, acc_avg, time.time() - start)
    out = Path(opts.output)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("rank_output")}
    save_atomic(state, out)
    LOGGER.info("wrote %s (uniter-base.pt key layout)", out)
    return {"itm_loss": loss_avg, "itm_accuracy": acc_avg}


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if not Path(opts.model_config).is_file():
        fail(f"--model_config {opts.model_config}: file not found")
    check_options(opts, {"train_batch_size": integer(1), "num_train_steps": integer(1), "warmup_steps": integer(0),
                         "learning_rate": number(above=0), "neg_sample_p": number(0, 1),
                         "weight_decay": number(low=0), "initializer_range": number(above=0)})
    require_writable(opts.output, "--output", kind="file")
    run(opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
