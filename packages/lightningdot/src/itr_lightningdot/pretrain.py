"""``python pretrain.py --config config/pretrain-alldata-base.json``: LightningDOT pre-training.

``BiEncoderForPretraining`` (``dvl/models/bi_encoder.py``) over the bi-encoder, one task per step drawn
by ``mix_ratio`` (UNITER's MetaLoader):

- ``itm`` (CMR, cross-modal retrieval): the in-batch NLL of fine-tuning, both directions, on the
  projected [CLS] embeddings;
- ``mlm`` (VMLM): 15% of the caption's tokens masked (80% [MASK], 10% random, 10% kept), the text tower's
  outputs fused with the image tower's [CLS] output (``cls_concat``: ``add``, ``multiply`` or none) and
  decoded by the MLM head whose decoder is tied to the image tower's word embeddings (as the original);
- ``mrfr`` (SMRM, regression): ``mrm_prob`` of the regions zeroed (+ the mask embedding), the image
  tower's outputs fused with the text [CLS] and regressed to the input features through a head tied to
  ``img_linear`` (MSE);
- ``mrckl`` / ``mrc`` (SMRM, classification): the same masking, KL divergence to the detector's soft
  labels (``mrckl``) or cross entropy on their argmax without the background class (``mrc``).

Task losses are ``mean()`` over their elements as the original; AdamW (UNITER's, eps 1e-6) with the
config's betas and weight decay, linear warmup then linear decay, clipping at ``grad_norm``, gradient
accumulation. Batches are bucketed by tokens (``train_batch_size`` = tokens per batch). Checkpoints:
``{output_dir}/ckpt/model_step_{N}.pt`` is the released ``LightningDot.pt`` layout (``bert.*`` + heads),
``train_state_{N}.pt`` beside it; a non-empty output_dir continues from its last step (the original's
behaviour), exactly (RNG, task stream and data position are part of the state; with N processes each rank
R > 0 keeps its own in ``train_state_{N}.rankR.pt``). SIGINT/SIGTERM save the last update boundary as
``model_step_{N}.pt`` + ``train_state_{N}.pt`` and exit (130/143); under torchrun a signal to any rank stops every
rank at the same update, where they agree on it (``SaveOnSignal.at_boundary``).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from itr_common import dist
from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import SaveOnSignal, capture_rng_state, load_checkpoint, restore_rng_state, save_atomic
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import ArgumentParser, cli_entry, fail, require_dir
from itr_common.fileio import write_json_atomic
from itr_common.logging import setup_logging
from itr_common.models.uniter import gelu
from itr_common.optim import AdamW
from itr_common.rank_state import load_rank_state, save_rank_state
from itr_common.training import signals_deferred
from itr_lightningdot.build import build_model, check_img_dbs, pick_device, writable_dir
from itr_lightningdot.data import ImageDbGroup, _text_inputs, image_batch, move_batch
from itr_lightningdot.losses import BiEncoderNllLoss, calc_loss
from itr_lightningdot.model import BiEncoder
from itr_lightningdot.optim import linear_factor
from itr_lightningdot.options import CLS_CONCAT, map_db_dirs, map_db_path, parse_with_config, resolve_bundled

LOGGER = logging.getLogger("itr_lightningdot.pretrain")
TASKS = ("itm", "mlm", "mrfr", "mrckl", "mrc")
IMG_LABEL_DIM = 1601
BUCKET_SIZE = 8192
NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
ADAMW_EPS = 1e-6
MIN_LR = 1e-8


# ------------------------------------------------------------------------------------------------ heads


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """transform, then ``decoder`` (weight tied to an embedding matrix, no bias) + ``bias``."""

    def __init__(self, hidden: int, embedding_weights: nn.Parameter) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(hidden)
        self.decoder = nn.Linear(embedding_weights.size(1), embedding_weights.size(0), bias=False)
        self.decoder.weight = embedding_weights
        self.bias = nn.Parameter(torch.zeros(embedding_weights.size(0)))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x)) + self.bias


class BertOnlyMLMHead(nn.Module):
    def __init__(self, hidden: int, embedding_weights: nn.Parameter) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(hidden, embedding_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictions(x)


class RegionFeatureRegression(nn.Module):
    """``net`` (Linear, GELU, LayerNorm) then ``F.linear(h, img_linear.weight.t(), bias)`` (tied)."""

    def __init__(self, hidden: int, feat_dim: int, img_linear_weight: nn.Parameter) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), _Gelu(), nn.LayerNorm(hidden, eps=1e-12))
        self.weight = img_linear_weight
        self.bias = nn.Parameter(torch.zeros(feat_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.net(x), self.weight.t(), self.bias)


class RegionClassification(nn.Module):
    def __init__(self, hidden: int, label_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), _Gelu(), nn.LayerNorm(hidden, eps=1e-12),
                                 nn.Linear(hidden, label_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Gelu(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return gelu(x)


def fuse(seq: Tensor, other_cls: Tensor, cls_concat: str) -> Tensor:
    """``cls_concat``: add / multiply the other tower's [CLS] output (B, H) to every position, or nothing."""
    cls = other_cls[:, None, :]
    if cls_concat == "add":
        return seq + cls
    if cls_concat == "multiply":
        return seq * cls
    if cls_concat == "":
        return seq
    fail(f"cls_concat: expected one of add, multiply or '', found '{cls_concat}'")


