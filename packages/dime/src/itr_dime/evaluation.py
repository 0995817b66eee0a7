"""Evaluation of DIME: encode a split, score every image against every caption, compute recalls.

(LgQu/DIME ``evaluation.py``: ``encode_data``, ``calItr``, ``i2t``, ``t2i``, ``evalrank``.) DIME scores each
image-caption pair with its interaction module, so the (n_img, n_cap) matrix is built block by block:
``shard_size`` images x ``shard_size`` captions per forward pass (the original's refinement and guidance
cells loop over the captions of a block one at a time), under ``torch.inference_mode`` and optional
autocast. Besides the encoded split (regions (N, R, d), words (5N, W, d)) memory holds one block's
activations and the float32 matrix.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from itr_common.amp import autocast_for
from itr_common.data.precomp import PrecompSplit
from itr_common.errors import fail
from itr_common.logging import progress
from itr_common.metrics import (
    COCO_5K_PROTOCOL,
    COCO_FOLD5_PROTOCOL,
    FLICKR_PROTOCOL,
    FOLD5_FOLDS,
    RetrievalResult,
    evaluate_sims,
    fold_slices,
)
from itr_dime.data import caption_loader, image_loader
from itr_dime.model import DIME

logger = logging.getLogger(__name__)


@dataclass
class EncodedSplit:
    """One model's embeddings of a split: rgn (N, R, d), img (N, d), wrd (kN, W, d), stc (kN, d), lens (kN,)."""

    rgn: torch.Tensor
    img: torch.Tensor
    wrd: torch.Tensor
    stc: torch.Tensor
    lens: torch.Tensor
    captions_per_image: int

    @property
    def n_images(self) -> int:
        return self.rgn.shape[0]

    @property
    def n_captions(self) -> int:
        return self.stc.shape[0]

    def images(self, part: slice) -> EncodedSplit:
        """The images ``part`` with their captions (image i's captions are k*i .. k*i + k - 1)."""
        k = self.captions_per_image
        caps = slice(part.start * k, part.stop * k)
        return EncodedSplit(self.rgn[part], self.img[part], self.wrd[caps], self.stc[caps], self.lens[caps], k)


def model_device(model: torch.nn.Module, device: torch.device | str | None = None) -> torch.device:
    """``device`` if given, else the device ``model``'s parameters live on."""
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device


@torch.inference_mode()
def check_split_features(model: DIME, split: PrecompSplit) -> None:
    """Fail with one line when ``split``'s region features are not the size the model was built for."""
    expected = model.img_enc.fc.in_features
    found = split.images.shape[2]
    if found != expected:
        fail(f"{split.files['ims']}: expected region features of size {expected} (the checkpoint's img_dim), "
             f"found {found}")


def encode_split(
    model: DIME,
    split: PrecompSplit,
    tokenizer: object,
    max_words: int,
    batch_size: int = 128,
    workers: int = 0,
    device: torch.device | str | None = None,
    fp16: bool = False,
) -> EncodedSplit:
    """Encode every image once and every caption of ``split`` with ``model`` in eval mode (float32 on CPU).

    ``device``: where to run (default: the model's device).
    """
    check_split_features(model, split)
    device = model_device(model, device)
    model.eval()
    rgn, img = [], []
    with autocast_for(device, fp16):
        for images in image_loader(split, batch_size, workers):
            g, r = model.encode_images(images.to(device))
            img.append(g.float().cpu())
            rgn.append(r.float().cpu())
        wrd, stc, lens = [], [], []
        for input_ids, mask, lengths in caption_loader(split, tokenizer, max_words, batch_size, workers):
            text = model.encode_captions(input_ids.to(device), mask.to(device))
            stc.append(text.stc.float().cpu())
            wrd.append(text.wrd.float().cpu())
            lens.append(lengths)
    return EncodedSplit(torch.cat(rgn), torch.cat(img), torch.cat(wrd), torch.cat(stc), torch.cat(lens),
                        split.captions_per_image)


