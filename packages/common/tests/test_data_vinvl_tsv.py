"""VinVL/OSCAR coco_ir readers and writers: round trips, offsets, and one clear error per bad input."""

from __future__ import annotations

import base64
import json
import os
import pickle

import numpy as np
import pytest
import torch

from itr_common.data.vinvl_tsv import (
    FEATURE_DIM,
    FeatureTSV,
    PredictionsTSV,
    TSVFile,
    VinVLRetrievalSplit,
    encode_features,
    generate_lineidx_file,
    image_caption_index,
    lineidx_path_for,
    load_captions_pt,
    read_img_keys,
    write_captions_pt,
    write_features_tsv,
    write_img_keys,
    write_predictions_tsv,
    write_tsv,
)
from itr_common.errors import UserError

DIM = 8  # a small feat_dim for most tests; the 2054 default is covered by the round trip


def _features(seed: int, ids=(11, 22, 33), dim: int = DIM, boxes=(3, 1, 2)) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal((n, dim)).astype(np.float32) for i, n in zip(ids, boxes)}


def _write_raw_features(path, rows) -> None:
    """features.tsv + lineidx + imageid2idx.json from raw (image_id, num_boxes, payload) rows."""
    write_tsv(path, rows)
    (path.parent / "imageid2idx.json").write_text(json.dumps({str(r[0]): i for i, r in enumerate(rows)}))


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()


# ------------------------------------------------------------------------------------------- TSVFile
def test_lineidx_offsets_are_byte_offsets_of_row_starts(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("1", "ab"), ("22", "é"), ("333", "")])
    # rows: "1\tab\n" (5 bytes), "22\t\xc3\xa9\n" (6 bytes: é is 2 bytes in UTF-8), "333\t\n"
    assert lineidx_path_for(path).read_text() == "0\n5\n11\n"
    tsv = TSVFile(path, num_columns=2)
    assert len(tsv) == tsv.num_rows() == 3
    assert tsv.seek(1) == ["22", "é"]
    assert tsv[2] == ["333", ""]
    assert [tsv.get_key(i) for i in range(3)] == ["1", "22", "333"]
    assert list(tsv) == [["1", "ab"], ["22", "é"], ["333", ""]]


def test_missing_lineidx_is_generated_like_the_writer(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "x" * 100), ("b", "y")])
    written = lineidx_path_for(path).read_bytes()
    lineidx_path_for(path).unlink()
    assert TSVFile(path).seek(1) == ["b", "y"]
    assert lineidx_path_for(path).read_bytes() == written == b"0\n103\n"
    assert generate_lineidx_file(path, tmp_path / "other.lineidx").read_bytes() == written


def test_missing_lineidx_without_generation_names_it(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "b")])
    lineidx_path_for(path).unlink()
    with pytest.raises(UserError, match="t.lineidx"):
        TSVFile(path, generate_lineidx=False)


def test_get_key_reads_past_its_first_chunk(tmp_path):
    long_key = "k" * 200
    path = write_tsv(tmp_path / "t.tsv", [(long_key, "v"), ("x", "y")])
    assert TSVFile(path).get_key(0) == long_key


def test_wrong_number_of_fields_names_file_row_and_expectation(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "b"), ("c", "d", "e")])
    tsv = TSVFile(path, num_columns=2)
    assert tsv.seek(0) == ["a", "b"]
    with pytest.raises(UserError, match=r"t\.tsv: row 1: expected 2 tab-separated fields, found 3"):
        tsv.seek(1)


def test_file_cut_mid_row_is_reported_as_truncated(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "bbbb"), ("c", "dddd")])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(UserError, match=r"t\.tsv: row 1 is truncated"):
        TSVFile(path)


def test_offset_past_end_of_file(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "bbbb"), ("c", "dddd")])
    path.write_bytes(path.read_bytes()[:4])  # only part of row 0 is left; row 1 starts at byte 7
    with pytest.raises(UserError, match=r"t\.tsv: row 1: offset 7 is past the end of the file \(4 bytes\)"):
        TSVFile(path)


def test_file_shrinking_after_open_is_caught_on_seek(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "bbbb"), ("c", "dddd")])
    tsv = TSVFile(path)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(UserError, match=r"t\.tsv: row 1 is truncated: expected 7 bytes"):
        tsv.seek(1)


