"""itr_common.data.uniter_prepro on hand-made inputs: Karpathy image names (COCO and Flickr30K), UNITER's
word-by-word WordPiece tokenisation, the split taken from the db name, NLVR2 records, a corrupt npz."""

from __future__ import annotations

import json

import numpy as np
import pytest

from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_common.data.uniter_prepro import (
    ImgdirOptions,
    bert_tokenize,
    build_txt_db,
    karpathy_image_name,
    load_npz,
    load_toker,
    nlvr2_records,
    split_from_output,
    toker_meta,
)
from itr_common.errors import UserError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", "a", "dog", "runs", "##s", "on", "grass", "two", "."]


@pytest.fixture
def toker(tmp_path):
    folder = tmp_path / "bert-base-uncased"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return load_toker(str(folder)), str(folder)


def test_karpathy_names_as_uniter():
    coco = {"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895}
    assert karpathy_image_name(coco, "coco", "x") == ("coco_val2014_000000391895.npz", 391895)
    flickr = {"filename": "1000092795.jpg"}
    assert karpathy_image_name(flickr, "flickr30k", "x") == ("flickr30k_001000092795.npz", 1000092795)
    with pytest.raises(UserError, match="Flickr30K file names"):
        karpathy_image_name({"filename": "x.jpg"}, "flickr30k", "ann.json")
    assert split_from_output("txt_db/itm_coco_restval.db") == "restval"
    assert split_from_output("txt_db/itm_flickr30k_val.db/") == "val"
    assert split_from_output("mine.db") is None


def test_word_by_word_wordpieces_and_meta(toker):
    tokenizer, name = toker
    assert bert_tokenize(tokenizer, "  A dogs  runs on grass .") == ["a", "dog", "##s", "runs", "on", "grass", "."]
    meta = toker_meta(tokenizer, name)
    assert (meta["UNK"], meta["CLS"], meta["SEP"], meta["MASK"], meta["v_range"]) == (1, 2, 3, 4, [5, len(VOCAB)])
    with pytest.raises(UserError, match="vocab.txt"):
        load_toker(str(name) + "-missing/")


def test_nlvr2_records_and_txt_db(toker, tmp_path):
    tokenizer, name = toker
    lines = [json.dumps({"identifier": "dev-850-0-0", "sentence": "two dogs", "label": "True"}),
             json.dumps({"identifier": "dev-851-1-0", "sentence": "a dog", "label": "False"}), ""]
    missing = {"nlvr2_dev-851-1-img1.npz"}
    records = list(nlvr2_records(lines, tokenizer, missing, "nlvr.json"))
    assert len(records) == 1 and records[0]["target"] == 1
    assert records[0]["img_fname"] == ["nlvr2_dev-850-0-img0.npz", "nlvr2_dev-850-0-img1.npz"]
    out = tmp_path / "nlvr2_dev.db"
    build_txt_db(out, records, {"task": "nlvr", **toker_meta(tokenizer, name)})
    db = TxtTokLmdb(out, -1)
    assert db.ids == ["dev-850-0-0"] and db["dev-850-0-0"]["input_ids"] == [12, 7, 9]
    assert json.loads((out / "img2txts.json").read_text())["nlvr2_dev-850-0-img1.npz"] == ["dev-850-0-0"]
    with pytest.raises(UserError, match="existing"):
        build_txt_db(out, records, {"task": "nlvr", **toker_meta(tokenizer, name)})
    with pytest.raises(UserError, match="line 1"):
        list(nlvr2_records(["{not json"], tokenizer, set(), "nlvr.json"))


def test_npz_cut_to_nbb_in_float16(tmp_path):
    conf = np.array([0.9, 0.5, 0.1, 0.05], dtype=np.float32)
    np.savez(tmp_path / "a.npz", features=np.ones((4, 3), np.float32), norm_bb=np.zeros((4, 6), np.float32),
             conf=conf, nbb=np.array(4))
    name, arrays, nbb, error = load_npz(str(tmp_path / "a.npz"), ImgdirOptions(conf_th=0.2, max_bb=3, min_bb=1))
    assert (name, nbb, error) == ("a.npz", 2, None) and set(arrays) == {"features", "norm_bb", "conf"}
    assert arrays["features"].shape == (2, 3) and arrays["features"].dtype == np.float16
    assert load_npz(str(tmp_path / "a.npz"), ImgdirOptions(min_bb=3, max_bb=3))[2] == 3  # min_bb floor
    assert load_npz(str(tmp_path / "a.npz"), ImgdirOptions(conf_th=-1, num_bb=5))[3].startswith("ValueError")
    np.savez(tmp_path / "b.npz", features=np.ones((4, 3)), norm_bb=np.zeros((4, 4)), conf=conf)
    assert "norm_bb (n, 6)" in load_npz(str(tmp_path / "b.npz"), ImgdirOptions())[3]
    for kwargs, flag in (({"conf_th": 1.5}, "--conf_th"), ({"min_bb": 20, "max_bb": 10}, "--min_bb"),
                         ({"num_bb": 0}, "--num_bb")):
        with pytest.raises(UserError, match=flag):
            ImgdirOptions(**kwargs)
