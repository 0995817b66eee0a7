"""Data of ``dvl/data/itm.py``: UNITER txt_db / img_db pairs for the two towers, hard negatives, collate.

One item is one caption with its image: the text tower gets ``[CLS] ids [SEP]``, the image tower
``[CLS]`` (id 101) followed by the regions. With ``num_hard_negatives = K`` an item also carries the
K hard-negative images of its caption and the K hard-negative captions of its image; the collate puts
the ``bs`` positives first and the negatives after them, in both towers (``pos_ctx_indices`` =
``range(bs)``).
"""

from __future__ import annotations

import os
import random
from collections import ChainMap, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from itr_common.data.batching import pad_tensors
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import fail, require_dir
from itr_common.fileio import read_json
from itr_lightningdot.model import IMG_CLS_ID


class ImageDbGroup:
    """UNITER's ``ImageLmdbGroup``: one :class:`DetectFeatLmdb` per img_db path, opened once."""

    def __init__(self, conf_th: float, max_bb: int, min_bb: int, num_bb: int, compressed: bool) -> None:
        self.args = (conf_th, max_bb, min_bb, num_bb, compressed)
        self.dbs: dict[str, DetectFeatLmdb] = {}

    def __getitem__(self, path: str) -> DetectFeatLmdb:
        key = os.path.normpath(str(path))
        if key not in self.dbs:
            conf_th, max_bb, min_bb, num_bb, compressed = self.args
            self.dbs[key] = DetectFeatLmdb(key, conf_th, max_bb, min_bb, num_bb, compressed)
        return self.dbs[key]


def image_inputs(img_db: DetectFeatLmdb, fname: str) -> tuple[Tensor, Tensor, int]:
    """(features (nbb, D), pos (nbb, 7), nbb) of one image."""
    feat, pos = img_db[fname]
    return feat, pos, feat.size(0)


class ItmFastDataset(torch.utils.data.Dataset):
    """Captions of one txt_db with their images (``ItmFastDataset``).

    Call :meth:`new_epoch` with the hard negatives (txt id -> image names, image name -> txt ids)
    before iterating; ``img_meta`` (``itm_global_file``) adds each image's generated captions
    (``caption_multiple``) for ``caption_score_weight``.
    """

    def __init__(self, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb, num_hard_negatives: int = 0,
                 img_meta: Mapping[str, Any] | None = None, tokenizer: Any = None) -> None:
        self.txt_db = txt_db
        self.img_db = img_db
        self.ids = list(txt_db.ids)
        self.txt_lens = list(txt_db.lens)
        self.ids_2_idx = {id_: i for i, id_ in enumerate(self.ids)}
        txt2img = txt_db.txt2img
        missing = [i for i in self.ids if i not in txt2img]
        if missing:
            fail(f"{txt_db.db_dir / 'txt2img.json'}: expected every text id, missing {missing[:5]}")
        self.img_fnames = [txt2img[i] for i in self.ids]
        absent = sorted({f for f in self.img_fnames if f not in img_db})
        if absent:
            fail(f"{img_db.img_dir}: expected the images of {txt_db.db_dir}, missing {len(absent)} "
                 f"(e.g. {absent[0]})")
        self.all_imgs = list(dict.fromkeys(self.img_fnames))
        self.num_hard_negatives = num_hard_negatives
        self.img_meta = img_meta
        self.tokenizer = tokenizer
        self.neg_imgs: list[list[str] | None] = [None] * len(self.ids)
        self.neg_txts: list[list[str] | None] = [None] * len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def new_epoch(self, hard_negatives_img: Mapping[str, Sequence[str]] | None = None,
                  hard_negatives_txt: Mapping[str, Sequence[str]] | None = None) -> None:
        k = self.num_hard_negatives
        for i, (id_, fname) in enumerate(zip(self.ids, self.img_fnames)):
            if hard_negatives_img is not None and k > 0:
                self.neg_imgs[i] = list(hard_negatives_img[id_][:k])
                self.neg_txts[i] = list(hard_negatives_txt[fname][:k])
            else:
                self.neg_imgs[i] = self.neg_txts[i] = None

    def text_ids(self, id_: str) -> Tensor:
        return self.txt_db.combine_inputs(self.txt_db[id_]["input_ids"])

    def caption_ids(self, fname: str) -> Tensor | None:
        if self.img_meta is None or self.tokenizer is None:
            return None
        entry = self.img_meta.get(fname)
        if entry is None or "caption_multiple" not in entry:
            fail(f"itm_global_file: expected 'caption_multiple' for image '{fname}', found none")
        tok = self.tokenizer
        ids = [tok.cls_token_id]
        for caption in entry["caption_multiple"]:
            ids += tok.encode(caption, add_special_tokens=False) + [tok.sep_token_id]
        return torch.tensor(ids, dtype=torch.long)

    def __getitem__(self, i: int) -> dict[str, Any]:
        fname = self.img_fnames[i]
        feat, pos, nbb = image_inputs(self.img_db, fname)
        item: dict[str, Any] = {
            "input_ids": self.text_ids(self.ids[i]),
            "img_feat": feat,
            "img_pos_feat": pos,
            "num_bb": nbb,
            "txt_id": self.ids[i],
            "img_fname": fname,
            "caption_ids": self.caption_ids(fname),
            "neg_imgs": None,
            "neg_txts": None,
        }
        if self.neg_imgs[i] is not None:
            negs = []
            for neg in self.neg_imgs[i]:
                n_feat, n_pos, n_nbb = image_inputs(self.img_db, neg)
                negs.append({"img_feat": n_feat, "img_pos_feat": n_pos, "num_bb": n_nbb,
                             "caption_ids": self.caption_ids(neg)})
            item["neg_imgs"] = negs
            item["neg_txts"] = [self.text_ids(t) for t in self.neg_txts[i]]
        return item