def test_stale_lineidx_is_reported(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "bb"), ("c", "dd"), ("e", "ff")])
    path.write_bytes(b"a\tb\nc\tdddd\ne\tff\n")  # same size, other row boundaries
    tsv = TSVFile(path)
    with pytest.raises(UserError, match=r"row 0: .*stale t\.lineidx"):
        tsv.seek(0)
    with pytest.raises(UserError, match=r"row 2: offset 10 .* does not start a row"):
        tsv.seek(2)
    lineidx_path_for(path).write_text("0\n3\n2\n")
    with pytest.raises(UserError, match=r"t\.lineidx: offsets must increase; row 2"):
        TSVFile(path)
    lineidx_path_for(path).write_text("0\nfour\n")
    with pytest.raises(UserError, match=r"t\.lineidx: line 2: expected a byte offset"):
        TSVFile(path)


def test_reopens_after_fork_and_pickles_without_handle(tmp_path):
    path = write_tsv(tmp_path / "t.tsv", [("a", "1"), ("b", "2"), ("c", "3")])
    tsv = TSVFile(path)
    assert tsv.seek(0) == ["a", "1"]
    parent_handle = tsv._fp
    position = parent_handle.tell()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: read a row, report whether a new handle was opened
        os.close(read_fd)
        try:
            ok = tsv.seek(2) == ["c", "3"] and tsv._fp is not parent_handle and tsv._pid == os.getpid()
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 1) == b"1"
    os.close(read_fd)
    assert parent_handle.tell() == position  # the child never moved the parent's file position
    assert tsv.seek(1) == ["b", "2"]
    clone = pickle.loads(pickle.dumps(tsv))
    assert clone._fp is None and clone.seek(2) == ["c", "3"]


# -------------------------------------------------------------------------------------- features.tsv
def test_features_round_trip_bit_for_bit_at_full_width(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.standard_normal((4, FEATURE_DIM)).astype(np.float32)
    first[0, :4] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, np.finfo(np.float32).tiny]
    features = {391895: first, 7: np.zeros((0, FEATURE_DIM), np.float32), 12: first[1:2] * 3}
    path = write_features_tsv(tmp_path / "feat", features)
    assert path == tmp_path / "feat" / "features.tsv"
    assert json.loads((tmp_path / "feat" / "imageid2idx.json").read_text()) == {"391895": 0, "7": 1, "12": 2}
    reader = FeatureTSV(path)
    assert len(reader) == 3 and 391895 in reader and "7" in reader and 8 not in reader
    for image_id, array in features.items():
        got = reader.get(image_id)
        assert got.dtype == np.float32 and got.shape == array.shape
        assert got.tobytes() == array.tobytes()
    assert reader[391895].flags.writeable
    offsets = [int(x) for x in lineidx_path_for(path).read_text().split()]
    rows = path.read_bytes().split(b"\n")[:-1]
    assert offsets == [0, len(rows[0]) + 1, len(rows[0]) + len(rows[1]) + 2]
    assert rows[1] == b"7\t0\t"


def test_feature_row_format_is_hand_checkable(tmp_path):
    path = write_features_tsv(tmp_path, {5: np.array([[1.0, -2.0]], np.float32)}, feat_dim=2)
    # 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0 (little endian) -> base64 "AACAPwAAAMA="
    assert path.read_text() == "5\t1\tAACAPwAAAMA=\n"
    np.testing.assert_array_equal(FeatureTSV(path, feat_dim=2).get(5), [[1.0, -2.0]])


def test_features_custom_name_and_imageid2idx_path(tmp_path):
    path = write_features_tsv(tmp_path, _features(1), name="minival_feats", feat_dim=DIM)
    assert path.name == "minival_feats.tsv" and lineidx_path_for(path).name == "minival_feats.lineidx"
    moved = tmp_path / "maps" / "ids.json"
    moved.parent.mkdir()
    (tmp_path / "imageid2idx.json").rename(moved)
    reader = FeatureTSV(path, imageid2idx_path=moved, feat_dim=DIM)
    np.testing.assert_array_equal(reader.get(33), _features(1)[33])