class BiEncoderForPretraining(nn.Module):
    """``bert`` (the BiEncoder) + ``cls`` (MLM) + ``feat_regress`` + ``region_classifier`` + ``itm_output``.

    The heads keep PyTorch's default initialisation (the original's ``init_weights`` call is commented out).
    """

    def __init__(self, biencoder: BiEncoder, img_dim: int, img_label_dim: int = IMG_LABEL_DIM,
                 cls_concat: str = "") -> None:
        super().__init__()
        self.bert = biencoder
        hidden = biencoder.img_model.config.hidden_size
        uniter = biencoder.img_model.bert
        self.cls = BertOnlyMLMHead(hidden, uniter.embeddings.word_embeddings.weight)
        self.feat_regress = RegionFeatureRegression(hidden, img_dim, uniter.img_embeddings.img_linear.weight)
        self.region_classifier = RegionClassification(hidden, img_label_dim)
        self.itm_output = nn.Linear(hidden, 2)
        self.cls_concat = cls_concat
        if cls_concat not in CLS_CONCAT:
            fail(f"cls_concat: expected one of add, multiply or '', found '{cls_concat}'")

    def forward(self, batch: dict[str, Any], task: str, gather: bool = False) -> Tensor:
        """The task's loss, ``mean()`` over its elements (the original's ``loss.mean()``)."""
        if task == "itm":
            out = self.bert(batch)
            bs = out.txt.size(0)
            loss_fn = BiEncoderNllLoss()
            a = calc_loss(loss_fn, out.txt.float(), out.img.float(), None, list(range(bs)), 0.0, gather)
            b = calc_loss(loss_fn, out.img.float(), out.txt.float(), None, list(range(bs)), 0.0, gather)
            return a.loss * 0.5 + b.loss * 0.5
        txt = self.bert.encode_text(batch["txts"]).sequence_output
        img = self.bert.encode_image(batch["imgs"]).sequence_output
        if task == "mlm":
            seq = fuse(txt, img[:, 0], self.cls_concat)
            labels = batch["txt_labels"]
            scores = self.cls(seq[labels != -1])
            return F.cross_entropy(scores.float(), labels[labels != -1], reduction="none").mean()
        seq = fuse(img, txt[:, 0], self.cls_concat)
        masked = seq[batch["img_mask_tgt"]]
        if task == "mrfr":
            return F.mse_loss(self.feat_regress(masked).float(), batch["feat_targets"], reduction="none").mean()
        if task.startswith("mrc"):
            logits = self.region_classifier(masked).float()
            targets = batch["label_targets"]
            if "kl" in task:
                return F.kl_div(F.log_softmax(logits, dim=-1), targets, reduction="none").mean()
            hard = targets[:, 1:].argmax(dim=-1) + 1  # the background class is never the target
            return F.cross_entropy(logits, hard, ignore_index=0, reduction="none").mean()
        fail(f"task: expected one of {', '.join(TASKS)}, found '{task}'")