@torch.inference_mode()
def score_matrix(
    model: DIME,
    enc: EncodedSplit,
    shard_size: int = 64,
    device: torch.device | str | None = None,
    fp16: bool = False,
    show_progress: bool | None = None,
) -> torch.Tensor:
    """The (n_img, n_cap) float32 score matrix (on the CPU), ``shard_size`` x ``shard_size`` pairs per pass.

    The original ``calItr`` with ``shard_size = 2 * batch_size``, batched over the captions of a block.
    ``device``: where to score (default: the model's device).
    """
    if shard_size < 1:
        fail(f"--shard_size: expected a positive integer, found {shard_size}")
    device = model_device(model, device)
    model.eval()
    n_img, n_cap = enc.n_images, enc.n_captions
    sims = torch.zeros(n_img, n_cap, dtype=torch.float32)
    n_blocks = -(-n_img // shard_size) * -(-n_cap // shard_size)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    t0 = time.time()
    # captions go to the device once, each image shard once per row of blocks
    wrd, stc, lens = enc.wrd.to(device), enc.stc.to(device), enc.lens.to(device)
    bar = progress(total=n_blocks, desc="scoring blocks", disable=not show_progress)
    for i in range(0, n_img, shard_size):
        im = slice(i, min(i + shard_size, n_img))
        rgn, img = enc.rgn[im].to(device), enc.img[im].to(device)
        for j in range(0, n_cap, shard_size):
            cap = slice(j, min(j + shard_size, n_cap))
            with autocast_for(device, fp16):
                block = model.score(rgn, img, wrd[cap], stc[cap], lens[cap])
            sims[im, cap] = block.float().cpu()
            bar.update(1)
    bar.close()
    logger.info("Calculate similarity matrix elapses: %.3fs (%d blocks)", time.time() - t0, n_blocks)
    return sims


def protocol_for(split: str, fold5: bool) -> str:
    """``coco-1k-fold5`` / ``coco-5k`` for COCO's ``testall``, else one block (``1k``)."""
    if fold5:
        return COCO_FOLD5_PROTOCOL
    return COCO_5K_PROTOCOL if split == "testall" else FLICKR_PROTOCOL


@torch.inference_mode()
def ensemble_scores(
    models: Sequence[DIME],
    encoded: Sequence[EncodedSplit],
    part: slice | None = None,
    shard_size: int = 64,
    device: torch.device | str | None = None,
    fp16: bool = False,
) -> torch.Tensor:
    """Mean of the models' score matrices over the images ``part`` (default all) and their captions."""
    total = None
    for model, enc in zip(models, encoded, strict=True):
        sims = score_matrix(model, enc.images(part) if part is not None else enc, shard_size, device, fp16)
        total = sims if total is None else total.add_(sims)
    return total.div_(len(models))


def _mean_result(results: Sequence[RetrievalResult], protocol: str, n_images: int, k: int) -> RetrievalResult:
    i2t = tuple(np.mean([r.i2t for r in results], axis=0).tolist())
    t2i = tuple(np.mean([r.t2i for r in results], axis=0).tolist())
    return RetrievalResult(i2t=i2t, t2i=t2i, protocol=protocol, n_images=n_images, n_captions=k * n_images,
                           folds=[(r.i2t, r.t2i) for r in results])


def evaluate_encoded(
    models: Sequence[DIME],
    encoded: Sequence[EncodedSplit],
    protocol: str,
    shard_size: int = 64,
    device: torch.device | str | None = None,
    fp16: bool = False,
) -> tuple[RetrievalResult, torch.Tensor | None]:
    """Recalls of one model (or the mean of several models' scores) under ``protocol``.

    ``coco-1k-fold5`` scores only the five diagonal blocks (1K images x 5K captions each on COCO) and
    averages their metrics. Returns the result and the full score matrix (None for fold5).
    """
    enc = encoded[0]
    k = enc.captions_per_image
    if protocol == COCO_FOLD5_PROTOCOL:
        if enc.n_images % FOLD5_FOLDS:
            fail(f"--fold5: expected a number of images divisible by 5, found {enc.n_images}")
        results = []
        for images, _ in fold_slices(enc.n_images, enc.n_images // FOLD5_FOLDS, k):
            sims = ensemble_scores(models, encoded, images, shard_size, device, fp16)
            results.append(evaluate_sims(sims, FLICKR_PROTOCOL, k))
        return _mean_result(results, protocol, enc.n_images, k), None
    sims = ensemble_scores(models, encoded, None, shard_size, device, fp16)
    return evaluate_sims(sims, protocol, k), sims


__all__ = [
    "COCO_5K_PROTOCOL",
    "COCO_FOLD5_PROTOCOL",
    "FLICKR_PROTOCOL",
    "EncodedSplit",
    "autocast_for",
    "check_split_features",
    "encode_split",
    "ensemble_scores",
    "evaluate_encoded",
    "model_device",
    "protocol_for",
    "score_matrix",
]
