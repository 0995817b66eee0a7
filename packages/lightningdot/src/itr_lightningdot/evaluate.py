"""Encoding a split once per tower and the retrieval evaluation of ``dvl/trainer.py``.

``eval_model_on_dataloader`` of the original encoded every (caption, image) pair, so each image went
through the image tower once per caption; here each image and each caption is encoded once (the same
vectors in eval mode). Recall is computed as the original: text -> image hits the caption's image,
image -> text hits any caption of the image (``img2txts``), over the faiss index of the other side; the
exact ranks for medr / meanr come from the same dot products.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import fail
from itr_common.logging import progress
from itr_common.metrics import RetrievalResult, metrics_from_ranks
from itr_lightningdot.data import _text_inputs, image_batch, image_inputs, move_batch
from itr_lightningdot.model import BiEncoder

TOPS = (1, 5, 10)


@dataclass
class EncodedSplit:
    """txt (N_t, D) and img (N_i, D) float32 embeddings with their ids; txt2img index per caption."""

    txt: np.ndarray
    img: np.ndarray
    txt_ids: list[str]
    img_fnames: list[str]
    txt2img: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def img2txts(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.img_fnames]
        for t, i in enumerate(self.txt2img.tolist()):
            out[i].append(t)
        return out


def _autocast(amp: object | None) -> contextlib.AbstractContextManager:
    return amp.autocast() if amp is not None else contextlib.nullcontext()


@torch.no_grad()
def encode_texts(model: BiEncoder, txt_db: TxtTokLmdb, ids: Sequence[str], batch_size: int,
                 device: torch.device, amp: object | None = None, desc: str = "texts") -> np.ndarray:
    """Text-tower embeddings (N, D) of the given txt_db ids."""
    out = []
    for start in progress(range(0, len(ids), batch_size), desc=desc):
        chunk = [txt_db.combine_inputs(txt_db[i]["input_ids"]) for i in ids[start:start + batch_size]]
        with _autocast(amp):
            vec = model.encode_text(move_batch(_text_inputs(chunk), device)).pooled
        out.append(vec.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.vector_size), dtype=np.float32)


@torch.no_grad()
def encode_images(model: BiEncoder, img_db: DetectFeatLmdb, fnames: Sequence[str], batch_size: int,
                  device: torch.device, amp: object | None = None, desc: str = "images") -> np.ndarray:
    """Image-tower embeddings (N, D) of the given img_db names."""
    out = []
    for start in progress(range(0, len(fnames), batch_size), desc=desc):
        feats, poss = [], []
        for name in fnames[start:start + batch_size]:
            feat, pos, _ = image_inputs(img_db, name)
            feats.append(feat)
            poss.append(pos)
        with _autocast(amp):
            vec = model.encode_image(move_batch(image_batch(feats, poss), device)).pooled
        out.append(vec.float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.vector_size), dtype=np.float32)


def encode_split(model: BiEncoder, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb, batch_size: int,
                 device: torch.device, amp: object | None = None) -> EncodedSplit:
    """Every caption of ``txt_db`` and every image they name, each encoded once."""
    was_training = model.training
    model.eval()
    try:
        txt2img = txt_db.txt2img
        ids = list(txt_db.ids)
        fnames = list(dict.fromkeys(txt2img[i] for i in ids))
        absent = [f for f in fnames if f not in img_db]
        if absent:
            fail(f"{img_db.img_dir}: expected the images of {txt_db.db_dir}, missing {len(absent)} (e.g. {absent[0]})")
        position = {f: k for k, f in enumerate(fnames)}
        txt = encode_texts(model, txt_db, ids, batch_size, device, amp)
        img = encode_images(model, img_db, fnames, batch_size, device, amp)
    finally:
        model.train(was_training)
    return EncodedSplit(txt, img, ids, fnames, np.array([position[txt2img[i]] for i in ids], dtype=np.int64))


def exact_ranks(split: EncodedSplit, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(i2t ranks (N_i,), t2i ranks (N_t,)): candidates scoring strictly above the (best) positive."""
    img = torch.from_numpy(split.img)
    txt = torch.from_numpy(split.txt)
    gt = torch.from_numpy(split.txt2img)
    t2i = torch.empty(len(txt), dtype=torch.long)
    for s in range(0, len(txt), chunk):
        block = txt[s:s + chunk] @ img.T
        pos = block.gather(1, gt[s:s + chunk, None])
        t2i[s:s + chunk] = (block > pos).sum(1)
    i2t = torch.empty(len(img), dtype=torch.long)
    owners = gt
    for s in range(0, len(img), chunk):
        block = img[s:s + chunk] @ txt.T  # (C, N_t)
        own = owners[None, :] == torch.arange(s, min(s + chunk, len(img)))[:, None]
        best = block.masked_fill(~own, float("-inf")).amax(1, keepdim=True)
        i2t[s:s + chunk] = (block > best).sum(1)
    return i2t.numpy(), t2i.numpy()


