"""Full image-text retrieval evaluation of the cross-encoder (lancopku/IAIS ``utils/itm_eval.py``).

Every caption is scored against every image: images sorted by their number of regions and cut into
blocks of ``block_size`` (400 in the original), one forward pass per (text, block). Texts are sharded
over ranks (``ids[rank::world]``); the per-rank score rows are gathered on every rank.

Memory stays bounded: the loop runs over image blocks outside and texts inside, so one padded block
of region features is resident at a time (the original re-reads every block for every text), and the
text token ids of this rank's shard are read once. The score matrix itself is (n_txt, n_img) float32
(5K x 25K: 500 MB).

Metrics: :func:`itm_eval` returns the original keys (``txt_r1/5/10``, ``img_r1/5/10``, their means,
``r_mean``; fractions in [0, 1]) with its image-retrieval overcount fixed (see the function), and
:func:`retrieval_result` the standard R@1/5/10, medr, meanr both ways as an
``itr_common.metrics.RetrievalResult``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from itr_common import dist
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.metrics import RetrievalResult, metrics_from_ranks
from itr_iais.data import pad_tensors, pair_layout
from itr_iais.model import batch_to

ScoreFn = Callable[[dict], Tensor]


def sorted_image_ids(img_ids: Sequence[str], img_db: DetectFeatLmdb) -> list[str]:
    """Images by ascending number of regions (stable), the original's evaluation order."""
    return sorted(img_ids, key=lambda name: img_db.name2nbb[name])


