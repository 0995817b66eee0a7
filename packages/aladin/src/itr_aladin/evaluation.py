"""Evaluation of both ALADIN heads (mesnico/ALADIN ``alad/evaluation.py``, ``recall_auxiliary.py``).

Every image and every caption of the split is encoded once (model in eval mode). Then:

* matching head: the score matrix is one product ``img_emb @ cap_emb.T``;
* alignment head: exhaustive MrSw (or the configured aggregation) over every image-caption pair, computed
  ``image_chunk x caption_chunk`` pairs at a time, so memory stays bounded by one chunk's
  ``B_i x B_c x regions x words`` tensor. The original stored every set in 71 slots (zero-padded) before
  scoring; :data:`EVAL_SET_SLOTS` keeps that padding's effect (a zero region always takes part in the
  max over regions) without materialising it.

Protocols (labelled in the output): ``coco-5k`` (the whole ``test_img_keys.tsv`` split),
``coco-1k-fold5`` (mean over its five 1K folds) and ``1k`` for the single ``test_img_keys_1k.tsv`` subset
that the original README reports as "1K".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from itr_aladin.data import caption_loader, image_loader, worker_errors_as_one_line
from itr_aladin.losses import alignment_scores
from itr_aladin.model import ALADModel
from itr_common.data.vinvl_tsv import VinVLRetrievalSplit
from itr_common.metrics import RetrievalResult, evaluate_sims

LOGGER = logging.getLogger(__name__)
EVAL_SET_SLOTS = 71  # encode_data's max_cap_len = max_img_len = 71
HEADS = ("matching", "alignment")


@dataclass
class EncodedSplit:
    """img_emb (N, D), img_sets (N, S_i, D), img_len (N,); cap_emb (kN, D), cap_sets (kN, S_c, D), cap_len (kN,)."""

    img_emb: Tensor
    img_sets: Tensor
    img_len: Tensor
    cap_emb: Tensor
    cap_sets: Tensor
    cap_len: Tensor
    captions_per_image: int
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        return int(self.img_emb.shape[0])

    def subset(self, images: slice) -> EncodedSplit:
        k = self.captions_per_image
        caps = slice(images.start * k, images.stop * k)
        return EncodedSplit(self.img_emb[images], self.img_sets[images], self.img_len[images], self.cap_emb[caps],
                            self.cap_sets[caps], self.cap_len[caps], k)


def _pad_cat(chunks: list[Tensor]) -> Tensor:
    size = max(c.shape[1] for c in chunks)
    out = chunks[0].new_zeros(sum(c.shape[0] for c in chunks), size, chunks[0].shape[2])
    row = 0
    for c in chunks:
        out[row : row + c.shape[0], : c.shape[1]] = c
        row += c.shape[0]
    return out


@torch.no_grad()
def encode_split(model: ALADModel, data: VinVLRetrievalSplit, tokenizer: Any, max_seq_len: int, max_img_seq_len: int,
                 batch_size: int, workers: int = 0, device: torch.device | str = "cpu") -> EncodedSplit:
    """Encode every image and caption of ``data`` once (eval mode; the caller's mode is restored)."""
    with worker_errors_as_one_line():
        return _encode_split(model, data, tokenizer, max_seq_len, max_img_seq_len, batch_size, workers, device)


def _encode_split(model: ALADModel, data: VinVLRetrievalSplit, tokenizer: Any, max_seq_len: int,
                  max_img_seq_len: int, batch_size: int, workers: int, device: torch.device | str) -> EncodedSplit:
    was_training = model.training
    model.eval()
    enc = model.img_txt_enc
    start = time.perf_counter()
    img_emb, img_sets, img_len = [], [], []
    for batch in image_loader(data, tokenizer, max_seq_len, max_img_seq_len, batch_size, workers):
        out = enc.encode_image(batch.to(device))
        img_emb.append(out.emb.float().cpu())
        img_sets.append(out.sets.float().cpu())
        img_len.append(out.lengths.cpu())
    cap_emb, cap_sets, cap_len = [], [], []
    for batch in caption_loader(data, tokenizer, max_seq_len, batch_size, workers):
        out = enc.encode_text(batch.to(device))
        cap_emb.append(out.emb.float().cpu())
        cap_sets.append(out.sets.float().cpu())
        cap_len.append(out.lengths.cpu())
    model.train(was_training)
    return EncodedSplit(torch.cat(img_emb), _pad_cat(img_sets), torch.cat(img_len), torch.cat(cap_emb),
                        _pad_cat(cap_sets), torch.cat(cap_len), data.captions_per_image, time.perf_counter() - start)


@torch.no_grad()
def alignment_sims(model: ALADModel, enc: EncodedSplit, image_chunk: int = 32, caption_chunk: int = 250,
                   device: torch.device | str = "cpu", padded: bool = True) -> Tensor:
    """(N, kN) alignment scores, ``image_chunk x caption_chunk`` pairs at a time (bounded memory).

    The image sets go to ``device`` once; each caption chunk once (captions outer, images inner).
    """
    n, m = enc.img_emb.shape[0], enc.cap_emb.shape[0]
    sims = torch.empty(n, m)
    slots = (EVAL_SET_SLOTS, EVAL_SET_SLOTS) if padded else None
    img_sets, img_len = enc.img_sets.to(device), enc.img_len.to(device)
    for j in range(0, m, caption_chunk):
        jj = slice(j, min(m, j + caption_chunk))
        s_len = enc.cap_len[jj].to(device)
        s_sets = enc.cap_sets[jj, : int(s_len.max())].to(device)
        for i in range(0, n, image_chunk):
            ii = slice(i, min(n, i + image_chunk))
            im_len = img_len[ii]
            sims[ii, jj] = alignment_scores(img_sets[ii, : int(im_len.max())], s_sets, im_len, s_len,
                                            model.alignment_mode, slots).float().cpu()
    return sims


def matching_sims(enc: EncodedSplit) -> Tensor:
    return enc.img_emb @ enc.cap_emb.T


def protocols_for(n_images: int, keys_file: str) -> list[str]:
    """``['1k']`` for the single 1K subset (a keys file named ``*1k*``), else ``['coco-5k']`` plus
    ``'coco-1k-fold5'`` when the images split into five folds."""
    if "1k" in keys_file.lower():
        return ["1k"]
    return ["coco-5k", "coco-1k-fold5"] if n_images % 5 == 0 and n_images >= 5 else ["coco-5k"]


PROTOCOL_LABELS = {
    "1k": "COCO 1K: the single test_img_keys_1k.tsv subset (what the original README calls 1K)",
    "coco-5k": "COCO 5K: the whole test_img_keys.tsv split",
    "coco-1k-fold5": "COCO 1K: mean over the five 1K folds of the 5K split",
}


def evaluate_heads(model: ALADModel, enc: EncodedSplit, protocols: list[str], heads: tuple[str, ...] = HEADS,
                   device: torch.device | str = "cpu", extras: dict[str, Any] | None = None,
                   image_chunk: int = 32, caption_chunk: int = 250) -> dict[str, dict[str, RetrievalResult]]:
    """``{head: {protocol: RetrievalResult}}``; each head's matrix is computed once for all its protocols.

    Each result records its latency (:meth:`RetrievalResult.record_latency`): the shared encoding of every
    image and caption (``enc.seconds``: one encoder pass gives both heads' features), plus this head's score
    matrix, plus this protocol's ranking (fold5: the five folds of the 5K matrix).
    """
    out: dict[str, dict[str, RetrievalResult]] = {}
    k = enc.captions_per_image
    for head in heads:
        out[head] = {}
        t0 = time.perf_counter()
        if head == "matching":
            sims = matching_sims(enc)
        else:
            sims = alignment_sims(model, enc, image_chunk, caption_chunk, device)
        score_s = time.perf_counter() - t0
        for protocol in protocols:
            info = {**(extras or {}), "head": head, "protocol_label": PROTOCOL_LABELS[protocol]}
            t1 = time.perf_counter()
            result = evaluate_sims(sims, protocol, k, extras=info)
            out[head][protocol] = result.record_latency(enc.seconds + score_s + time.perf_counter() - t1)
        LOGGER.info("%s head scored in %.3fs", head, score_s)
    return out


def format_row(head: str, protocol: str, result: RetrievalResult) -> str:
    (r1, r5, r10, medr, meanr), (r1i, r5i, r10i, medri, meanri) = result.i2t, result.t2i
    return (f"{head:9} {protocol:13} i2t {r1:5.1f} {r5:5.1f} {r10:5.1f} (medr {medr:.0f}, meanr {meanr:.1f})  "
            f"t2i {r1i:5.1f} {r5i:5.1f} {r10i:5.1f} (medr {medri:.0f}, meanr {meanri:.1f})  rsum {result.rsum:.1f}")


def ranking_agreement(student: Tensor, teacher: Tensor, k: int = 10) -> dict[str, float]:
    """How close the matching head's rankings (``student`` (N, kN) scores) are to the alignment head's
    (``teacher``): the ListNet cross-entropy the distillation minimises (lower = closer) and the share of the
    teacher's top-``k`` captions of each image (and top-``k // 2`` images of each caption) that the student
    also ranks in its top ``k`` (higher = closer)."""
    from itr_aladin.losses import listnet

    def overlap(x: Tensor, y: Tensor, top: int) -> float:
        top = min(top, x.shape[1])
        same = (x.topk(top, dim=1).indices[:, :, None] == y.topk(top, dim=1).indices[:, None, :]).any(dim=2)
        return float(same.float().mean())

    return {"listnet": float(listnet(teacher, student)), f"top{k}_i2t": overlap(student, teacher, k),
            f"top{k // 2}_t2i": overlap(student.T, teacher.T, k // 2)}


def full_rsum(result: RetrievalResult) -> float:
    """r1 + r5 + r10 both ways (the original's rsum)."""
    return float(sum(result.i2t[:3]) + sum(result.t2i[:3]))


__all__ = [
    "EVAL_SET_SLOTS", "EncodedSplit", "PROTOCOL_LABELS", "alignment_sims", "encode_split", "evaluate_heads",
    "format_row", "full_rsum", "matching_sims", "protocols_for", "ranking_agreement",
]
