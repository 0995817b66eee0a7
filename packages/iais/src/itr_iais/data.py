"""IAIS/UNITER ITM datasets: hard-negative groups for training, fixed windows for validation.

Each item is a whole group (the DataLoader runs with ``batch_size=1`` and :func:`single_collate`),
as in lancopku/IAIS ``data/itm.py``:

- :class:`HardNegFromText`: one text, its image first, then ``negative_size`` random other images;
- :class:`HardNegFromImage`: one image, one of its texts first, then ``negative_size`` texts that
  are not its own;
- :class:`ItmValDataset`: one text against its image and the next ``mini_batch_size - 1`` images.

Two joint layouts, both with a 0/1 ``attn_masks`` (B, T):

- compact (no IAIS): text then regions without padding in between, reached through
  ``gather_index`` (B, T) into ``cat([text padded to L, regions padded to R])``;
- IAIS (``iais=True``): ``[text padded to L | regions padded to R]`` with no gather_index, plus the
  ground truth's ``txt_attn_masks`` (1, T) (its text tokens without [CLS]/[SEP]) and
  ``img_attn_masks`` (1, T) (its regions).

Texts are sharded over ranks (``ids[rank::world_size]``) as the original's horovod sharding.
The training groups' negatives are drawn from a generator keyed by ``(seed, epoch, side, text id)``
(the original: the global ``random``; the same distribution), so a group is the same whichever
process, worker or resumed run builds it: ``--resume`` continues with exactly the groups the
uninterrupted run would have trained on. Call :meth:`set_epoch` before each pass.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from itr_common.data.batching import pad_tensors
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb, get_ids_and_lens
from itr_common.errors import fail

Batch = dict[str, Any]


def get_gather_index(txt_lens: Sequence[int], num_bbs: Sequence[int], max_txt_len: int, out_size: int) -> Tensor:
    """Positions (B, out_size) into ``cat([text padded to max_txt_len, regions])`` of the compact layout.

    Row i keeps ``0 .. tl_i - 1`` for its text, then points ``tl_i .. tl_i + nbb_i - 1`` at the regions
    ``max_txt_len .. max_txt_len + nbb_i - 1``; the tail is left as an identity (masked out).
    """
    index = torch.arange(out_size, dtype=torch.long).unsqueeze(0).repeat(len(txt_lens), 1)
    for i, (tl, nbb) in enumerate(zip(txt_lens, num_bbs)):
        index[i, tl : tl + nbb] = torch.arange(max_txt_len, max_txt_len + nbb, dtype=torch.long)
    return index


def compact_attn_masks(txt_lens: Sequence[int], num_bbs: Sequence[int]) -> Tensor:
    """(B, max(tl + nbb)) with ones over each row's ``tl + nbb`` positions."""
    total = [tl + nbb for tl, nbb in zip(txt_lens, num_bbs)]
    masks = torch.zeros(len(total), max(total), dtype=torch.long)
    for i, n in enumerate(total):
        masks[i, :n] = 1
    return masks


def sample_negative(pool: Sequence[Any], ground_truths: Sequence[Any], num_sample: int,
                    rng: random.Random | None = None) -> list[Any]:
    """``num_sample`` distinct items of ``pool`` with none of ``ground_truths`` (random, retried).

    ``rng``: the generator to draw with (default: the module-level ``random``)."""
    draw = rng.sample if rng is not None else random.sample
    truths = set(ground_truths)
    available = len(pool) - len(truths.intersection(pool))
    if available < num_sample:
        fail(f"negative_size: expected at most {available} (negatives available in a pool of {len(pool)}), "
             f"found {num_sample}")
    while True:
        outputs = draw(list(pool), num_sample)
        if not truths.intersection(outputs):
            return outputs