@torch.inference_mode()
def score_matrix(
    score_fn: ScoreFn,
    txt_db: TxtTokLmdb,
    img_db: DetectFeatLmdb,
    txt_ids: Sequence[str],
    img_ids: Sequence[str],
    block_size: int = 400,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    iais_layout: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Scores (len(txt_ids), len(img_ids)) float32 of ``score_fn`` on every pair, on CPU.

    ``score_fn(batch) -> (B, 1)`` scores one text against a block of images (B <= block_size).
    """
    device = torch.device(device)
    texts = [txt_db.combine_inputs(txt_db[t]["input_ids"]) for t in txt_ids]
    scores = torch.empty(len(texts), len(img_ids), dtype=torch.float32)
    for start in range(0, len(img_ids), block_size):
        names = img_ids[start : start + block_size]
        feats, poss = zip(*(img_db[name] for name in names))
        nbbs = [f.size(0) for f in feats]
        block = {"img_feat": pad_tensors(feats, nbbs).to(device), "img_pos_feat": pad_tensors(poss, nbbs).to(device)}
        layouts: dict[int, dict] = {}  # masks depend only on the text length
        for row, input_ids in enumerate(texts):
            tl = input_ids.size(0)
            if tl not in layouts:
                layouts[tl] = batch_to(pair_layout(tl, nbbs, iais_layout), device)
                layouts[tl]["position_ids"] = torch.arange(tl, device=device).unsqueeze(0)
            batch = {**block, **layouts[tl], "input_ids": input_ids.to(device).unsqueeze(0).expand(len(names), -1)}
            with autocast():
                out = score_fn(batch)
            scores[row, start : start + len(names)] = out.squeeze(-1).float().cpu()
        if progress is not None:
            progress(len(names))
    return scores


def gather_rows(local_scores: Tensor, local_ids: Sequence[str]) -> tuple[Tensor, list[str]]:
    """Concatenate every rank's score rows and text ids in rank order (identity in one process)."""
    if dist.get_world_size() == 1:
        return local_scores, list(local_ids)
    parts = dist.all_gather_object((local_scores.numpy(), list(local_ids)))
    scores = torch.from_numpy(np.concatenate([p[0] for p in parts], axis=0))
    ids = [i for p in parts for i in p[1]]
    return scores, ids


def _gt_columns(txt_ids: Sequence[str], img_ids: Sequence[str], txt2img: Mapping[str, str]) -> np.ndarray:
    position = {name: j for j, name in enumerate(img_ids)}
    return np.array([position[txt2img[t]] for t in txt_ids], dtype=np.int64)


def text_to_image_ranks(scores: np.ndarray, gt_col: np.ndarray) -> np.ndarray:
    """0-based rank of each text's image in its row: images scoring strictly higher. (n_txt,)"""
    gt_scores = scores[np.arange(len(gt_col)), gt_col]
    return (scores > gt_scores[:, None]).sum(axis=1)


def image_to_text_ranks(
    scores: np.ndarray, txt_ids: Sequence[str], img_ids: Sequence[str], img2txts: Mapping[str, Sequence[str]]
) -> np.ndarray:
    """0-based rank of each image's best caption in its column. (n_img,)"""
    row = {t: i for i, t in enumerate(txt_ids)}
    ranks = np.empty(len(img_ids), dtype=np.int64)
    for j, name in enumerate(img_ids):
        column = scores[:, j]
        best = max(column[row[t]] for t in img2txts[name] if t in row)
        ranks[j] = int((column > best).sum())
    return ranks


def itm_eval(
    scores: Tensor | np.ndarray,
    txt_ids: Sequence[str],
    img_ids: Sequence[str],
    txt2img: Mapping[str, str],
    img2txts: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """The original ``itm_eval`` log (fractions): txt_r1/5/10 (text retrieval, per image), img_r1/5/10
    (image retrieval, per text), txt_r_mean, img_r_mean, r_mean.

    Fixed: the original counts ``(nonzero(topk == gt) < K)`` over both columns of the (row, col)
    index pairs, so the rows 0..K-1 add up to K spurious hits to image retrieval R@K.
    """
    matrix = scores.numpy() if isinstance(scores, Tensor) else np.asarray(scores)
    matrix = matrix.astype(np.float32, copy=False)
    t2i_ranks = text_to_image_ranks(matrix, _gt_columns(txt_ids, img_ids, txt2img))
    i2t_ranks = image_to_text_ranks(matrix, txt_ids, img_ids, img2txts)
    log = {}
    for k in (1, 5, 10):
        log[f"txt_r{k}"] = float((i2t_ranks < k).mean())
    log["txt_r_mean"] = (log["txt_r1"] + log["txt_r5"] + log["txt_r10"]) / 3
    for k in (1, 5, 10):
        log[f"img_r{k}"] = float((t2i_ranks < k).mean())
    log["img_r_mean"] = (log["img_r1"] + log["img_r5"] + log["img_r10"]) / 3
    log["r_mean"] = (log["txt_r_mean"] + log["img_r_mean"]) / 2
    return {key: log[key] for key in ORIGINAL_KEYS}


ORIGINAL_KEYS = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean")


def retrieval_result(
    scores: Tensor | np.ndarray,
    txt_ids: Sequence[str],
    img_ids: Sequence[str],
    txt2img: Mapping[str, str],
    img2txts: Mapping[str, Sequence[str]],
    protocol: str,
    extras: dict | None = None,
) -> RetrievalResult:
    """Standard R@1/5/10, medr, meanr (percent) both ways, whatever the captions-per-image count."""
    matrix = scores.numpy() if isinstance(scores, Tensor) else np.asarray(scores)
    matrix = matrix.astype(np.float32, copy=False)
    t2i = metrics_from_ranks(text_to_image_ranks(matrix, _gt_columns(txt_ids, img_ids, txt2img)))
    i2t = metrics_from_ranks(image_to_text_ranks(matrix, txt_ids, img_ids, img2txts))
    return RetrievalResult(
        i2t=i2t, t2i=t2i, protocol=protocol, n_images=len(img_ids), n_captions=len(txt_ids), extras=extras or {}
    )


def protocol_for(txt_db_path: str) -> str:
    """``coco-5k`` for COCO text dbs, ``f30k`` otherwise (the whole matrix as one block either way)."""
    return "coco-5k" if "coco" in str(txt_db_path).lower() else "f30k"


def evaluate_full(
    score_fn: ScoreFn,
    txt_db: TxtTokLmdb,
    img_db: DetectFeatLmdb,
    block_size: int,
    device: torch.device | str,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    iais_layout: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, list[str], list[str], float]:
    """Score this rank's texts against all images and gather: (scores, txt_ids, img_ids, seconds).

    Every rank returns the full matrix (rows in rank-shard order, as the original's allgather).
    """
    start = time.perf_counter()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_ids = txt_db.ids[rank::world]
    img_ids = sorted_image_ids(list(txt_db.img2txts), img_db)
    local = score_matrix(score_fn, txt_db, img_db, local_ids, img_ids, block_size, device, autocast, iais_layout,
                         progress)
    scores, txt_ids = gather_rows(local, local_ids)
    return scores, txt_ids, img_ids, time.perf_counter() - start


@torch.inference_mode()
def validate_windows(
    score_fn: ScoreFn,
    dataset,
    device: torch.device | str,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """The original ``validate``: R@1/5/10 of each text's image among its window (fractions, gathered)."""
    start = time.time()
    hits = np.zeros(3, dtype=np.int64)
    for i in range(len(dataset)):
        batch = batch_to(dataset[i], torch.device(device))
        with autocast():
            scores = score_fn(batch).squeeze(-1).float()
        rank = int((scores > scores[0]).sum().item())
        hits += [rank < 1, rank < 5, rank < 10]
    totals = dist.all_gather_object((hits.tolist(), len(dataset)))
    n = sum(t[1] for t in totals)
    summed = np.sum([t[0] for t in totals], axis=0)
    seconds = time.time() - start
    return {
        "valid/ex_per_s": n / max(seconds, 1e-9),
        "valid/recall_1": float(summed[0]) / n,
        "valid/recall_5": float(summed[1]) / n,
        "valid/recall_10": float(summed[2]) / n,
    }