def test_bad_base64_names_file_and_row(tmp_path):
    path = tmp_path / "features.tsv"
    _write_raw_features(path, [(1, 1, _b64(np.ones((1, DIM)))), (2, 1, "not*base64!")])
    reader = FeatureTSV(path, feat_dim=DIM)
    reader.get(1)
    with pytest.raises(UserError, match=r"features\.tsv: row 1: expected base64-encoded float32 features"):
        reader.get(2)


def test_wrong_buffer_size_names_file_and_expected_bytes(tmp_path):
    path = tmp_path / "features.tsv"
    _write_raw_features(path, [(1, 3, _b64(np.ones((2, DIM))))])
    with pytest.raises(UserError, match=rf"features\.tsv: row 0: expected {3 * DIM * 4} bytes .* found {2 * DIM * 4}"):
        FeatureTSV(path, feat_dim=DIM).get(1)
    _write_raw_features(path, [(1, 2, _b64(np.ones((2, DIM))))])
    with pytest.raises(UserError, match=rf"features\.tsv: row 0: expected .* \({DIM} values per box\)"):
        FeatureTSV(path, feat_dim=2 * DIM).get(1)  # wrong --img_feature_dim


def test_nan_and_inf_features_are_refused(tmp_path):
    bad = np.ones((2, DIM), np.float32)
    bad[1, 3] = np.nan
    bad[0, 0] = np.inf
    path = tmp_path / "features.tsv"
    _write_raw_features(path, [(9, 2, _b64(bad))])
    with pytest.raises(UserError, match=r"features\.tsv: row 0: expected finite features, found 2 NaN/inf"):
        FeatureTSV(path, feat_dim=DIM).get(9)
    with pytest.raises(UserError, match=r"out.*features\.tsv: image 9: expected finite features"):
        write_features_tsv(tmp_path / "out", {9: bad}, feat_dim=DIM)


def test_feature_rows_with_bad_fields(tmp_path):
    path = tmp_path / "features.tsv"
    _write_raw_features(path, [(1, "x", _b64(np.ones((1, DIM)))), (2, -1, "")])
    reader = FeatureTSV(path, feat_dim=DIM)
    with pytest.raises(UserError, match=r"features\.tsv: row 0: expected num_boxes as an int"):
        reader.get(1)
    with pytest.raises(UserError, match=r"features\.tsv: row 1: expected num_boxes >= 0"):
        reader.get(2)
    _write_raw_features(path, [(1, 1)])
    with pytest.raises(UserError, match=r"features\.tsv: row 0: expected 3 tab-separated fields, found 2"):
        FeatureTSV(path, feat_dim=DIM).get(1)


def test_truncated_features_file(tmp_path):
    path = write_features_tsv(tmp_path, _features(2), feat_dim=DIM)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"features\.tsv: row 2 is truncated"):
        FeatureTSV(path, feat_dim=DIM)


def test_imageid2idx_problems(tmp_path):
    path = write_features_tsv(tmp_path, _features(3), feat_dim=DIM)
    mapping = tmp_path / "imageid2idx.json"
    with pytest.raises(UserError, match=r"imageid2idx\.json: image id 44 not found \(3 ids listed\)"):
        FeatureTSV(path, feat_dim=DIM).get(44)
    mapping.write_text(json.dumps({"11": 1}))  # points at image 22's row
    with pytest.raises(UserError, match=r"image id 11 maps to row 1 of .*features\.tsv, whose image id is 22"):
        FeatureTSV(path, feat_dim=DIM).get(11)
    mapping.write_text(json.dumps({"11": 3}))
    with pytest.raises(UserError, match=r"imageid2idx\.json: image id 11: row index 3 is outside .* 3 rows"):
        FeatureTSV(path, feat_dim=DIM)
    mapping.write_text("{not json")
    with pytest.raises(UserError, match=r"imageid2idx\.json: expected JSON"):
        FeatureTSV(path, feat_dim=DIM)
    mapping.unlink()
    with pytest.raises(UserError, match=r"imageid2idx\.json: imageid2idx\.json not found"):
        FeatureTSV(path, feat_dim=DIM)


