"""Evaluation of both variants: encode a split with the independent encoders, then rank by matrix products.

The released SelfAlign evaluation crashes (``i2t`` called with the wrong signature; ``evaluate_models.py``
is all comments); this one works. Every image is encoded once to (V, E) (V = 12 views for CAMERA, 1 for
VSRN) and every caption to (E,); a block of scores is one product ``(n*V, E) @ (E, m)`` followed by the max
over views. Ranks are computed block by block (:func:`ranks_from_blocks`), so memory stays bounded at 5K
images x 25K captions: one block of ``chunk`` queries against every candidate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from itr_common.amp import autocast_for
from itr_common.data.precomp import PrecompSplit
from itr_common.errors import fail
from itr_common.metrics import (
    COCO_5K_PROTOCOL,
    COCO_FOLD5_PROTOCOL,
    FLICKR_PROTOCOL,
    FOLD5_FOLDS,
    RetrievalResult,
    fold_slices,
    metrics_from_ranks,
)
from itr_selfalign.data import CameraDataset, VsrnDataset, caption_loader, image_loader
from itr_selfalign.layers import multi_view_scores

logger = logging.getLogger(__name__)

BLOCK_ELEMENTS = 2**25  # scores held at once in a (n*V, m) block: 128 MiB in float32


@dataclass
class EncodedSplit:
    """img (N, V, E) and cap (k*N, E) retrieval embeddings (float32, CPU), k captions per image."""

    img: torch.Tensor
    cap: torch.Tensor
    captions_per_image: int

    @property
    def n_images(self) -> int:
        return self.img.shape[0]

    def images(self, part: slice) -> EncodedSplit:
        k = self.captions_per_image
        return EncodedSplit(self.img[part], self.cap[part.start * k : part.stop * k], k)


@torch.inference_mode()
def encode_split(model: torch.nn.Module, split: PrecompSplit, dataset: CameraDataset | VsrnDataset,
                 batch_size: int = 128, device: torch.device | str | None = None, fp16: bool = False,
                 workers: int = 0) -> EncodedSplit:
    """Encode every image once and every caption of ``split`` (model in eval mode)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    camera = model.variant == "camera"
    imgs = []
    with autocast_for(device, fp16):
        for batch in image_loader(split, batch_size, workers, boxes=camera):
            batch = [t.to(device) for t in batch]
            imgs.append(model.encode_images(*batch).float().cpu())
        caps = torch.empty(0)
        for batch in caption_loader(dataset, batch_size, workers):
            batch = batch.to(device)
            if camera:
                emb = model.encode_captions(batch.input_ids, batch.attention_mask, batch.token_type_ids)
            else:
                emb = model.encode_captions(batch.captions, batch.lengths)
            emb = emb.float().cpu()
            if caps.numel() == 0:
                caps = torch.zeros(len(dataset), emb.shape[1])
            caps[batch.ids.cpu()] = emb
    img = torch.cat(imgs)
    if not (torch.isfinite(img).all() and torch.isfinite(caps).all()):
        fail(f"{split.files['ims']}: expected finite embeddings, found NaN/inf (check the features and checkpoint)")
    return EncodedSplit(img, caps, split.captions_per_image)


def score_matrix(img: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
    """The (n, m) scores of images (n, V, E) and captions (m, E): one product, max over views."""
    return multi_view_scores(img, cap)


def _chunk(n_candidates: int, views: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, n_candidates * views))


@torch.inference_mode()
def ranks_from_blocks(img: torch.Tensor, cap: torch.Tensor, k: int, chunk: int | None = None,
                      device: torch.device | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact (i2t (N,), t2i (k*N,)) ranks: candidates scoring strictly above the (best) positive.

    Same semantics as :func:`itr_common.metrics.i2t` / ``t2i`` on the full matrix, in blocks of ``chunk``
    queries (default: what fits in :data:`BLOCK_ELEMENTS` scores).
    """
    device = torch.device(device) if device is not None else img.device
    img, cap = img.to(device), cap.to(device)
    n, v, _ = img.shape
    m = cap.shape[0]
    if m != k * n:
        fail(f"captions: expected {k} per image ({k * n} for {n} images), found {m}")
    own = torch.arange(k, device=device)
    i2t = torch.empty(n, dtype=torch.int64)
    step = chunk or _chunk(m, v)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = score_matrix(img[start:stop], cap)  # (C, k*N)
        rows = torch.arange(stop - start, device=device)[:, None]
        best = block[rows, (rows + start) * k + own].amax(dim=1)
        i2t[start:stop] = (block > best[:, None]).sum(dim=1).cpu()
    t2i = torch.empty(m, dtype=torch.int64)
    step = chunk or _chunk(n, v)
    for start in range(0, m, step):
        stop = min(m, start + step)
        block = score_matrix(img, cap[start:stop]).t()  # (C, N)
        rows = torch.arange(stop - start, device=device)
        positive = block[rows, (rows + start) // k]
        t2i[start:stop] = (block > positive[:, None]).sum(dim=1).cpu()
    return i2t.numpy(), t2i.numpy()


def protocol_for(split: str, fold5: bool) -> str:
    if fold5:
        return COCO_FOLD5_PROTOCOL
    return COCO_5K_PROTOCOL if split == "testall" else FLICKR_PROTOCOL


def evaluate_encoded(enc: EncodedSplit, protocol: str, chunk: int | None = None,
                     device: torch.device | str | None = None) -> RetrievalResult:
    """Recalls under ``protocol``; ``coco-1k-fold5`` averages the five diagonal 1K blocks (medr/meanr too)."""
    k = enc.captions_per_image
    if protocol == COCO_FOLD5_PROTOCOL:
        if enc.n_images % FOLD5_FOLDS:
            fail(f"--fold5: expected a number of images divisible by 5, found {enc.n_images}")
        parts = [images for images, _ in fold_slices(enc.n_images, enc.n_images // FOLD5_FOLDS, k)]
    else:
        parts = [slice(0, enc.n_images)]
    t0 = time.time()
    folds = []
    for part in parts:
        sub = enc.images(part)
        r_i2t, r_t2i = ranks_from_blocks(sub.img, sub.cap, k, chunk, device)
        folds.append((metrics_from_ranks(r_i2t), metrics_from_ranks(r_t2i)))
    logger.info("ranking elapses: %.3fs (%d block(s))", time.time() - t0, len(parts))
    i2t = tuple(np.mean([f[0] for f in folds], axis=0).tolist())
    t2i = tuple(np.mean([f[1] for f in folds], axis=0).tolist())
    return RetrievalResult(i2t=i2t, t2i=t2i, protocol=protocol, n_images=enc.n_images, n_captions=k * enc.n_images,
                           folds=folds if len(folds) > 1 else [])


__all__ = ["COCO_5K_PROTOCOL", "COCO_FOLD5_PROTOCOL", "FLICKR_PROTOCOL", "EncodedSplit", "encode_split",
           "evaluate_encoded", "protocol_for", "ranks_from_blocks", "score_matrix"]