# ------------------------------------------------------------------------------------------------- data


def random_word(tokens: list[int], vocab_range: Sequence[int], mask: int, rng: random.Random
                ) -> tuple[list[int], list[int]]:
    """BERT masking: each token with p 0.15 -> [MASK] (80%), random (10%), kept (10%); at least one masked."""
    tokens = list(tokens)
    labels = []
    for i, token in enumerate(tokens):
        prob = rng.random()
        if prob < 0.15:
            prob /= 0.15
            if prob < 0.8:
                tokens[i] = mask
            elif prob < 0.9:
                tokens[i] = rng.randrange(*vocab_range)
            labels.append(token)
        else:
            labels.append(-1)
    if all(label == -1 for label in labels):
        labels[0] = tokens[0]
        tokens[0] = mask
    return tokens, labels


def img_mask(prob: float, nbb: int, rng: random.Random) -> Tensor:
    mask = [rng.random() < prob for _ in range(nbb)]
    if not any(mask):
        mask[rng.randrange(nbb)] = True
    return torch.tensor(mask)


class PretrainData:
    """One (txt_db, img_db) pair: caption ids, image names and ``lens`` (tokens + regions) for bucketing."""

    def __init__(self, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb) -> None:
        self.txt_db, self.img_db = txt_db, img_db
        self.ids = list(txt_db.ids)
        txt2img = txt_db.txt2img
        self.fnames = [txt2img[i] for i in self.ids]
        absent = sorted({f for f in self.fnames if f not in img_db})
        if absent:
            fail(f"{img_db.img_dir}: expected the images of {txt_db.db_dir}, missing {len(absent)} (e.g. {absent[0]})")
        self.lens = [txt_db.id2len[i] + 2 + img_db.name2nbb[f] + 1 for i, f in zip(self.ids, self.fnames)]

    def collate(self, indices: Sequence[int], task: str, mrm_prob: float, rng: random.Random) -> dict[str, Any]:
        texts, labels, feats, poss, masks, softs = [], [], [], [], [], []
        for i in indices:
            ids = [int(x) for x in self.txt_db[self.ids[i]]["input_ids"]]
            if task == "mlm":
                ids, lab = random_word(ids, self.txt_db.v_range, self.txt_db.mask, rng)
                labels.append(torch.tensor([-1, *lab, -1]))
            texts.append(self.txt_db.combine_inputs(ids))
            if task.startswith("mrc"):
                raw = self.img_db.get_raw(self.fnames[i])
                if "soft_labels" not in raw:
                    fail(f"{self.img_db.img_dir}: task {task} needs soft_labels, image {self.fnames[i]} has none")
                feat = torch.from_numpy(raw["features"])
                pos = self.img_db[self.fnames[i]][1]
                softs.append(torch.from_numpy(raw["soft_labels"]))
            else:
                feat, pos = self.img_db[self.fnames[i]]
            feats.append(feat)
            poss.append(pos)
            if task in ("mrfr", "mrc", "mrckl"):
                masks.append(img_mask(mrm_prob, feat.size(0), rng))
        batch: dict[str, Any] = {"txts": _text_inputs(texts), "imgs": image_batch(feats, poss)}
        if task == "mlm":
            batch["txt_labels"] = pad_sequence(labels, batch_first=True, padding_value=-1)
        if masks:
            region_masks = pad_sequence(masks, batch_first=True, padding_value=False)
            img = batch["imgs"]
            batch["feat_targets"] = img["img_feat"][region_masks]
            img["img_feat"] = img["img_feat"].masked_fill(region_masks[..., None], 0)
            img["img_masks"] = region_masks.long()
            batch["img_mask_tgt"] = torch.cat([torch.zeros(len(masks), 1, dtype=torch.bool), region_masks], 1)
            if softs:
                soft = pad_sequence(softs, batch_first=True)
                batch["label_targets"] = soft[region_masks]
        return batch


