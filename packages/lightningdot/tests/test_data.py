"""Items, collate (positives first, then hard negatives, both towers), hard-negative modes, epoch order."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ldot_testlib import QUICK, train_argv

from itr_common.checkpoint import load_checkpoint
from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_lightningdot.data import (
    EpochOrder,
    ImageDbGroup,
    ImgTxtMappings,
    ItmFastDataset,
    itm_fast_collate,
    sample_hard_negatives,
)


@pytest.fixture(scope="module")
def dataset(world: Path) -> ItmFastDataset:
    group = ImageDbGroup(0.2, 100, 10, 36, False)
    return ItmFastDataset(TxtTokLmdb(world / "txt_db" / "itm_flickr30k_train.db", 60),
                          group[str(world / "img_db" / "flickr30k")], num_hard_negatives=2)


def test_collate_puts_positives_first_then_hard_negatives(dataset: ItmFastDataset):
    ids, fnames = dataset.ids, dataset.img_fnames
    hard_img = {t: [fnames[(k + 5) % len(fnames)], fnames[(k + 10) % len(fnames)]] for k, t in enumerate(ids)}
    hard_txt = {f: [ids[0], ids[1]] for f in dataset.all_imgs}
    dataset.new_epoch(hard_img, hard_txt)
    batch = itm_fast_collate([dataset[0], dataset[7], dataset[20]])
    assert batch["sample_size"] == 3 and batch["pos_ctx_indices"] == [0, 1, 2]
    assert batch["txts"]["input_ids"].shape[0] == 9 and batch["imgs"]["img_feat"].shape[0] == 9
    assert batch["neg_ctx_indices"] == list(range(3, 9))
    first = dataset.txt_db.combine_inputs(dataset.txt_db[ids[0]]["input_ids"])
    assert batch["txts"]["input_ids"][3, :len(first)].tolist() == first.tolist()  # item 0's first negative text
    assert batch["txts"]["input_ids"][0, 0].item() == 101 and batch["imgs"]["input_ids"][:, 0].eq(101).all()
    nbb = dataset.img_db.name2nbb[hard_img[ids[0]][0]]
    assert int(batch["imgs"]["attention_mask"][3].sum()) == 1 + nbb
    dataset.new_epoch()
    assert itm_fast_collate([dataset[0]])["txts"]["input_ids"].shape[0] == 1


def test_hard_negative_modes_pick_from_the_models_own_ranking():
    mappings = ImgTxtMappings({"a": ["t0"], "b": ["t1"]}, {"t0": "a", "t1": "b"}, {}, {})
    pool = [f"i{k}" for k in range(40)]
    ranked_img = {"t0": ["a", *pool]}  # the positive first: removed before picking
    ranked_txt = {"a": ["t0", "t1", "t2", "t3"]}
    rng = random.Random(0)
    top_img, top_txt = sample_hard_negatives(ranked_img, ranked_txt, mappings, 3, "top", rng)
    assert top_img == {"t0": ["i0", "i1", "i2"]} and top_txt == {"a": ["t1", "t2", "t3"]}
    window, _ = sample_hard_negatives(ranked_img, {}, mappings, 3, "10-20", rng)
    assert set(window["t0"]) <= {f"i{k}" for k in range(10, 20)} and len(set(window["t0"])) == 3
    window, _ = sample_hard_negatives(ranked_img, {}, mappings, 3, "20-30", rng)
    assert set(window["t0"]) <= {f"i{k}" for k in range(20, 30)}
    wide, _ = sample_hard_negatives(ranked_img, {}, mappings, 15, "10-20", rng)  # K > window: the whole window +
    assert len(set(wide["t0"])) == 15 and {f"i{k}" for k in range(10, 20)} <= set(wide["t0"])  # distinct others
    sampled, _ = sample_hard_negatives(ranked_img, {}, mappings, 3, "random", rng)
    assert set(sampled["t0"]) <= set(pool) and "a" not in sampled["t0"]


def test_epoch_order_shards_a_seeded_permutation():
    single = EpochOrder(10, 3, seed=1)
    assert sorted(single.indices(0)) == list(range(10)) and single.indices(0) != single.indices(1)
    assert single.indices(0) == EpochOrder(10, 3, seed=1).indices(0) and len(single) == 4
    r0, r1 = EpochOrder(10, 2, 1, 0, 2), EpochOrder(10, 2, 1, 1, 2)
    assert sorted(r0.indices(0) + r1.indices(0)) == list(range(10))
    assert r0.indices(0) == single.indices(0)[0::2]


def test_training_with_mined_hard_negatives(world: Path, tmp_path: Path):
    from itr_lightningdot.train_itm import main

    out = tmp_path / "hn"
    assert main(train_argv(world, out, *QUICK, "--num_hard_negatives", "2", "--hard_negatives_sampling", "top",
                           "--sample_init_hard_negatives")) == 0
    progress = load_checkpoint(out / "train_state.pt")["progress"]
    hard_img, hard_txt = progress["hard_img"], progress["hard_txt"]
    assert len(hard_img) == 240 and all(len(v) == 2 for v in hard_img.values())
    assert len(hard_txt) == 48 and all(len(v) == 2 for v in hard_txt.values())
    txt2img = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_train.db", 60).txt2img
    assert all(txt2img[t] not in negs for t, negs in hard_img.items())


def test_generated_captions_join_the_image_side_scores(world: Path, tmp_path: Path):
    from itr_common.fileio import write_json_atomic
    from itr_lightningdot.train_itm import main

    txt_db = TxtTokLmdb(world / "txt_db" / "itm_flickr30k_train.db", 60)
    meta = {}
    for fname, ids in txt_db.img2txts.items():
        meta[fname] = {"caption_multiple": [txt_db[ids[0]]["raw"], txt_db[ids[1]]["raw"]], "index": ids}
    write_json_atomic(tmp_path / "meta.json", meta)
    out = tmp_path / "caps"
    assert main(train_argv(world, out, "--num_train_epochs", "1", "--train_batch_size", "32",
                           "--caption_score_weight", "0.3", "--itm_global_file", str(tmp_path / "meta.json"))) == 0
    assert (out / "biencoder.last.pt").is_file()


def test_pad_tensors_keeps_the_first_rows_and_zero_pads():
    import torch

    from itr_common.data.batching import pad_tensors

    a, b = torch.ones(2, 3), torch.full((4, 3), 2.0)
    out = pad_tensors([a, b], [1, 4])
    assert out.shape == (2, 4, 3) and out[0, 0].tolist() == [1.0] * 3 and out[0, 1:].abs().sum() == 0
    assert torch.equal(out[1], b)


def test_db_mappings_replace_only_a_leading_prefix():
    import argparse

    from itr_lightningdot.options import map_db_dirs, map_db_path

    args = argparse.Namespace(pretrain_mapping=None, txt_db_mapping="/data/db", img_db_mapping="/data/img",
                              train_txt_dbs=["/db/a.db", "x/db/b.db"], val_img_db="/img/flickr30k", n=3)
    assert map_db_path(args, "/pretrain/c.db") == "/pretrain/c.db"
    map_db_dirs(args)
    assert args.train_txt_dbs == ["/data/db/a.db", "x/db/b.db"] and args.val_img_db == "/data/img/flickr30k"