def _text_inputs(input_ids: Sequence[Tensor]) -> dict[str, Tensor]:
    ids = pad_sequence(list(input_ids), batch_first=True, padding_value=0)
    mask = pad_sequence([torch.ones(len(t), dtype=torch.long) for t in input_ids], batch_first=True)
    return {"input_ids": ids, "attention_mask": mask,
            "position_ids": torch.arange(ids.size(1), dtype=torch.long).unsqueeze(0)}


def image_batch(feats: Sequence[Tensor], poss: Sequence[Tensor]) -> dict[str, Tensor]:
    """Image tower inputs: ``[CLS]`` + regions for each image (B, 1 + max nbb attention mask)."""
    nbbs = [f.size(0) for f in feats]
    n = len(feats)
    mask = torch.zeros(n, 1 + max(nbbs), dtype=torch.long)
    for i, nbb in enumerate(nbbs):
        mask[i, : 1 + nbb] = 1
    return {
        "input_ids": torch.full((n, 1), IMG_CLS_ID, dtype=torch.long),
        "position_ids": torch.zeros(1, 1, dtype=torch.long),
        "attention_mask": mask,
        "img_feat": pad_tensors(feats, nbbs),
        "img_pos_feat": pad_tensors(poss, nbbs),
        "img_masks": None,
    }


def itm_fast_collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Positives first, then every item's hard negatives, in both towers (``itm_fast_collate``)."""
    bs = len(items)
    texts = [it["input_ids"] for it in items]
    feats = [it["img_feat"] for it in items]
    poss = [it["img_pos_feat"] for it in items]
    caps = [it["caption_ids"] for it in items]
    if all(it["neg_imgs"] is not None for it in items):
        for it in items:
            texts += it["neg_txts"]
            feats += [n["img_feat"] for n in it["neg_imgs"]]
            poss += [n["img_pos_feat"] for n in it["neg_imgs"]]
            caps += [n["caption_ids"] for n in it["neg_imgs"]]
    return {
        "txts": _text_inputs(texts),
        "imgs": image_batch(feats, poss),
        "caps": _text_inputs(caps) if all(c is not None for c in caps) else None,
        "sample_size": bs,
        "pos_ctx_indices": list(range(bs)),
        "neg_ctx_indices": list(range(bs, len(feats))),
        "txt_index": [it["txt_id"] for it in items],
        "img_fname": [it["img_fname"] for it in items],
    }


def move_batch(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_batch(v, device) for k, v in batch.items()}
    return batch


# ------------------------------------------------------------------------------------------ order


