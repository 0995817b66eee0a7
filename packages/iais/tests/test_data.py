"""Hard-negative groups and validation windows read from the tiny world's txt_db / img_db."""

from __future__ import annotations

import random

import pytest
import torch

from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_iais.data import HardNegFromImage, HardNegFromText, ItmValDataset


@pytest.fixture(scope="module")
def dbs(world):
    txt = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_train.db", 60)
    img = DetectFeatLmdb(world / "img_db" / "flickr30k", 0.2, 100, 10, 36, compressed=False)
    return txt, img


@pytest.mark.parametrize("iais", [False, True])
def test_group_from_text(dbs, iais):
    txt, img = dbs
    random.seed(0)
    ds = HardNegFromText(txt, img, 15, iais=iais)
    batch = ds[3]
    gt = txt.txt2img[ds.ids[3]]
    feat, _ = img[gt]
    assert batch["input_ids"].shape[0] == 1 and batch["input_ids"][0, 0] == txt.cls_
    assert batch["input_ids"][0, -1] == txt.sep
    assert batch["img_feat"].shape[0] == 16 and torch.equal(batch["img_feat"][0, : feat.size(0)], feat)
    assert batch["img_pos_feat"].shape[-1] == 7
    tl = batch["input_ids"].size(1)
    if iais:
        assert "gather_index" not in batch
        assert batch["txt_attn_masks"][0, :tl].tolist() == [0] + [1] * (tl - 2) + [0]
        assert batch["img_attn_masks"][0].sum() == feat.size(0)
    else:
        assert batch["gather_index"].shape == batch["attn_masks"].shape
        assert batch["attn_masks"][0].sum() == tl + feat.size(0)


def test_group_from_image_has_no_own_caption_among_negatives(dbs):
    txt, img = dbs
    random.seed(1)
    ds = HardNegFromImage(txt, img, 15, iais=True)
    batch = ds[0]
    assert batch["input_ids"].shape[0] == 16 and batch["img_feat"].shape[0] == 1
    own = {tuple(txt.combine_inputs(txt[t]["input_ids"]).tolist()) for t in txt.img2txts[txt.txt2img[ds.ids[0]]]}
    rows = [tuple(r[r != 0].tolist()) for r in batch["input_ids"]]
    assert rows[0] in own and not own & set(rows[1:])


def test_ranks_get_disjoint_text_shards(dbs):
    txt, img = dbs
    a = HardNegFromText(txt, img, 15, rank=0, world_size=2)
    b = HardNegFromText(txt, img, 15, rank=1, world_size=2)
    assert len(a) + len(b) == len(txt.ids) and not set(a.ids) & set(b.ids)


def test_validation_window_starts_with_the_ground_truth(world):
    txt = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_val.db", -1)
    img = DetectFeatLmdb(world / "img_db" / "flickr30k", compressed=False)
    ds = ItmValDataset(txt, img, 5)
    window = ds.window(len(ds) - 1)
    assert window[0] == txt.txt2img[ds.ids[-1]] and len(set(window)) == 5
    assert ds[0]["img_feat"].shape[0] == 5


def test_too_many_negatives_are_refused_when_the_dataset_is_built(dbs):
    """Checked when the datasets are built (before the model and the output folder), not at the first group. The
    text pool is this rank's shard, so with many processes it can be smaller than the image pool."""
    from itr_common.errors import UserError

    txt, img = dbs
    with pytest.raises(UserError, match=r"negative_size: expected at most 47 \(.*pool of 48 images .*found 48"):
        HardNegFromText(txt, img, 48)
    HardNegFromText(txt, img, 47)
    shard = HardNegFromImage(txt, img, 1, rank=0, world_size=8)  # 30 of the 240 texts
    own = max(sum(t in shard.txt2img for t in txt.img2txts[i]) for i in set(shard.txt2img.values()))
    limit = len(shard.txt_name_list) - own
    with pytest.raises(UserError, match=rf"at most {limit} \(.*pool of {len(shard.txt_name_list)} texts"):
        HardNegFromImage(txt, img, limit + 1, rank=0, world_size=8)
    group = HardNegFromImage(txt, img, limit, rank=0, world_size=8)[0]
    assert group["input_ids"].shape[0] == limit + 1