def test_missing_feature_file_is_named(tmp_path):
    with pytest.raises(UserError, match=r"nowhere\.tsv: TSV file not found"):
        FeatureTSV(tmp_path / "nowhere.tsv")


def test_writer_checks_shapes(tmp_path):
    with pytest.raises(UserError, match=rf"image 1: expected an array \(num_boxes, {DIM}\), found shape \(2, 3\)"):
        write_features_tsv(tmp_path, {1: np.ones((2, 3), np.float32)}, feat_dim=DIM)
    with pytest.raises(UserError, match="expected float features"):
        encode_features(np.ones((1, DIM), np.int64), DIM)


# ------------------------------------------------------------------------------------ predictions.tsv
def _predictions() -> dict[int, object]:
    return {
        11: {
            "objects": [
                {"class": "man", "rect": [1, 2, 30, 40], "conf": 0.9},
                {"class": "dog", "rect": [5, 5, 9, 9], "conf": np.float32(0.5)},
                {"class": "man", "rect": np.array([0.0, 0.0, 1.0, 1.0]), "conf": 0.3},
            ],
            "image_h": 480,
            "image_w": 640,
        },
        22: [{"class": "red car", "rect": [0, 0, 10, 10]}],
        33: {"objects": [], "image_h": 10, "image_w": 20},
    }


def test_predictions_round_trip_and_tags(tmp_path):
    path = write_predictions_tsv(tmp_path, _predictions())
    assert path.name == "predictions.tsv" and (tmp_path / "predictions.lineidx").is_file()
    preds = PredictionsTSV(path)
    assert len(preds) == 3 and preds.image_ids == [11, 22, 33] and "22" in preds and 44 not in preds
    assert preds.tags(11) == "man dog man"  # detector order, repeats kept (OSCAR get_od_labels)
    assert preds.tags(22) == "red car" and preds.tags(33) == ""
    record = preds.record(11)
    assert (record.image_h, record.image_w, record.classes) == (480, 640, ["man", "dog", "man"])
    np.testing.assert_array_equal(record.boxes, [[1, 2, 30, 40], [5, 5, 9, 9], [0, 0, 1, 1]])
    assert record.boxes.dtype == np.float32 and record.tags == "man dog man"
    bare = preds.record(22)
    assert (bare.image_h, bare.image_w) == (600, 800)  # OSCAR's defaults for a bare list
    assert preds.objects(11)[1]["conf"] == 0.5
    assert preds.record(33).boxes.shape == (0, 4)


def test_predictions_bad_input(tmp_path):
    path = tmp_path / "predictions.tsv"
    with pytest.raises(UserError, match=r"predictions\.tsv: TSV file not found"):
        PredictionsTSV(path)
    write_tsv(path, [(1, "{oops"), (2, json.dumps({"boxes": []})), (3, json.dumps([{"rect": [0, 0, 1, 1]}]))])
    preds = PredictionsTSV(path)
    with pytest.raises(UserError, match=r"predictions\.tsv: row 0: expected JSON predictions"):
        preds.tags(1)
    with pytest.raises(UserError, match=r"predictions\.tsv: row 1: expected .* found a dict without 'objects'"):
        preds.tags(2)
    with pytest.raises(UserError, match=r"predictions\.tsv: row 2: object 0: expected a dict with a string 'class'"):
        preds.tags(3)
    with pytest.raises(UserError, match=r"predictions\.tsv: image id 4 not found"):
        preds.tags(4)
    write_tsv(path, [(1, json.dumps([{"class": "a"}])), (1, "[]")])
    with pytest.raises(UserError, match=r"predictions\.tsv: row 1: image id 1 already in row 0"):
        PredictionsTSV(path).tags(1)
    write_tsv(path, [(1, json.dumps([{"class": "a", "rect": [1, 2]}]))])
    with pytest.raises(UserError, match=r"predictions\.tsv: row 0: expected every object to have a 4-number 'rect'"):
        PredictionsTSV(path).record(1)
    with pytest.raises(UserError, match=r"bad\.tsv: row 0: expected .* found int"):
        write_predictions_tsv(tmp_path, {1: 5}, name="bad")