class EpochOrder:
    """The training order of one epoch: a permutation drawn from ``seed + epoch`` and this rank's share.

    Rank r of W takes ``perm[r::W]`` cut to the same length on every rank; batches are consecutive
    slices of ``batch_size`` (the last one shorter, ``drop_last=False`` as the original).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size

    def indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        perm = torch.randperm(self.n, generator=generator).tolist()
        per_rank = self.n // self.world if self.world > 1 else self.n
        return perm[self.rank::self.world][:per_rank]

    def batches(self, epoch: int) -> list[list[int]]:
        idx = self.indices(epoch)
        return [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def __len__(self) -> int:
        per_rank = self.n // self.world if self.world > 1 else self.n
        return (per_rank + self.batch_size - 1) // self.batch_size


def iterate_batches(dataset: torch.utils.data.Dataset, batches: Sequence[Sequence[int]], n_workers: int = 0,
                    pin_mem: bool = False) -> Iterator[dict[str, Any]]:
    """Collated batches of ``dataset`` for the given index lists (DataLoader with a fixed batch sampler).

    The loader draws its workers' base seed from its own generator, not the global torch RNG: an epoch
    resumed in the middle then leaves the dropout stream where the uninterrupted epoch has it."""
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=list(batches), num_workers=n_workers,
                                         pin_memory=pin_mem, collate_fn=itm_fast_collate,
                                         generator=torch.Generator().manual_seed(len(batches)))
    yield from loader


# ------------------------------------------------------------------------------------- mappings


@dataclass
class ImgTxtMappings:
    """``get_img_txt_mappings``: image -> texts and text -> image over every training txt_db."""

    img2txt: dict[str, list[str]]
    txt2img: dict[str, str]
    img2set: dict[str, str]
    set2img: dict[str, list[str]]


def get_img_txt_mappings(train_txt_dbs: Sequence[str]) -> ImgTxtMappings:
    per_db = [read_json(require_dir(db, "txt_db directory") / "img2txts.json", "txt_db img2txts", expect=dict)
              for db in train_txt_dbs]
    img2txt = dict(ChainMap(*per_db))
    txt2img = {t: img for img, txts in img2txt.items() for t in txts}
    img2set = dict(ChainMap(*[{k: db for k in m} for m, db in zip(per_db, train_txt_dbs)]))
    set2img: dict[str, list[str]] = defaultdict(list)
    for img, db in img2set.items():
        set2img[db].append(img)
    return ImgTxtMappings(img2txt, txt2img, img2set, dict(set2img))


def load_img_meta(path: str | None) -> dict[str, Any] | None:
    """``itm_global_file`` (coco_meta.json / flickr_meta.json) or None."""
    if not path:
        return None
    return read_json(path, "itm_global_file", expect=dict)


def sample_hard_negatives(
    ranked_img_for_txt: Mapping[str, Sequence[str]],
    ranked_txt_for_img: Mapping[str, Sequence[str]],
    mappings: ImgTxtMappings,
    num_hard_negatives: int,
    mode: str,
    rng: random.Random,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Hard negatives from the model's own retrieval lists (``sampled_hard_negatives``).

    ``ranked_img_for_txt[txt_id]``: the top images of that caption, best first (the original pool:
    ``min(max(2K + 10, 50), 1000)``); likewise texts per image. The positives are removed, then K are
    picked by ``mode``:

    - ``random``, ``top-random`` (the original's only implemented behaviour): K sampled uniformly
      from the pool;
    - ``top``: the K best;
    - ``10-20`` / ``20-30``: K sampled from ranks 10-20 / 20-30 of the pool.

    The original accepted every mode but always sampled uniformly from the pool (the modes were
    never read); here each mode does what its name says and ``random`` keeps the original behaviour.
    Returns (txt_id -> image names, image name -> txt ids).
    """
    k = num_hard_negatives

    def pick(pool: list[str]) -> list[str]:
        if mode == "top":
            chosen = pool[:k]
        elif mode in ("10-20", "20-30"):
            lo = 10 if mode == "10-20" else 20
            window = pool[lo:lo + 10]
            if len(window) >= k:
                chosen = rng.sample(window, k)
            else:  # the whole window, then distinct others from the pool
                rest = [c for c in pool if c not in window]
                chosen = window + rng.sample(rest, min(k - len(window), len(rest)))
        else:
            chosen = rng.sample(pool, k) if len(pool) >= k else [rng.choice(pool) for _ in range(k)]
        if len(chosen) < k:
            fail(f"num_hard_negatives: expected at most {len(pool)} negatives in the retrieval pool, found {k}")
        return chosen

    hard_img: dict[str, list[str]] = {}
    for txt_id, imgs in ranked_img_for_txt.items():
        own = mappings.txt2img.get(txt_id)
        hard_img[txt_id] = pick([i for i in imgs if i != own])
    hard_txt: dict[str, list[str]] = {}
    for img, txts in ranked_txt_for_img.items():
        own = set(mappings.img2txt.get(img, ()))
        hard_txt[img] = pick([t for t in txts if t not in own])
    return hard_img, hard_txt
