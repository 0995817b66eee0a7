"""SCAN precomp reader/writer: layout, im_div rule, dev cut, text captions, validation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from itr_common.data.precomp import (
    PrecompDataset,
    PrecompSplit,
    captions_per_image,
    collate_sorted_by_length,
    find_nonfinite,
    write_precomp_split,
)
from itr_common.errors import UserError

N, R, D, K = 4, 3, 5, 5


def _features(n: int = N, r: int = R, d: int = D) -> np.ndarray:
    return np.arange(n * r * d, dtype=np.float32).reshape(n, r, d) / 7.0


def _captions(n: int = N, k: int = K) -> list[str]:
    return [f"image {i} caption {j} café ☕" for i in range(n) for j in range(k)]


def _write(tmp_path: Path, split: str = "test", **kwargs) -> Path:
    args = {"images": _features(), "captions": _captions()}
    args.update(kwargs)
    return write_precomp_split(tmp_path, "f30k_precomp", split, **args)


def test_round_trip_and_index_rule(tmp_path: Path) -> None:
    _write(tmp_path)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    assert isinstance(split.images, np.memmap)
    assert split.captions_per_image == 5 and split.n_images == 4 and len(split) == 20
    assert split.captions == _captions()
    assert all(isinstance(c, str) for c in split.captions)
    assert split.captions[1] == "image 0 caption 1 café ☕"
    assert [split.image_index(i) for i in (0, 4, 5, 9, 19)] == [0, 0, 1, 1, 3]
    img = split.image(2)
    assert img.dtype == np.float32 and img.shape == (R, D)
    np.testing.assert_array_equal(img, _features()[2])
    img[:] = -1  # a copy: the file is untouched
    np.testing.assert_array_equal(split.image(2), _features()[2])
    assert split.ids is None and split.boxes is None and not split.has_boxes
    with pytest.raises(IndexError):
        split.image_index(20)


def test_written_files_are_the_original_format(tmp_path: Path) -> None:
    d = _write(tmp_path, ids=[10, 11, 12, 13])
    assert d == tmp_path / "f30k_precomp"
    ims = np.load(d / "test_ims.npy")
    assert ims.dtype == np.float32 and ims.shape == (N, R, D)
    raw = (d / "test_caps.txt").read_bytes()
    assert raw == "".join(f"{c}\n" for c in _captions()).encode("utf-8")
    assert (d / "test_ids.txt").read_text() == "10\n11\n12\n13\n"
    # what the originals' bytes-mode reader sees: the same number of lines
    assert len(raw.splitlines()) == N * K


def test_k_equal_one_and_general_k(tmp_path: Path) -> None:
    _write(tmp_path, split="one", captions=[f"c{i}" for i in range(N)])
    one = PrecompSplit(tmp_path, "f30k_precomp", "one")
    assert one.captions_per_image == 1 and [one.image_index(i) for i in range(4)] == [0, 1, 2, 3]
    _write(tmp_path, split="two", captions=[f"c{i}" for i in range(2 * N)])
    two = PrecompSplit(tmp_path, "f30k_precomp", "two")
    assert two.captions_per_image == 2 and two.image_index(5) == 2
    assert captions_per_image(1000, 5000, Path("x")) == 5


def test_caption_count_not_k_per_image(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "test_caps.txt").write_text("".join(f"c{i}\n" for i in range(7)))
    expected = r"test_caps\.txt: expected k captions per image for 4 images, found 7 captions"
    with pytest.raises(UserError, match=expected):
        PrecompSplit(tmp_path, "f30k_precomp", "test")
    with pytest.raises(UserError, match="test_caps.txt"):
        write_precomp_split(tmp_path / "w", "f30k_precomp", "test", _features(), ["a"] * 3)


def test_dev_cut_to_5000_captions(tmp_path: Path) -> None:
    n = 1001
    feats = np.zeros((n, 1, 2), dtype=np.float32)
    caps = [f"c{i}" for i in range(5 * n)]
    for split in ("dev", "test"):
        write_precomp_split(tmp_path, "coco_precomp", split, feats, caps)
    dev = PrecompSplit(tmp_path, "coco_precomp", "dev")
    assert len(dev) == 5000 and dev.n_images == 1000 and dev.images.shape == (1000, 1, 2)
    assert dev.captions[-1] == "c4999"
    assert len(PrecompSplit(tmp_path, "coco_precomp", "dev", dev_cut=False)) == 5005
    assert len(PrecompSplit(tmp_path, "coco_precomp", "test")) == 5005


def test_testall_split(tmp_path: Path) -> None:
    write_precomp_split(tmp_path, "coco_precomp", "testall", _features(), _captions())
    split = PrecompSplit(tmp_path, "coco_precomp", "testall")
    assert split.files["ims"].name == "testall_ims.npy" and len(split) == 20


def test_captions_are_text_never_bytes(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "test_caps.txt").write_bytes("".join(f"Ünïcode {i}\r\n" for i in range(20)).encode("utf-8"))
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    assert split.captions[3] == "Ünïcode 3"  # \r stripped like line.strip()
    assert all(type(c) is str and not c.startswith("b'") for c in split.captions)


def test_bytes_repr_caption_file_is_refused(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "test_caps.txt").write_text("".join(f"b'a caption {i}'\n" for i in range(20)))
    with pytest.raises(UserError, match=r"test_caps\.txt: .*bytes reprs"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_invalid_utf8_names_the_file(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "test_caps.txt").write_bytes(b"ok\n" * 19 + b"bad \xff\n")
    with pytest.raises(UserError, match=r"test_caps\.txt: expected UTF-8 text, found an invalid byte at offset 61"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="f30k_precomp: precomp data directory not found"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")
    d = _write(tmp_path)
    (d / "test_caps.txt").unlink()
    with pytest.raises(UserError, match=r"test_caps\.txt: caption file not found"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")
    with pytest.raises(UserError, match=r"train_ims\.npy: image feature file not found"):
        PrecompSplit(tmp_path, "f30k_precomp", "train")


@pytest.mark.parametrize(
    "bad", [np.zeros((N, R, D), dtype=np.float64), np.zeros((N, R * D), dtype=np.float32)], ids=["float64", "2d"]
)
def test_wrong_feature_dtype_or_ndim(tmp_path: Path, bad: np.ndarray) -> None:
    d = _write(tmp_path)
    np.save(d / "test_ims.npy", bad)
    with pytest.raises(UserError, match=r"test_ims\.npy: expected float32 \(N, R, D\) region features, found"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_not_an_npy_file(tmp_path: Path) -> None:
    d = _write(tmp_path)
    (d / "test_ims.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match=r"test_ims\.npy: expected a \.npy array file"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_boxes_and_sizes(tmp_path: Path) -> None:
    boxes = np.arange(N * R * 4, dtype=np.float32).reshape(N, R, 4)
    sizes = np.array([[640, 480], [500, 375], [320, 240], [800, 600]], dtype=np.int64)
    _write(tmp_path, boxes=boxes, img_sizes=sizes)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test", require_boxes=True)
    assert split.has_boxes
    np.testing.assert_array_equal(split.box(1), boxes[1])
    np.testing.assert_array_equal(split.img_size(3), np.array([800, 600], dtype=np.float32))


def test_boxes_required_but_missing(tmp_path: Path) -> None:
    _write(tmp_path)
    assert PrecompSplit(tmp_path, "f30k_precomp", "test").boxes is None
    with pytest.raises(UserError, match=r"test_boxes\.npy: file not found \(require_boxes"):
        PrecompSplit(tmp_path, "f30k_precomp", "test", require_boxes=True)


def test_boxes_shape_mismatch(tmp_path: Path) -> None:
    d = _write(tmp_path)
    np.save(d / "test_boxes.npy", np.zeros((N, R + 1, 4), dtype=np.float32))
    with pytest.raises(UserError, match=r"test_boxes\.npy: expected a numeric \(N, R, 4\) array = \(4, 3, 4\)"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")
    with pytest.raises(UserError, match=r"test_img_sizes\.npy: expected shape \(4, 2\)"):
        write_precomp_split(tmp_path / "w", "x", "test", _features(), _captions(), img_sizes=np.zeros((3, 2)))


def test_nan_caught_at_open_when_small(tmp_path: Path) -> None:
    feats = _features()
    feats[2, 1, 3] = np.nan
    _write(tmp_path, images=feats)
    with pytest.raises(UserError, match=r"test_ims\.npy: expected finite features, found NaN/inf in image 2"):
        PrecompSplit(tmp_path, "f30k_precomp", "test")


def test_inf_caught_lazily_and_by_chunked_scan(tmp_path: Path) -> None:
    feats = _features()
    feats[3, 0, 0] = np.inf
    _write(tmp_path, images=feats)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test", eager_scan_max_bytes=0)  # "big file": no scan
    np.testing.assert_array_equal(split.image(0), feats[0])
    with pytest.raises(UserError, match="in image 3"):
        split.image(3)
    with pytest.raises(UserError, match="in image 3"):
        split.validate_features(chunk_size=2)


def test_find_nonfinite_chunks() -> None:
    x = np.zeros((7, 2, 2), dtype=np.float32)
    assert find_nonfinite(x, chunk_size=3) is None
    x[5, 1, 0] = -np.inf
    x[6, 0, 0] = np.nan
    assert [find_nonfinite(x, chunk_size=c) for c in (1, 2, 3, 100)] == [5, 5, 5, 5]


def test_ids_per_image_or_per_caption(tmp_path: Path) -> None:
    _write(tmp_path, split="a", ids=[7, 8, 9, 10])
    a = PrecompSplit(tmp_path, "f30k_precomp", "a")
    assert a.ids == ["7", "8", "9", "10"] and not a.ids_per_caption
    _write(tmp_path, split="b", ids=list(range(20)))
    b = PrecompSplit(tmp_path, "f30k_precomp", "b")
    assert len(b.ids) == 20 and b.ids_per_caption
    (tmp_path / "f30k_precomp" / "b_ids.txt").write_text("1\n2\n")
    expected = r"b_ids\.txt: expected 4 \(one per image\) or 20 \(one per caption\) ids, found 2"
    with pytest.raises(UserError, match=expected):
        PrecompSplit(tmp_path, "f30k_precomp", "b")


def test_dataset_items_and_loader(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = PrecompDataset.from_path(tmp_path, "f30k_precomp", "test")
    image, caption, index, img_id = ds[7]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and image.shape == (R, D)
    assert caption == "image 1 caption 2 café ☕" and index == 7 and img_id == 1
    torch.testing.assert_close(image, torch.from_numpy(_features()[1]))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=lambda b: b)
    assert sum(len(b) for b in loader) == 20


def test_collate_sorted_by_length_is_descending_and_stable() -> None:
    batch = [("a", 2), ("b", 3), ("c", 2), ("d", 5)]
    assert collate_sorted_by_length(batch, lambda x: x[1]) == [("d", 5), ("b", 3), ("a", 2), ("c", 2)]
    masks = [torch.tensor([1, 1, 0]), torch.tensor([1, 1, 1]), torch.tensor([1, 0, 0])]
    assert [int(m.sum()) for m in collate_sorted_by_length(masks, torch.sum)] == [3, 2, 1]


def test_pickle_does_not_copy_features(tmp_path: Path) -> None:
    feats = np.ones((N, 36, 512), dtype=np.float32)
    _write(tmp_path, images=feats)
    split = PrecompSplit(tmp_path, "f30k_precomp", "test")
    blob = pickle.dumps(split)
    assert len(blob) < feats.nbytes // 10
    again = pickle.loads(blob)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.image(3), feats[3])
    assert again.captions == split.captions