# ------------------------------------------------------------------------------------ captions / keys
def test_captions_round_trip_and_json_string_values(tmp_path):
    captions = {391895: ["a man rides a bike .", "a cyclist ."], 7: ["one", "two"]}
    path = write_captions_pt(tmp_path / "coco_ir" / "test_captions.pt", captions)
    loaded = load_captions_pt(path, captions_per_image=2)
    assert loaded == captions and list(loaded) == [391895, 7]
    torch.save({"5": json.dumps(["x", "y", "z"]), 6: ["p", "q", "r"]}, tmp_path / "mixed.pt")
    assert load_captions_pt(tmp_path / "mixed.pt") == {5: ["x", "y", "z"], 6: ["p", "q", "r"]}


def test_captions_per_image_check(tmp_path):
    path = write_captions_pt(tmp_path / "c.pt", {1: ["a"] * 5, 2: ["b"] * 4})
    assert len(load_captions_pt(path, captions_per_image=4)) == 2
    with pytest.raises(UserError, match=r"c\.pt: image 2: expected at least 5 captions, found 4"):
        load_captions_pt(path, captions_per_image=5)


class _Payload:
    """Pickles to a call of os.remove: what a malicious captions file would run on load."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.remove, (self.target,))


def test_malicious_captions_pickle_is_refused_without_running(tmp_path):
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("still here")
    path = tmp_path / "train_captions.pt"
    torch.save({1: ["a caption"], 2: _Payload(str(sentinel))}, path)
    with pytest.raises(UserError, match=r"train_captions\.pt: refusing to unpickle \S*remove"):
        load_captions_pt(path)
    assert sentinel.read_text() == "still here"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({1: "not json ["}, r"image 1: expected a list of captions or a JSON string of one"),
        ({1: [3, 4]}, r"image 1: expected a list of caption strings"),
        ({"abc": ["x"]}, r"expected int image ids as keys, found 'abc'"),
        ({1: ["x"], "1": ["y"]}, r"image id 1 appears twice"),
        ({}, r"expected a dict image_id -> list of captions, found an empty dict"),
        ([["x"]], r"expected a dict image_id -> list of captions, found list"),
    ],
)
def test_bad_captions_files(tmp_path, content, message):
    path = tmp_path / "c.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"c\.pt: " + message):
        load_captions_pt(path)


def test_unreadable_or_missing_captions_file(tmp_path):
    with pytest.raises(UserError, match=r"gone\.pt: captions file not found"):
        load_captions_pt(tmp_path / "gone.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.pt: expected a torch.save'd dict of captions, found an empty file"):
        load_captions_pt(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(UserError, match=r"junk\.pt: "):
        load_captions_pt(tmp_path / "junk.pt")


def test_img_keys_round_trip_and_format(tmp_path):
    path = write_img_keys(tmp_path / "test_img_keys_1k.tsv", [391895, 7, 12])
    assert path.read_text() == "391895\n7\n12\n"
    assert read_img_keys(path) == [391895, 7, 12]
    path.write_text("5\n 6 \r\n\n7")  # stray spaces, CRLF, blank line, no final newline
    assert read_img_keys(path) == [5, 6, 7]


def test_img_keys_bad_input(tmp_path):
    path = tmp_path / "keys.tsv"
    with pytest.raises(UserError, match=r"keys\.tsv: image keys file not found"):
        read_img_keys(path)
    path.write_text("1\n2\nCOCO_1\n")
    with pytest.raises(UserError, match=r"keys\.tsv: line 3: expected one int image id, found 'COCO_1'"):
        read_img_keys(path)
    path.write_text("1\n2\n1\n")
    with pytest.raises(UserError, match=r"keys\.tsv: line 3: image id 1 is listed twice"):
        read_img_keys(path)
    path.write_text("\n\n")
    with pytest.raises(UserError, match=r"keys\.tsv: expected image ids, one a line, found none"):
        read_img_keys(path)


# ------------------------------------------------------------------------------ retrieval split container
def test_image_caption_index_hand_cases():
    # N = 3 images, k = 2 captions: plain pair 5 = image 2, caption 1
    assert image_caption_index(5, 3, 2) == (2, 2, 1)
    assert image_caption_index(0, 3, 2) == (0, 0, 0)
    # cross-image: k*N = 6 pairs per image; pair 7 = image 1 with caption slot 1 = image 0's caption 1
    assert image_caption_index(7, 3, 2, cross_image=True) == (1, 0, 1)
    assert image_caption_index(17, 3, 2, cross_image=True) == (2, 2, 1)


def _coco_ir_tree(tmp_path):
    data_dir, feat_dir = tmp_path / "coco_ir", tmp_path / "features"
    captions = {
        11: [f"c11 {j}" for j in range(6)],
        22: [f"c22 {j}" for j in range(5)],
        33: [f"c33 {j}" for j in range(5)],
    }
    write_captions_pt(data_dir / "test_captions.pt", captions)
    write_img_keys(data_dir / "test_img_keys_1k.tsv", [33, 11])
    features = _features(4)
    write_features_tsv(feat_dir, features, feat_dim=DIM)
    write_predictions_tsv(feat_dir, _predictions())
    return data_dir, feat_dir / "features.tsv", features


def test_retrieval_split_ties_captions_features_and_tags(tmp_path):
    data_dir, feat_file, features = _coco_ir_tree(tmp_path)
    split = VinVLRetrievalSplit.open(data_dir, feat_file, "test", feat_dim=DIM)
    assert split.image_keys == [11, 22, 33] and split.num_images == 3 and len(split) == 15
    assert split.pair(7) == (22, 22, 2) and split.caption(22, 2) == "c22 2"
    assert split.num_pairs(cross_image=True) == 45 and split.pair(7, cross_image=True) == (11, 22, 2)
    flat = split.flat_captions()
    assert len(flat) == 15 and flat[5] == "c22 0" and "c11 5" not in flat  # only the first k per image
    np.testing.assert_array_equal(split.image_features(33), features[33])
    assert split.tags(11) == "man dog man" and split.tags(22) == "red car"
    with pytest.raises(IndexError):
        split.pair(15)
    clone = pickle.loads(pickle.dumps(split))  # what a spawn-started DataLoader worker receives
    np.testing.assert_array_equal(clone.image_features(22), features[22])
    assert clone.tags(11) == "man dog man"
    split.close()


def test_retrieval_split_with_key_file_and_without_labels(tmp_path):
    data_dir, feat_file, _ = _coco_ir_tree(tmp_path)
    split = VinVLRetrievalSplit.open(
        data_dir, feat_file, "test", img_keys_file="test_img_keys_1k.tsv", add_od_labels=False, feat_dim=DIM
    )
    assert split.image_keys == [33, 11] and set(split.captions) == {33, 11}
    assert split.predictions is None and split.tags(33) is None
    assert split.pair(0) == (33, 33, 0)


def test_retrieval_split_reports_missing_pieces(tmp_path):
    data_dir, feat_file, _ = _coco_ir_tree(tmp_path)
    with pytest.raises(UserError, match=r"minival_captions\.pt: captions file not found"):
        VinVLRetrievalSplit.open(data_dir, feat_file, "minival", feat_dim=DIM)
    write_img_keys(data_dir / "keys.tsv", [11, 99])
    with pytest.raises(UserError, match=r"keys\.tsv: image 99 has no captions in .*test_captions\.pt \(1 of 2"):
        VinVLRetrievalSplit.open(data_dir, feat_file, "test", img_keys_file="keys.tsv", feat_dim=DIM)
    with pytest.raises(UserError, match=r"test_captions\.pt: image 22: expected at least 6 captions, found 5"):
        VinVLRetrievalSplit.open(data_dir, feat_file, "test", captions_per_image=6, feat_dim=DIM)
    write_predictions_tsv(feat_file.parent, {11: [], 22: []})
    with pytest.raises(UserError, match=r"predictions\.tsv: no predictions row for image 33 of .*test_captions\.pt"):
        VinVLRetrievalSplit.open(data_dir, feat_file, "test", feat_dim=DIM)
    write_features_tsv(feat_file.parent, {11: np.ones((1, DIM), np.float32)}, feat_dim=DIM)
    with pytest.raises(UserError, match=r"imageid2idx\.json: no features row for image 22 .* \(2 of 3 images"):
        VinVLRetrievalSplit.open(data_dir, feat_file, "test", feat_dim=DIM)