def token_buckets(lens: Sequence[int], batch_tokens: int, rng: random.Random, bucket_size: int = BUCKET_SIZE
                  ) -> list[list[int]]:
    """UNITER's TokenBucketSampler: shuffle, sort each bucket by length, cut batches of at most
    ``batch_tokens`` tokens (max length x size), shuffle the batches."""
    ids = list(range(len(lens)))
    rng.shuffle(ids)
    batches: list[list[int]] = []
    for start in range(0, len(ids), bucket_size):
        bucket = sorted(ids[start:start + bucket_size], key=lambda i: lens[i], reverse=True)
        batch: list[int] = []
        longest = 0
        for i in bucket:
            new_longest = max(longest, lens[i])
            if batch and new_longest * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, new_longest = [], lens[i]
            batch.append(i)
            longest = new_longest
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


@dataclass
class TaskStream:
    """An endless stream of one task's batches over its datasets, restartable from (epoch, position)."""

    name: str
    task: str
    data: list[PretrainData]
    epoch: int = 0
    position: int = 0

    def batches(self, batch_tokens: int, seed: int) -> list[tuple[int, list[int]]]:
        rng = random.Random(f"{seed}-{self.name}-{self.epoch}")
        out = []
        for d, data in enumerate(self.data):
            out += [(d, b) for b in token_buckets(data.lens, batch_tokens, rng)]
        rng.shuffle(out)
        return out

    def next(self, batch_tokens: int, seed: int) -> tuple[PretrainData, list[int]]:
        batches = self.batches(batch_tokens, seed)
        if not batches:
            fail(f"train_batch_size: {batch_tokens} tokens make no batch for task {self.name}")
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.batches(batch_tokens, seed)
        d, indices = batches[self.position]
        self.position += 1
        return self.data[d], indices