def recall_from_topk(split: EncodedSplit, top_img_for_txt: np.ndarray, top_txt_for_img: np.ndarray,
                     tops: Sequence[int] = TOPS) -> tuple[dict[int, float], dict[int, float]]:
    """The original's recall dicts (fractions) from index search results (row indices into the other side).

    Returns (image retrieval = text queries, text retrieval = image queries).
    """
    img_hits = {k: float(np.mean([split.txt2img[t] in top_img_for_txt[t, :k] for t in range(len(split.txt))]))
                for k in tops}
    owners = split.img2txts
    txt_hits = {k: float(np.mean([bool(set(top_txt_for_img[i, :k].tolist()) & set(owners[i]))
                                  for i in range(len(split.img))])) for k in tops}
    return img_hits, txt_hits


def protocol_name(n_images: int) -> str:
    return {1000: "f30k", 5000: "coco-5k"}.get(n_images, "full-split")


def evaluate_split(split: EncodedSplit, hnsw: bool = False, num_tops: int = 100,
                   extras: dict | None = None) -> tuple[RetrievalResult, dict[int, float], dict[int, float]]:
    """Index both sides with faiss (flat IP, or HNSW), search top ``num_tops``, and report recall.

    Returns (result with R@K from the index search and medr/meanr from exact ranks, the original's
    image-retrieval recall dict, its text-retrieval recall dict).
    """
    from itr_lightningdot.indexer import make_indexer

    start = time.perf_counter()
    top = min(num_tops, len(split.img))
    img_index = make_indexer(split.img.shape[1], hnsw)
    img_index.index_vectors(split.img)
    _, top_img = img_index.search(split.txt, top)
    txt_index = make_indexer(split.txt.shape[1], hnsw)
    txt_index.index_vectors(split.txt)
    _, top_txt = txt_index.search(split.img, min(num_tops, len(split.txt)))
    search_s = time.perf_counter() - start
    recall_img, recall_txt = recall_from_topk(split, top_img, top_txt)
    i2t_ranks, t2i_ranks = exact_ranks(split)
    i2t_m = metrics_from_ranks(i2t_ranks)
    t2i_m = metrics_from_ranks(t2i_ranks)
    i2t = (100 * recall_txt[1], 100 * recall_txt[5], 100 * recall_txt[10], i2t_m[3], i2t_m[4])
    t2i = (100 * recall_img[1], 100 * recall_img[5], 100 * recall_img[10], t2i_m[3], t2i_m[4])
    info = {"index": "hnsw" if hnsw else "flat", "search_s": search_s, **(extras or {})}
    result = RetrievalResult(i2t, t2i, protocol_name(len(split.img)), info, len(split.img), len(split.txt))
    return result, recall_img, recall_txt


def in_batch_stats(model: BiEncoder, split: EncodedSplit, batch_size: int) -> tuple[float, float]:
    """The original's eval loss / correct ratio: in-batch NLL over consecutive caption batches."""
    from itr_lightningdot.losses import BiEncoderNllLoss

    loss_fn = BiEncoderNllLoss()
    txt = torch.from_numpy(split.txt)
    img = torch.from_numpy(split.img[split.txt2img])
    losses, correct = [], 0
    for s in range(0, len(txt), batch_size):
        q, c = txt[s:s + batch_size], img[s:s + batch_size]
        res = loss_fn.calc(q, c, None, list(range(len(q))), None, 0.0)
        losses.append(float(res.loss))
        correct += int(res.correct)
    return float(np.mean(losses)) if losses else 0.0, correct / max(len(txt), 1)
