"""UNITER txt_db / img_db: on-disk format, nbb and drop rules, fork-safe readers, clear errors."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import lmdb
import lz4.frame
import msgpack
import msgpack_numpy
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from itr_common.data.uniter_lmdb import (
    DetectFeatLmdb,
    LazyLmdbEnv,
    LmdbWriter,
    TxtLmdb,
    TxtTokLmdb,
    check_consistency,
    compute_num_bb,
    encode_img_value,
    get_ids_and_lens,
    img_db_name,
    nbb_file_name,
    open_lmdb,
    write_img_db,
    write_txt_db,
)
from itr_common.errors import UserError

META = {"toker": "bert-base-cased", "UNK": 100, "CLS": 101, "SEP": 102, "MASK": 103, "v_range": [999, 28996]}
D = 16
N_LABELS = 1601


def _record(sentid: int, n_tokens: int, img: int) -> dict:
    tokens = [f"w{t}" for t in range(n_tokens)]
    return {
        "tokens": tokens,
        "raw": " ".join(tokens) + ".",
        "imgid": img,
        "sentid": sentid,
        "image_id": 1000 + img,
        "toked_caption": tokens,
        "input_ids": [2000 + t for t in range(n_tokens)],
        "img_fname": f"flickr30k_{1000 + img:012}.npz",
    }


RECORDS = [_record(0, 3, 0), _record(1, 5, 0), _record(2, 7, 1), _record(3, 4, 1)]


def _image(n: int, seed: int, confs: list[float] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = np.array(confs if confs is not None else rng.uniform(0, 1, n), dtype=np.float32)
    xy1 = rng.uniform(0, 0.5, (n, 2))
    wh = rng.uniform(0.1, 0.5, (n, 2))
    norm_bb = np.concatenate([xy1, xy1 + wh, wh], axis=1).astype(np.float32)
    return {
        "features": rng.normal(0, 3, (n, D)).astype(np.float32),
        "norm_bb": norm_bb,
        "conf": conf,
        "soft_labels": rng.dirichlet(np.ones(N_LABELS), n).astype(np.float32),
    }


# 15 boxes, 3 above conf_th=0.2 -> nbb = max(min_bb=2, 3) = 3 ; 12 boxes none above -> nbb = min_bb = 2
CONFS_A = [0.9, 0.1, 0.5, 0.05, 0.3] + [0.01] * 10
IMAGES = {
    "flickr30k_000000001000.npz": _image(15, 0, CONFS_A),
    "flickr30k_000000001001.npz": _image(12, 1, [0.1] * 12),
}
KW = {"conf_th": 0.2, "max_bb": 10, "min_bb": 2}


@pytest.fixture()
def txt_db(tmp_path: Path) -> Path:
    return write_txt_db(tmp_path / "itm_flickr30k_test.db", RECORDS, META)


@pytest.fixture()
def img_dir(tmp_path: Path) -> Path:
    root = tmp_path / "img_db" / "flickr30k"
    write_img_db(root, IMAGES.items(), **KW, compressed=False)
    return root


# ----------------------------------------------------------------------------------------------
# txt_db


def test_txt_db_round_trip_and_files(txt_db: Path) -> None:
    db = TxtTokLmdb(txt_db, max_txt_len=-1)
    assert db.ids == ["0", "1", "2", "3"] and db.lens == [3, 5, 7, 4]
    for rec in RECORDS:
        assert db[str(rec["sentid"])] == rec
    assert (db.cls_, db.sep, db.mask, db.v_range) == (101, 102, 103, [999, 28996])
    assert json.loads((txt_db / "meta.json").read_text()) == META
    assert json.loads((txt_db / "id2len.json").read_text()) == {"0": 3, "1": 5, "2": 7, "3": 4}
    assert db.txt2img == {"0": RECORDS[0]["img_fname"], "1": RECORDS[0]["img_fname"],
                          "2": RECORDS[2]["img_fname"], "3": RECORDS[2]["img_fname"]}
    assert db.img2txts == {RECORDS[0]["img_fname"]: ["0", "1"], RECORDS[2]["img_fname"]: ["2", "3"]}


def test_txt_value_is_lz4_msgpack_as_uniter_reads_it(txt_db: Path) -> None:
    env = lmdb.open(str(txt_db), readonly=True, lock=False)
    with env.begin() as txn:
        raw = txn.get(b"2")
    env.close()
    # UNITER: msgpack_numpy.patch(); msgpack.loads(decompress(value), raw=False)
    value = msgpack.unpackb(lz4.frame.decompress(raw), object_hook=msgpack_numpy.decode, raw=False)
    assert value == RECORDS[2]


def test_drop_rule_drops_not_truncates(txt_db: Path) -> None:
    db = TxtTokLmdb(txt_db, max_txt_len=5)
    assert db.ids == ["0", "1", "3"] and db.lens == [3, 5, 4] and len(db) == 3
    assert db["1"]["input_ids"] == RECORDS[1]["input_ids"]  # kept whole
    assert "2" not in db.id2len
    assert TxtTokLmdb(txt_db, max_txt_len=60).ids == ["0", "1", "2", "3"]


def test_combine_inputs_and_sharding(txt_db: Path) -> None:
    db = TxtTokLmdb(txt_db, max_txt_len=-1)
    assert db.combine_inputs([5, 6]).tolist() == [101, 5, 6, 102]
    assert db.combine_inputs([5], [7, 8]).tolist() == [101, 5, 102, 7, 8, 102]
    assert db.combine_inputs([5]).dtype == torch.long
    assert get_ids_and_lens(db) == ([3, 5, 7, 4], ["0", "1", "2", "3"])
    assert get_ids_and_lens(db, rank=1, world_size=2) == ([5, 4], ["1", "3"])


def test_open_lmdb_writer_mode(tmp_path: Path) -> None:
    with open_lmdb(tmp_path / "db") as db:
        db["a"] = {"input_ids": [1, 2], "arr": np.arange(3, dtype=np.int16)}
    reader = TxtLmdb(tmp_path / "db")
    value = reader["a"]
    assert value["input_ids"] == [1, 2] and value["arr"].dtype == np.int16
    np.testing.assert_array_equal(value["arr"], [0, 1, 2])
    with pytest.raises(UserError, match="readonly text DB"):
        reader["b"] = {}


def test_write_txt_db_refuses_existing_and_bad_records(txt_db: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="itm_flickr30k_test.db: expected a new LMDB directory"):
        write_txt_db(txt_db, RECORDS, META)
    with pytest.raises(UserError, match="duplicate text id '0'"):
        write_txt_db(tmp_path / "dup.db", [RECORDS[0], RECORDS[0]], META)
    with pytest.raises(UserError, match=r"meta\.json: expected keys CLS, SEP, MASK, v_range, missing SEP"):
        write_txt_db(tmp_path / "m.db", RECORDS, {"CLS": 1, "MASK": 3, "v_range": [0, 1]})
    with pytest.raises(UserError, match="record 0: expected an 'id'"):
        write_txt_db(tmp_path / "noid.db", [{"input_ids": [1], "img_fname": "x"}], META)


def test_txt_db_missing_files(txt_db: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.db: txt_db directory not found"):
        TxtTokLmdb(tmp_path / "nope.db")
    (txt_db / "id2len.json").rename(txt_db / "moved.json")
    with pytest.raises(UserError, match=r"id2len\.json: txt_db id2len not found"):
        TxtTokLmdb(txt_db)
    (txt_db / "moved.json").rename(txt_db / "id2len.json")
    (txt_db / "data.mdb").unlink()
    with pytest.raises(UserError, match=r"data\.mdb: LMDB data file not found"):
        TxtTokLmdb(txt_db)


def test_txt_db_bad_meta(txt_db: Path) -> None:
    (txt_db / "meta.json").write_text(json.dumps({"CLS": 101, "SEP": 102}))
    with pytest.raises(UserError, match=r"meta\.json: expected keys CLS, SEP, MASK, v_range, missing MASK, v_range"):
        TxtTokLmdb(txt_db)
    (txt_db / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match=r"meta\.json: expected txt_db meta as JSON, found invalid JSON"):
        TxtTokLmdb(txt_db)


def _overwrite(db_dir: Path, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(db_dir), map_size=64 * 2**20)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def test_corrupt_txt_value_names_db_and_key(txt_db: Path) -> None:
    good = lz4.frame.compress(msgpack.packb({"input_ids": [1]}))
    _overwrite(txt_db, b"1", b"\x00garbage")
    _overwrite(txt_db, b"2", good[: len(good) // 2])  # truncated frame
    db = TxtTokLmdb(txt_db)
    assert db["0"] == RECORDS[0]
    with pytest.raises(UserError, match=r"itm_flickr30k_test\.db: corrupt value for key '1'"):
        db["1"]
    with pytest.raises(UserError, match=r"itm_flickr30k_test\.db: corrupt value for key '2'"):
        db["2"]
    with pytest.raises(UserError, match=r"text id '9' not found"):
        db["9"]


@pytest.mark.parametrize(
    ("keep", "message"),
    [(0.5, "truncated LMDB file: expected at least"), (100, "expected an LMDB data file, found unreadable data")],
    ids=["half", "header-only"],
)
def test_truncated_data_mdb_fails_with_one_line(tmp_path: Path, keep: float, message: str) -> None:
    rng = np.random.default_rng(0)
    records = [dict(_record(i, 40, i), raw=rng.bytes(3000).hex()) for i in range(30)]  # overflow pages
    db_dir = write_txt_db(tmp_path / "big.db", records, META)
    data = db_dir / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, int(size * keep) if keep < 1 else int(keep))
    with pytest.raises(UserError, match=r"big\.db/data\.mdb: " + message) as err:
        TxtTokLmdb(db_dir)
    assert "\n" not in str(err.value)


def test_writer_grows_a_small_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    values = {f"k{i}".encode(): rng.bytes(5000) for i in range(60)}  # ~300 KB into a 64 KB map
    with LmdbWriter(tmp_path / "db", map_size=64 * 1024) as writer:
        for key, value in values.items():
            writer.put(key, value)
    reader = LazyLmdbEnv(tmp_path / "db")
    assert all(reader.read(k) == v for k, v in values.items())


# ----------------------------------------------------------------------------------------------
# img_db


def test_nbb_rule() -> None:
    assert compute_num_bb(np.array([0.9, 0.1, 0.5, 0.05, 0.3]), 0.2, 2, 10) == 3
    assert compute_num_bb(np.full(50, 0.1), 0.2, 10, 100) == 10  # min_bb floor
    assert compute_num_bb(np.full(150, 0.9), 0.2, 10, 100) == 100  # max_bb cap
    assert compute_num_bb(np.array([0.2, 0.21]), 0.2, 0, 100) == 1  # strictly greater


def test_names() -> None:
    assert img_db_name(0.2, 100, 10, 36, False) == "feat_th0.2_max100_min10"
    assert img_db_name(0.2, 100, 10, 36, True) == "feat_th0.2_max100_min10_compressed"
    assert img_db_name(-1, 100, 10, 36, False) == "feat_numbb36"
    assert nbb_file_name(0.2, 100, 10) == "nbb_th0.2_max100_min10.json"


@pytest.mark.parametrize("compressed", [False, True])
def test_img_db_round_trip_bit_for_bit(tmp_path: Path, compressed: bool) -> None:
    root = tmp_path / "img"
    db_path = write_img_db(root, IMAGES.items(), **KW, compressed=compressed)
    assert db_path.name == "feat_th0.2_max10_min2" + ("_compressed" if compressed else "")
    nbb = {"flickr30k_000000001000.npz": 3, "flickr30k_000000001001.npz": 2}
    assert json.loads((root / "nbb_th0.2_max10_min2.json").read_text()) == nbb
    db = DetectFeatLmdb(root, **KW, compressed=compressed)
    assert db.name2nbb == nbb and len(db) == 2
    for fname, arrays in IMAGES.items():
        raw = db.get_raw(fname)
        assert sorted(raw) == ["conf", "features", "norm_bb", "soft_labels"]
        for key, arr in arrays.items():
            expected = arr[: nbb[fname]].astype(np.float16).astype(np.float32)
            assert raw[key].dtype == np.float32
            np.testing.assert_array_equal(raw[key], expected)
        # stored as fp16, already cut to nbb rows
        with db.env.get().begin() as txn:  # one handle per file per process: the reader's
            value = txn.get(fname.encode())
            keys = json.loads(txn.get(b"__keys__"))
        if compressed:
            stored = dict(np.load(io.BytesIO(value)))
        else:
            stored = msgpack.unpackb(value, object_hook=msgpack_numpy.decode, raw=False)
        assert stored["features"].dtype == np.float16 and stored["features"].shape == (nbb[fname], D)
        assert keys == list(IMAGES)


def test_getitem_features_and_7d_position(img_dir: Path) -> None:
    db = DetectFeatLmdb(img_dir, **KW, compressed=False)
    fname = "flickr30k_000000001000.npz"
    feats, pos = db[fname]
    assert feats.dtype == torch.float32 and feats.shape == (3, D)
    assert pos.dtype == torch.float32 and pos.shape == (3, 7)
    bb = IMAGES[fname]["norm_bb"][:3].astype(np.float16).astype(np.float32)
    torch.testing.assert_close(pos[:, :6], torch.from_numpy(bb), rtol=0, atol=0)
    torch.testing.assert_close(pos[:, 6], torch.from_numpy(bb[:, 4] * bb[:, 5]), rtol=0, atol=0)
    with pytest.raises(UserError, match="image 'nope.npz' not in the nbb map"):
        db["nope.npz"]


def test_fixed_num_bb(tmp_path: Path) -> None:
    root = tmp_path / "img"
    path = write_img_db(root, IMAGES.items(), conf_th=-1, num_bb=4)
    assert path.name == "feat_numbb4" and not list(root.glob("nbb_*.json"))
    db = DetectFeatLmdb(root, conf_th=-1, num_bb=4, compressed=False)
    assert db.name2nbb == {name: 4 for name in IMAGES}
    assert db["flickr30k_000000001001.npz"][0].shape == (4, D)
    with pytest.raises(UserError, match=r"expected at least 20 boxes"):
        write_img_db(tmp_path / "img2", IMAGES.items(), conf_th=-1, num_bb=20)


def test_all_db_fallback_computes_nbb(tmp_path: Path) -> None:
    """UNITER: without the nbb json, an ``all`` LMDB is read and nbb computed from conf."""
    root = tmp_path / "img"
    with LmdbWriter(root / "all") as writer:
        for fname, arrays in IMAGES.items():
            writer.put(fname.encode(), encode_img_value({k: v.astype(np.float16) for k, v in arrays.items()}, False))
        writer.put(b"__keys__", json.dumps(list(IMAGES)).encode())
    db = DetectFeatLmdb(root, **KW, compressed=False)
    assert db.db_name == "all"
    assert db.name2nbb == {"flickr30k_000000001000.npz": 3, "flickr30k_000000001001.npz": 2}
    assert db["flickr30k_000000001000.npz"][0].shape == (3, D)


def test_missing_nbb_json_lists_what_exists(img_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        DetectFeatLmdb(img_dir, conf_th=0.2, max_bb=100, min_bb=10, compressed=False)
    msg = str(err.value)
    assert "nbb_th0.2_max100_min10.json: nbb file for conf_th=0.2 max_bb=100 min_bb=10 not found" in msg
    assert "has: feat_th0.2_max10_min2, nbb_th0.2_max10_min2.json" in msg


def test_compressed_mismatch_names_dir(img_dir: Path) -> None:
    expected = r"feat_th0\.2_max10_min2_compressed: img_db LMDB not found \(compressed=True\)"
    with pytest.raises(UserError, match=expected):
        DetectFeatLmdb(img_dir, **KW, compressed=True)
    with pytest.raises(UserError, match="img_db directory not found"):
        DetectFeatLmdb(img_dir / "missing", **KW)


def test_corrupt_img_value(img_dir: Path) -> None:
    _overwrite(img_dir / "feat_th0.2_max10_min2", b"flickr30k_000000001000.npz", b"\xc1\xc1")
    db = DetectFeatLmdb(img_dir, **KW, compressed=False)
    with pytest.raises(UserError, match=r"feat_th0\.2_max10_min2: corrupt value for key 'flickr30k_000000001000\.npz'"):
        db["flickr30k_000000001000.npz"]
    assert db["flickr30k_000000001001.npz"][0].shape == (2, D)


def test_nan_features(tmp_path: Path, img_dir: Path) -> None:
    bad = {k: v.copy() for k, v in IMAGES["flickr30k_000000001000.npz"].items()}
    bad["features"][1, 2] = np.nan
    with pytest.raises(UserError, match=r"image 'x\.npz' features: expected finite values, found NaN/inf"):
        write_img_db(tmp_path / "w", [("x.npz", bad)], **KW)
    stored = {k: v[:3].astype(np.float16) for k, v in bad.items()}
    _overwrite(img_dir / "feat_th0.2_max10_min2", b"flickr30k_000000001000.npz", encode_img_value(stored, False))
    db = DetectFeatLmdb(img_dir, **KW, compressed=False)
    with pytest.raises(UserError, match=r"feat_th0\.2_max10_min2: image 'flickr30k_000000001000\.npz' features: .*NaN"):
        db["flickr30k_000000001000.npz"]


def test_fp16_overflow_refused(tmp_path: Path) -> None:
    big = {k: v.copy() for k, v in IMAGES["flickr30k_000000001000.npz"].items()}
    big["features"][0, 0] = 1e6
    with pytest.raises(UserError, match="features: values overflow float16"):
        write_img_db(tmp_path / "w", [("x.npz", big)], **KW)


def test_check_consistency(txt_db: Path, img_dir: Path) -> None:
    txt = TxtTokLmdb(txt_db, max_txt_len=-1)
    img = DetectFeatLmdb(img_dir, **KW, compressed=False)
    assert check_consistency(txt, img) == 4
    txt2img = json.loads((txt_db / "txt2img.json").read_text())
    txt2img["3"] = "flickr30k_000000009999.npz"
    (txt_db / "txt2img.json").write_text(json.dumps(txt2img))
    txt = TxtTokLmdb(txt_db, max_txt_len=-1)
    with pytest.raises(UserError, match=r"txt2img\.json: 1 of 4 texts point at images missing from .*"
                                        r"\(first: text '3' -> 'flickr30k_000000009999\.npz'\)"):
        check_consistency(txt, [img])


# ----------------------------------------------------------------------------------------------
# several processes


class _PairDataset(Dataset):
    def __init__(self, txt: TxtTokLmdb, img: DetectFeatLmdb) -> None:
        self.txt, self.img = txt, img

    def __len__(self) -> int:
        return len(self.txt.ids) * 3

    def __getitem__(self, i: int):
        id_ = self.txt.ids[i % len(self.txt.ids)]
        example = self.txt[id_]
        feats, pos = self.img[example["img_fname"]]
        return id_, example["input_ids"], feats.sum().item(), os.getpid(), self.img.env.opened_in


def test_dataloader_workers_share_one_db(txt_db: Path, img_dir: Path) -> None:
    txt = TxtTokLmdb(txt_db, max_txt_len=-1)
    img = DetectFeatLmdb(img_dir, **KW, compressed=False)
    ds = _PairDataset(txt, img)
    expected = [ds[i][:3] for i in range(len(ds))]  # the parent has opened its envs
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=lambda b: b)
    got = [item for batch in loader for item in batch]
    assert [g[:3] for g in got] == expected
    worker_pids = {g[3] for g in got}
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert all(g[4] == g[3] for g in got)  # each worker reopened the env itself


def test_pickled_db_reopens(txt_db: Path, img_dir: Path) -> None:
    img = DetectFeatLmdb(img_dir, **KW, compressed=False)
    again = pickle.loads(pickle.dumps(img))
    assert again.env.opened_in is None
    torch.testing.assert_close(again["flickr30k_000000001000.npz"][0], img["flickr30k_000000001000.npz"][0])
    txt = pickle.loads(pickle.dumps(TxtTokLmdb(txt_db)))
    assert txt["3"] == RECORDS[3]