def iais_layout_masks(txt_lens: Sequence[int], num_bbs: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """The IAIS layout ``[text padded | regions padded]``: attn_masks (B, L + R) and the ground truth's
    (row 0) txt_attn_masks (1, L + R) without [CLS]/[SEP] and img_attn_masks (1, L + R)."""
    max_tl, max_nbb = max(txt_lens), max(num_bbs)
    attn = torch.zeros(len(txt_lens), max_tl + max_nbb, dtype=torch.long)
    for i, (tl, nbb) in enumerate(zip(txt_lens, num_bbs)):
        attn[i, :tl] = 1
        attn[i, max_tl : max_tl + nbb] = 1
    txt_mask = torch.zeros(1, max_tl + max_nbb, dtype=torch.long)
    txt_mask[0, 1 : txt_lens[0] - 1] = 1
    img_mask = torch.zeros(1, max_tl + max_nbb, dtype=torch.long)
    img_mask[0, max_tl : max_tl + num_bbs[0]] = 1
    return attn, txt_mask, img_mask


class DetectFeatTxtTokDataset(Dataset):
    """A txt_db paired with its img_db; this rank's shard of text ids."""

    def __init__(self, txt_db: TxtTokLmdb, img_db: DetectFeatLmdb, rank: int = 0, world_size: int = 1) -> None:
        self.txt_db = txt_db
        self.img_db = img_db
        txt_lens, self.ids = get_ids_and_lens(txt_db, rank, world_size)
        if not self.ids:
            fail(f"{txt_db.db_dir}: no text for rank {rank} of {world_size} (max_txt_len={txt_db.max_txt_len})")
        txt2img = txt_db.txt2img
        self.txt2img = {id_: txt2img[id_] for id_ in self.ids}
        missing = next((img for img in self.txt2img.values() if img not in img_db.name2nbb), None)
        if missing is not None:
            fail(f"{img_db.img_dir}: image '{missing}' of {txt_db.db_dir} not in this img_db")
        self.lens = [tl + img_db.name2nbb[self.txt2img[id_]] for tl, id_ in zip(txt_lens, self.ids)]

    def __len__(self) -> int:
        return len(self.ids)

    def input_ids(self, txt_id: str) -> Tensor:
        """``[CLS] ids [SEP]`` (L,) of one text."""
        return self.txt_db.combine_inputs(self.txt_db[txt_id]["input_ids"])

    def image(self, fname: str) -> tuple[Tensor, Tensor, int]:
        """(features (nbb, D), position (nbb, 7), nbb)."""
        feat, pos = self.img_db[fname]
        return feat, pos, feat.size(0)


class EpochSeeded:
    """Negatives drawn from a generator keyed by ``(seed, epoch, side, text id)``; :meth:`set_epoch` per pass."""

    seed: int = 0
    epoch: int = 0
    side: str = ""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng_for(self, txt_id: str) -> random.Random:
        return random.Random(f"iais-negatives:{self.seed}:{self.epoch}:{self.side}:{txt_id}")


class HardNegatives(EpochSeeded, DetectFeatTxtTokDataset):
    """The shared part of the two group datasets: one positive pair first, then ``neg_sample_size`` random
    negatives on one side (images for :class:`HardNegFromText`, texts for :class:`HardNegFromImage`)."""

    def __init__(self, txt_db, img_db, neg_sample_size: int, iais: bool = False, rank: int = 0, world_size: int = 1,
                 seed: int = 0):
        super().__init__(txt_db, img_db, rank, world_size)
        self.img2txts = txt_db.img2txts
        self.img_name_list = list(self.img2txts)
        self.txt_name_list = list(self.txt2img)
        self.neg_sample_size = neg_sample_size
        self.iais = iais
        self.seed = seed
        available, pool = self.negatives_available()
        if available < neg_sample_size:  # checked here, before any work, rather than at the first group drawn
            fail(f"negative_size: expected at most {available} (negatives available in a pool of {pool} "
                 f"{'images' if self.side == 't' else 'texts'} of {txt_db.db_dir}), found {neg_sample_size}")

    def negatives_available(self) -> tuple[int, int]:
        """(the fewest negatives any group of this dataset can draw, the size of the pool they come from)."""
        raise NotImplementedError

    def group_masks(self, txt_lens: Sequence[int], nbbs: Sequence[int], padded_txt_len: int) -> Batch:
        """The group's attention masks: IAIS's layout (joint, text and image masks) or UNITER's compact one with
        its ``gather_index``. ``padded_txt_len``: the width of the group's ``input_ids``."""
        if self.iais:
            return dict(zip(("attn_masks", "txt_attn_masks", "img_attn_masks"),
                            iais_layout_masks(txt_lens, nbbs), strict=True))
        attn = compact_attn_masks(txt_lens, nbbs)
        # the original passed the last text's length here instead of the padded length (fixed)
        return {"attn_masks": attn, "gather_index": get_gather_index(txt_lens, nbbs, padded_txt_len, attn.size(1))}


class HardNegFromText(HardNegatives):
    """One text with its image first and ``neg_sample_size`` random other images (B = 1 + negatives)."""

    side = "t"

    def negatives_available(self) -> tuple[int, int]:
        return len(self.img_name_list) - 1, len(self.img_name_list)

    def __getitem__(self, i: int) -> Batch:
        gt_txt_id = self.ids[i]
        gt_img = self.txt2img[gt_txt_id]
        input_ids = self.input_ids(gt_txt_id).unsqueeze(0)  # (1, L), expanded by the model
        tl = input_ids.size(1)
        img_ids = [gt_img, *sample_negative(self.img_name_list, [gt_img], self.neg_sample_size,
                                            self.rng_for(gt_txt_id))]
        feats, poss, nbbs = zip(*(self.image(name) for name in img_ids))
        return {
            "input_ids": input_ids,
            "position_ids": torch.arange(tl, dtype=torch.long).unsqueeze(0),
            "img_feat": pad_tensors(feats, nbbs),
            "img_pos_feat": pad_tensors(poss, nbbs),
            **self.group_masks([tl] * len(img_ids), nbbs, tl),
        }


class HardNegFromImage(HardNegatives):
    """One image with one of its texts first and ``neg_sample_size`` texts that are not its own."""

    side = "i"

    def negatives_available(self) -> tuple[int, int]:
        # an image's own texts in this rank's pool are never its negatives
        own = Counter(self.txt2img.values())
        return len(self.txt_name_list) - max(own.values()), len(self.txt_name_list)

    def __getitem__(self, i: int) -> Batch:
        gt_txt_id = self.ids[i]
        gt_img = self.txt2img[gt_txt_id]
        feat, pos, nbb = self.image(gt_img)
        txt_ids = [gt_txt_id, *sample_negative(self.txt_name_list, self.img2txts[gt_img], self.neg_sample_size,
                                               self.rng_for(gt_txt_id))]
        texts = [self.input_ids(t) for t in txt_ids]
        input_ids = pad_sequence(texts, batch_first=True, padding_value=0)
        return {
            "input_ids": input_ids,
            "position_ids": torch.arange(input_ids.size(1), dtype=torch.long).unsqueeze(0),
            "img_feat": feat.unsqueeze(0),  # (1, nbb, D), expanded by the model
            "img_pos_feat": pos.unsqueeze(0),
            **self.group_masks([t.size(0) for t in texts], [nbb] * len(txt_ids), input_ids.size(1)),
        }


def single_collate(inputs: Sequence[Any]) -> Any:
    """DataLoader ``batch_size=1`` collate: each item already is a batch."""
    if len(inputs) != 1:
        raise ValueError(f"expected one group per batch, found {len(inputs)}")
    return inputs[0]


def pair_layout(tl: int, nbbs: Sequence[int], iais_layout: bool = False) -> Batch:
    """Masks of one text of ``tl`` tokens against images of ``nbbs`` regions: ``attn_masks`` (B, T)
    and, in the compact layout, ``gather_index`` (B, T)."""
    txt_lens = [tl] * len(nbbs)
    if iais_layout:
        return {"attn_masks": iais_layout_masks(txt_lens, nbbs)[0]}
    attn = compact_attn_masks(txt_lens, nbbs)
    return {"attn_masks": attn, "gather_index": get_gather_index(txt_lens, nbbs, tl, attn.size(1))}


def image_text_batch(
    input_ids: Tensor, feats: Sequence[Tensor], poss: Sequence[Tensor], iais_layout: bool = False
) -> Batch:
    """One text (L,) against several images: the compact (or IAIS) eval batch of B = len(feats) pairs."""
    nbbs = [f.size(0) for f in feats]
    return {
        "input_ids": input_ids.unsqueeze(0).expand(len(feats), -1),
        "position_ids": torch.arange(input_ids.size(0), dtype=torch.long).unsqueeze(0),
        "img_feat": pad_tensors(feats, nbbs),
        "img_pos_feat": pad_tensors(poss, nbbs),
        **pair_layout(input_ids.size(0), nbbs, iais_layout),
    }


class ItmValDataset(DetectFeatTxtTokDataset):
    """One text against its image and the next ``mini_batch_size - 1`` images of the image list (wrapping)."""

    def __init__(self, txt_db, img_db, mini_batch_size: int = 400, rank: int = 0, world_size: int = 1):
        super().__init__(txt_db, img_db, rank, world_size)
        self.img2txts = txt_db.img2txts
        self.all_img_ids = list(self.img2txts)
        if not 0 < mini_batch_size <= len(self.all_img_ids):
            fail(
                f"inf_minibatch_size: expected 1..{len(self.all_img_ids)} (the images of {txt_db.db_dir}), "
                f"found {mini_batch_size}"
            )
        self.bs = mini_batch_size
        self._position = {name: j for j, name in enumerate(self.all_img_ids)}

    def window(self, i: int) -> list[str]:
        """The ground-truth image of text ``i`` then the ``bs - 1`` images after it."""
        start = self._position[self.txt2img[self.ids[i]]]
        n = len(self.all_img_ids)
        return [self.all_img_ids[(start + k) % n] for k in range(self.bs)]

    def __getitem__(self, i: int) -> Batch:
        feats, poss, _ = zip(*(self.image(name) for name in self.window(i)))
        return image_text_batch(self.input_ids(self.ids[i]), feats, poss)