# ---------------------------------------------------------------------------------------------- options


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="pretrain.py", description="LightningDOT pre-training (CMR, VMLM, SMRM).")
    p.add_argument("--compressed_db", action="store_true", help="use compressed LMDB")
    p.add_argument("--model_config", type=str, help="(the UNITER config; the towers use img/txt_model_config)")
    p.add_argument("--checkpoint", default=None, type=str, help="(unused by the original)")
    p.add_argument("--output_dir", default=None, type=str, help="checkpoints and logs")
    p.add_argument("--mrm_prob", default=0.15, type=float, help="probability to mask a region (SMRM)")
    p.add_argument("--neg_size", default=128, type=int, help="(MRM-NCE; not implemented in the original)")
    p.add_argument("--nce_temp", default=1.0, type=float, help="(MRM-NCE)")
    p.add_argument("--itm_neg_prob", default=0.5, type=float, help="(UNITER ITM; CMR uses in-batch negatives)")
    p.add_argument("--itm_ot_lambda", default=0.0, type=float, help="(OT; must be 0: the original's OT branch crashed)")
    p.add_argument("--ot_pos_only", action="store_true", help="(OT)")
    p.add_argument("--max_txt_len", type=int, default=60, help="captions longer than this are dropped")
    p.add_argument("--conf_th", type=float, default=0.2, help="threshold for dynamic bounding boxes (-1: fixed)")
    p.add_argument("--max_bb", type=int, default=100, help="max number of bounding boxes")
    p.add_argument("--min_bb", type=int, default=10, help="min number of bounding boxes")
    p.add_argument("--num_bb", type=int, default=36, help="static number of bounding boxes")
    p.add_argument("--train_batch_size", default=4096, type=int, help="tokens per training batch")
    p.add_argument("--val_batch_size", default=4096, type=int, help="tokens per validation batch")
    p.add_argument("--gradient_accumulation_steps", type=int, default=16, help="batches per update")
    p.add_argument("--learning_rate", default=3e-5, type=float, help="peak learning rate")
    p.add_argument("--valid_steps", default=1000, type=int, help="validate and save every X updates")
    p.add_argument("--num_train_steps", default=100000, type=int, help="updates")
    p.add_argument("--optim", default="adamw", choices=["adam", "adamax", "adamw"], help="optimizer")
    p.add_argument("--betas", default=[0.9, 0.98], nargs="+", type=float, help="Adam betas")
    p.add_argument("--decay", default="linear", choices=["linear", "invsqrt"], help="learning-rate decay")
    p.add_argument("--dropout", default=0.1, type=float, help="dropout of every layer")
    p.add_argument("--weight_decay", default=0.01, type=float, help="weight decay")
    p.add_argument("--grad_norm", default=2.0, type=float, help="gradient clipping (-1: none)")
    p.add_argument("--warmup_steps", default=10000, type=int, help="linear warmup updates")
    p.add_argument("--seed", type=int, default=42, help="random seed")
    p.add_argument("--fp16", action="store_true", help="mixed precision (itr_common.amp)")
    p.add_argument("--n_workers", type=int, default=4, help="(batches are built in the main process)")
    p.add_argument("--pin_mem", action="store_true", help="pin memory")
    p.add_argument("--config", required=True, help="JSON config")
    p.add_argument("--project_name", default="debug", type=str, help="experiment name")
    p.add_argument("--project_dim", default=0, type=int, help="projection size of both towers")
    p.add_argument("--txt_model_type", default="bert-base", type=str, help="text tower type")
    p.add_argument("--txt_model_config", default="bert-base", type=str, help="text tower BERT (dir or json)")
    p.add_argument("--txt_checkpoint", default=None, type=str, help="text tower weights")
    p.add_argument("--img_model_type", default="uniter-base", type=str, help="image tower type")
    p.add_argument("--img_model_config", default="uniter-base", type=str, help="UNITER config")
    p.add_argument("--img_checkpoint", default=None, type=str, help="UNITER weights (uniter-base.pt)")
    p.add_argument("--biencoder_checkpoint", default=None, type=str, help="start from this bi-encoder")
    p.add_argument("--cls_concat", default="", type=str, help="VMLM/SMRM fusion: add, multiply or ''")
    p.add_argument("--fix_txt_encoder", action="store_true", help="freeze the text tower")
    p.add_argument("--fix_img_encoder", action="store_true", help="freeze the image tower")
    p.add_argument("--teacher_checkpoint", default=None, type=str, help="(distillation: not supported)")
    p.add_argument("--teacher_config", default=None, type=str, help="(distillation)")
    p.add_argument("--T", default=1.0, type=float, help="(distillation)")
    p.add_argument("--kd_loss_weight", default=0.5, type=float, help="(distillation)")
    p.add_argument("--normalized_logits", action="store_true", help="(unused)")
    p.add_argument("--rank", default=0, type=int, help="(a key of the config; the rank comes from torchrun)")
    p.add_argument("--train_datasets", default=None, type=json.loads, help="JSON list (normally in the config)")
    p.add_argument("--val_datasets", default=None, type=json.loads, help="JSON list (normally in the config)")
    p.add_argument("--txt_db_mapping", default=None, help="replace a leading /db in paths")
    p.add_argument("--img_db_mapping", default=None, help="replace a leading /img in paths")
    p.add_argument("--pretrain_mapping", default=None, help="replace a leading /pretrain in paths")
    return p


def _check_datasets(value: Any, key: str, train: bool) -> list[dict]:
    if not isinstance(value, list) or not value:
        fail(f"{key}: expected a non-empty list of datasets, found {value!r}")
    for k, dset in enumerate(value):
        if not isinstance(dset, dict):
            fail(f"{key}[{k}]: expected an object, found {type(dset).__name__}")
        for field in ("name", "db", "img", "tasks") + (("mix_ratio",) if train else ()):
            if field not in dset:
                fail(f"{key}[{k}]: expected key '{field}', found keys {sorted(dset)}")
        if len(dset["db"]) != len(dset["img"]):
            fail(f"{key}[{k}]: expected one img per db, found {len(dset['db'])} and {len(dset['img'])}")
        if train and len(dset["tasks"]) != len(dset["mix_ratio"]):
            fail(f"{key}[{k}]: expected one mix_ratio per task, found {len(dset['tasks'])} and "
                 f"{len(dset['mix_ratio'])}")
        for task in dset["tasks"]:
            if task not in TASKS:
                fail(f"{key}[{k}].tasks: expected tasks among {', '.join(TASKS)}, found '{task}'"
                     + (" (MRM-NCE raised NotImplementedError in the original)" if "nce" in task else ""))
        for ratio in dset.get("mix_ratio", []):
            if not isinstance(ratio, int) or ratio < 0:
                fail(f"{key}[{k}].mix_ratio: expected non-negative integers, found {ratio!r}")
        for path in [*dset["db"], *dset["img"]]:
            require_dir(path, f"{key}[{k}] ({dset['name']})")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parse_with_config(parser(), argv)
    map_db_dirs(args)
    for key in ("train_datasets", "val_datasets"):
        for dset in getattr(args, key) or []:
            if isinstance(dset, dict):
                for sub in ("db", "img"):
                    dset[sub] = [map_db_path(args, v) for v in dset.get(sub, [])]
    if not args.output_dir:
        fail("output_dir: expected a directory for checkpoints and logs, found none")
    _check_datasets(args.train_datasets, "train_datasets", True)
    if args.val_datasets is not None:
        _check_datasets(args.val_datasets, "val_datasets", False)
    for key in ("train_batch_size", "gradient_accumulation_steps", "valid_steps", "num_train_steps"):
        if getattr(args, key) <= 0:
            fail(f"{key}: expected a positive integer, found {getattr(args, key)}")
    if not 0 < args.mrm_prob < 1:
        fail(f"mrm_prob: expected a probability in (0, 1), found {args.mrm_prob}")
    if args.itm_ot_lambda != 0:
        fail(f"itm_ot_lambda: expected 0 (the original's OT branch of the bi-encoder's ITM read undefined variables "
             f"and crashed; CMR has no word-region alignment), found {args.itm_ot_lambda}")
    if args.optim != "adamw" or args.decay != "linear":
        fail(f"optim/decay: only adamw with linear decay (the config's) is implemented, found {args.optim}/"
             f"{args.decay}")
    if args.teacher_checkpoint:
        fail("teacher_checkpoint: distillation from a UNITER teacher is not supported")
    if args.cls_concat not in CLS_CONCAT:
        fail(f"cls_concat: expected one of add, multiply or '', found '{args.cls_concat}'")
    if len(args.betas) != 2:
        fail(f"betas: expected two numbers, found {args.betas}")
    budget = (args.max_bb if args.conf_th == -1 else args.num_bb) + args.max_txt_len + 2
    if budget > 512:
        fail(f"max_txt_len: expected regions + max_txt_len + 2 <= 512 positions, found {budget}")
    args.img_model_config = resolve_bundled(args.img_model_config)
    args.txt_model_config = resolve_bundled(args.txt_model_config)
    for key in ("img_checkpoint", "txt_checkpoint", "biencoder_checkpoint"):
        value = getattr(args, key)
        if isinstance(value, str) and value.lower() in ("", "none"):
            setattr(args, key, None)
        elif value is not None and not Path(value).is_file():
            fail(f"{key}: expected a file, found '{value}' (missing)")
    if not Path(args.img_model_config).is_file():
        fail(f"img_model_config: expected a UNITER config json, found '{args.img_model_config}'")
    if not Path(args.txt_model_config).exists():
        fail(f"txt_model_config: expected a local BERT directory or config json, found '{args.txt_model_config}'")
    return args


# --------------------------------------------------------------------------------------------- training


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    seen: set[int] = set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if id(param) in seen or not param.requires_grad:
            continue
        seen.add(id(param))
        (no_decay if any(nd in name for nd in NO_DECAY) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, args: argparse.Namespace) -> float:
    lr = args.learning_rate * linear_factor(step, args.warmup_steps, args.num_train_steps)
    return lr if lr > 0 else MIN_LR


def set_dropout(model: nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


@torch.no_grad()
def validate(model: BiEncoderForPretraining, streams: list[TaskStream], args: argparse.Namespace,
             device: torch.device) -> dict[str, float]:
    model.eval()
    out = {}
    for stream in streams:
        rng = random.Random(f"val-{args.seed}-{stream.name}")
        losses = []
        for data in stream.data:
            for indices in token_buckets(data.lens, args.val_batch_size, rng):
                batch = move_batch(data.collate(indices, stream.task, args.mrm_prob, rng), device)
                losses.append(float(model(batch, stream.task)))
        out[stream.name] = sum(losses) / max(len(losses), 1)
    model.train()
    return out


def _streams(datasets: list[dict], args: argparse.Namespace, group: ImageDbGroup, train: bool
             ) -> tuple[list[TaskStream], list[int]]:
    streams, ratios = [], []
    for dset in datasets:
        data = [PretrainData(TxtTokLmdb(db, args.max_txt_len if train else -1), group[img])
                for db, img in zip(dset["db"], dset["img"])]
        for k, task in enumerate(dset["tasks"]):
            streams.append(TaskStream(f"{task}_{dset['name']}", task, data))
            ratios.append(int(dset["mix_ratio"][k]) if train else 1)
    return streams, ratios


def latest_state(ckpt_dir: Path) -> tuple[int, Path, Path] | None:
    steps = sorted(int(p.stem.rsplit("_", 1)[1]) for p in ckpt_dir.glob("train_state_*.pt")
                   if p.stem.rsplit("_", 1)[1].isdigit())  # not the other ranks' train_state_{N}.rank{R}.pt
    for step in reversed(steps):
        model_file, state_file = ckpt_dir / f"model_step_{step}.pt", ckpt_dir / f"train_state_{step}.pt"
        if model_file.is_file():
            return step, model_file, state_file
    return None


def run(args: argparse.Namespace) -> Path:
    info = dist.init_distributed()
    device = pick_device(False, info.device)
    out = writable_dir(args.output_dir, "output_dir")
    ckpt_dir = writable_dir(out / "ckpt", "output_dir/ckpt")
    setup_logging(info.rank, out / "log" / "log.txt")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    biencoder, img_dim = build_model(args)
    group = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)
    streams, ratios = _streams(args.train_datasets, args, group, True)
    val_streams, _ = _streams(args.val_datasets or [], args, group, False)
    check_img_dbs(list(group.dbs.values()), img_dim, "the image tower")
    label_dim = IMG_LABEL_DIM
    for stream in streams:
        if stream.task.startswith("mrc"):
            raw = stream.data[0].img_db.get_raw(stream.data[0].img_db.names[0])
            if "soft_labels" not in raw:
                fail(f"{stream.data[0].img_db.img_dir}: task {stream.task} needs soft_labels, found none")
            label_dim = raw["soft_labels"].shape[1]
    model = BiEncoderForPretraining(biencoder, img_dim, label_dim, args.cls_concat)
    set_dropout(model, args.dropout)
    model.to(device)
    optimizer = AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate, betas=tuple(args.betas),
                      eps=ADAMW_EPS)
    amp = Amp(AmpConfig.from_original(args.fp16, "O2" if args.fp16 else None, device))
    pool = [k for k, r in enumerate(ratios) for _ in range(r)]
    if not pool:
        fail("mix_ratio: expected at least one task with a positive ratio, found none")
    task_rng = random.Random(args.seed)
    global_step, batch_step = 0, 0
    resume = latest_state(ckpt_dir)
    if resume is not None:
        global_step, model_file, state_file = resume
        state = load_checkpoint(state_file)
        model.load_state_dict(load_checkpoint(model_file), strict=True)
        optimizer.load_state_dict(state["optimizer"])
        amp.load_state_dict(state.get("amp", {}))
        task_rng.setstate(_as_random_state(state["task_rng"]))
        own = load_rank_state(state, state_file, info, same=("step",))  # this rank's streams, positions, RNG
        for stream, (epoch, position) in zip(streams, own["streams"]):
            stream.epoch, stream.position = epoch, position
        batch_step = own["batch_step"]
        restore_rng_state(own["rng"])
        LOGGER.info("resumed from %s at step %d", state_file, global_step)
    if info.is_main:
        write_json_atomic(out / "log" / "hps.json", vars(args))

    boundary: dict[str, Any] = {}

    def mark_boundary() -> None:
        """Remember what decides the next update at an update boundary (step, this rank's stream positions, batch
        count, RNG streams, the task draw): what any save until the next update writes (the weights, optimizer and
        AMP state change only at an update; a signal between accumulated batches saves this boundary)."""
        boundary.update(step=global_step, streams=[[s.epoch, s.position] for s in streams], batch_step=batch_step,
                        rng=capture_rng_state(), task_rng=list(_flatten_random_state(task_rng.getstate())))

    def save() -> None:
        """``model_step_{N}.pt`` + ``train_state_{N}.pt`` (rank 0), ``train_state_{N}.rankR.pt`` (rank R > 0) of the
        last boundary."""
        at = dict(boundary)
        if info.is_main:
            save_atomic(model.state_dict(), ckpt_dir / f"model_step_{at['step']}.pt")
        own = {key: at[key] for key in ("step", "streams", "batch_step", "rng")}
        save_rank_state(ckpt_dir / f"train_state_{at['step']}.pt", info, own,
                        lambda: {"optimizer": optimizer.state_dict(), "amp": amp.state_dict(),
                                 "task_rng": at["task_rng"]})

    def save_on_signal() -> str:
        """SaveOnSignal's callback at an update boundary (one process: from the handler, batches run with the
        signals deferred; torchrun: from ``guard.at_boundary()``, on every rank at the same update)."""
        save()
        step = boundary["step"]
        return f"{ckpt_dir / f'train_state_{step}.pt'} at step {step}"

    model.train()
    distributed = info.world_size > 1
    start = time.perf_counter()
    running: dict[str, float] = {}
    LOGGER.info("Running training: %d tasks %s, %d updates", len(streams), [s.name for s in streams],
                args.num_train_steps)
    mark_boundary()
    with SaveOnSignal(save_on_signal, info=info, hint="run again with this output_dir to continue") as guard:
        while global_step < args.num_train_steps:
            with signals_deferred():  # a SIGINT/SIGTERM waits for this batch (and its update)
                stream = streams[task_rng.choice(pool)]
                data, indices = stream.next(args.train_batch_size, args.seed * 1000 + info.rank)
                item_rng = random.Random(f"{args.seed}-{info.rank}-{batch_step}")
                batch = move_batch(data.collate(indices, stream.task, args.mrm_prob, item_rng), device)
                with amp.autocast():
                    loss = model(batch, stream.task, gather=distributed and stream.task == "itm")
                scale = 1.0 if stream.task == "itm" or not distributed else 1.0 / info.world_size
                amp.backward(loss * scale / args.gradient_accumulation_steps)
                running[stream.name] = float(loss.detach())
                batch_step += 1
                if batch_step % args.gradient_accumulation_steps == 0:
                    global_step += 1
                    for g in optimizer.param_groups:
                        g["lr"] = lr_at(global_step, args)
                    if distributed:
                        for p in model.parameters():
                            if p.grad is not None:
                                dist.all_reduce(p.grad, op="sum")
                    amp.step(optimizer, max_grad_norm=args.grad_norm if args.grad_norm != -1 else None)
                    optimizer.zero_grad(set_to_none=True)
                    if global_step % 100 == 0 or global_step == args.num_train_steps:
                        LOGGER.info("step %d (%.0f s): %s", global_step, time.perf_counter() - start,
                                    {k: round(v, 4) for k, v in running.items()})
                    periodic = global_step % args.valid_steps == 0 or global_step == args.num_train_steps
                    if periodic and val_streams:
                        LOGGER.info("step %d validation: %s", global_step,
                                    {k: round(v, 4) for k, v in validate(model, val_streams, args, device).items()})
                    mark_boundary()
                    if periodic:
                        save()
            if batch_step % args.gradient_accumulation_steps == 0:
                guard.at_boundary()  # torchrun: the ranks agree on a signal here and all save this update
    dist.barrier()
    return ckpt_dir / f"model_step_{global_step}.pt"


def _flatten_random_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _as_random_state(value: list) -> tuple:
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with dist.shutdown_after():
        path = run(args)
        if dist.is_main_process():
            print(f"pre-trained checkpoint (LightningDot.pt layout): {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
