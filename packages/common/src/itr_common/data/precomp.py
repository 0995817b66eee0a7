"""SCAN "precomp" data: region features in ``.npy``, captions in ``.txt``.

Layout of one split (``data_name`` is e.g. ``f30k_precomp`` or ``coco_precomp``)::

    {data_path}/{data_name}/{split}_ims.npy        float32 (N, R, D) region features, R=36, D=2048
    {data_path}/{data_name}/{split}_caps.txt       k*N captions, one a line, k per image in image order
    {data_path}/{data_name}/{split}_ids.txt        image ids, optional (one a line; N or k*N lines)
    {data_path}/{data_name}/{split}_boxes.npy      (N, R, 4) x1, y1, x2, y2 in pixels (CAMERA only)
    {data_path}/{data_name}/{split}_img_sizes.npy  (N, 2) W, H (CAMERA only)

Splits are ``train``, ``dev``, ``test`` and, for COCO, ``testall`` (the 5K test images); any other
name works the same way. The readers of SCAN, VSRN, CAMERA, DIME and SelfAlign share these rules:

* ``im_div``: the originals use 5 captions per image when the image and caption counts differ, else 1.
  Here ``captions_per_image = n_captions / n_images`` must be a whole number; anything else is a
  :class:`~itr_common.errors.UserError`.
* caption ``index`` belongs to image ``index // captions_per_image``.
* ``dev`` is cut to its first 5,000 captions (1,000 images at k=5) for fast validation
  (``dev_cut=True``, as the originals do; ``dev_cut=False`` keeps the whole split).

Captions are read as UTF-8 text: every caption is a ``str``, never ``bytes`` (the Python-3 port trap
of VSRN issue 27, where ``b'...'`` reprs were tokenised, cannot happen here).

Features are memory-mapped (``np.load(mmap_mode='r')``) and never loaded whole. NaN/inf features are
caught when an image is read (:meth:`PrecompSplit.image`); :meth:`PrecompSplit.validate_features`
scans the whole memmap in chunks, and is run at open time only when ``{split}_ims.npy`` is smaller
than ``eager_scan_max_bytes`` (256 MiB by default), so opening COCO train stays instant.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from itr_common.errors import UserError, fail, require_dir, require_file
from itr_common.fileio import atomic_open, write_lines_atomic

DEV_SPLIT = "dev"
DEV_CAPTIONS = 5000
EAGER_SCAN_MAX_BYTES = 256 * 2**20
DEFAULT_SCAN_CHUNK = 256

_BYTES_REPR = re.compile(r"""^b(['"]).*\1$""")

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# file names


def split_dir(data_path: str | os.PathLike, data_name: str) -> Path:
    """``os.path.join(data_path, data_name)``, as the originals build it."""
    return Path(os.path.join(data_path, data_name))


def split_files(directory: str | os.PathLike, split: str) -> dict[str, Path]:
    """The five file paths of ``split`` inside ``directory`` (keys ims, caps, ids, boxes, img_sizes)."""
    d = Path(directory)
    return {
        "ims": d / f"{split}_ims.npy",
        "caps": d / f"{split}_caps.txt",
        "ids": d / f"{split}_ids.txt",
        "boxes": d / f"{split}_boxes.npy",
        "img_sizes": d / f"{split}_img_sizes.npy",
    }


# ----------------------------------------------------------------------------------------------
# low-level readers


def _load_npy_mmap(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only, or fail naming it."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        fail(f"{path}: expected a .npy array file, found unreadable data ({err})")


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split on ``\\n`` only and stripped, as ``str``.

    Splitting on ``\\n`` alone (not ``str.splitlines``) keeps the count identical to the originals'
    ``for line in f``: a caption holding a form feed or U+2028 stays one caption. A final newline
    does not add an empty line.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        fail(f"{path}: expected UTF-8 text, found an invalid byte at offset {err.start}")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p.strip() for p in parts]


def read_captions(path: Path) -> list[str]:
    """Captions of ``{split}_caps.txt`` as ``str``; fails on a file of Python ``b'...'`` reprs."""
    captions = read_lines(path)
    if captions and all(_BYTES_REPR.match(c) for c in captions):
        fail(
            f"{path}: expected plain caption text, found Python bytes reprs (b'...') on every line; "
            "the file was written by a bytes-mode port, rewrite it as text"
        )
    return captions


def _check_images(path: Path, images: np.ndarray) -> None:
    if images.ndim != 3 or images.dtype != np.float32:
        fail(f"{path}: expected float32 (N, R, D) region features, found {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        fail(f"{path}: expected at least one image, found 0")


def captions_per_image(n_images: int, n_captions: int, caps_path: Path) -> int:
    """``im_div``: captions per image, ``n_captions // n_images`` when that is a whole number >= 1.

    The originals' rule ``5 if n_images != n_captions else 1`` is the special case k in {1, 5}.
    """
    if n_images <= 0 or n_captions < n_images or n_captions % n_images:
        fail(
            f"{caps_path}: expected k captions per image for {n_images} images, found {n_captions} captions"
        )
    return n_captions // n_images


def find_nonfinite(images: np.ndarray, chunk_size: int = DEFAULT_SCAN_CHUNK, start: int = 0) -> int | None:
    """Index of the first image of ``images`` (N, R, D) holding NaN/inf, or None; reads ``chunk_size`` at a time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for lo in range(start, images.shape[0], chunk_size):
        chunk = np.asarray(images[lo : lo + chunk_size])
        finite = np.isfinite(chunk).reshape(chunk.shape[0], -1).all(axis=1)
        if not finite.all():
            return lo + int(np.argmin(finite))
    return None


# ----------------------------------------------------------------------------------------------
# the split


class PrecompSplit:
    """One split of a precomp directory, read lazily.

    Attributes (all describe the part in use, i.e. after the ``dev`` cut):
        images: read-only memmap float32 (n_images, R, D).
        captions: list[str] of length ``len(self)``.
        ids: list[str] or None; one per image (``ids_per_caption`` False) or per caption (True).
        boxes: memmap (n_images, R, 4) or None.  img_sizes: memmap (n_images, 2) or None.
        captions_per_image: ``im_div`` (k).  n_images: images covered by the used captions.
        files: the paths of the split's files.

    Args:
        data_path, data_name: the directory is ``os.path.join(data_path, data_name)``.
        split: ``train``, ``dev``, ``test``, ``testall``, ...
        dev_cut: cut ``dev`` to its first 5,000 captions, as the originals do.
        require_boxes: fail when ``{split}_boxes.npy`` / ``{split}_img_sizes.npy`` are missing
            (CAMERA); without it they are loaded when present.
        eager_scan_max_bytes: scan all features for NaN/inf at open time when the ``.npy`` file is
            smaller than this; bigger files are checked image by image as they are read.
    """

    def __init__(
        self,
        data_path: str | os.PathLike,
        data_name: str,
        split: str,
        dev_cut: bool = True,
        require_boxes: bool = False,
        eager_scan_max_bytes: int = EAGER_SCAN_MAX_BYTES,
    ) -> None:
        self.data_path = str(data_path)
        self.data_name = data_name
        self.split = split
        self.dev_cut = dev_cut
        self.require_boxes = require_boxes
        self.eager_scan_max_bytes = eager_scan_max_bytes
        self.directory = require_dir(split_dir(data_path, data_name), "precomp data directory")
        self.files = split_files(self.directory, split)
        require_file(self.files["ims"], "image feature file")
        require_file(self.files["caps"], "caption file")

        all_captions = read_captions(self.files["caps"])
        self._open_arrays()
        n_total = self._n_images_total
        self.captions_per_image = captions_per_image(n_total, len(all_captions), self.files["caps"])

        length = len(all_captions)
        if split == DEV_SPLIT and dev_cut:
            length = min(length, DEV_CAPTIONS)
        self.captions: list[str] = all_captions[:length]
        self.n_images = math.ceil(length / self.captions_per_image)
        self.ids, self.ids_per_caption = self._read_ids(n_total, len(all_captions))
        self._features_checked = False
        self._cut_to_used()
        if self.files["ims"].stat().st_size < eager_scan_max_bytes:
            self.validate_features()

    # -- opening ---------------------------------------------------------------------------

    def _open_arrays(self) -> None:
        """Memory-map features, boxes and sizes (full files), checking their shapes."""
        images = _load_npy_mmap(self.files["ims"])
        _check_images(self.files["ims"], images)
        self._n_images_total = images.shape[0]
        self.images = images
        self.boxes = self._open_optional("boxes", (images.shape[0], images.shape[1], 4), "(N, R, 4)")
        self.img_sizes = self._open_optional("img_sizes", (images.shape[0], 2), "(N, 2)")

    def _open_optional(self, key: str, shape: tuple[int, ...], pattern: str) -> np.ndarray | None:
        path = self.files[key]
        if not path.exists():
            if self.require_boxes:
                fail(f"{path}: file not found (require_boxes is set: CAMERA needs {self.split}_boxes.npy "
                     f"and {self.split}_img_sizes.npy)")
            return None
        arr = _load_npy_mmap(require_file(path))
        if tuple(arr.shape) != shape or arr.dtype.kind not in "fiu":
            fail(f"{path}: expected a numeric {pattern} array = {shape} to match {self.files['ims'].name}, "
                 f"found {arr.dtype} {tuple(arr.shape)}")
        return arr

    def _read_ids(self, n_images: int, n_captions: int) -> tuple[list[str] | None, bool]:
        path = self.files["ids"]
        if not path.exists():
            return None, False
        ids = read_lines(path)
        if len(ids) not in (n_images, n_captions):
            fail(f"{path}: expected {n_images} (one per image) or {n_captions} (one per caption) ids, "
                 f"found {len(ids)}")
        return ids, len(ids) == n_captions and n_captions != n_images

    def _cut_to_used(self) -> None:
        """Keep only the images (and ids) the used captions refer to; slices of a memmap are views."""
        n = self.n_images
        self.images = self.images[:n]
        if self.boxes is not None:
            self.boxes = self.boxes[:n]
        if self.img_sizes is not None:
            self.img_sizes = self.img_sizes[:n]
        if self.ids is not None:
            self.ids = self.ids[: len(self.captions) if self.ids_per_caption else n]

    # -- pickling (DataLoader workers started with spawn) -----------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("images", "boxes", "img_sizes"):
            state[key] = None  # memmaps would be pickled as full in-memory copies
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_arrays()
        self._cut_to_used()

    # -- access ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of captions in use (5,000 for a cut ``dev``)."""
        return len(self.captions)

    @property
    def has_boxes(self) -> bool:
        return self.boxes is not None and self.img_sizes is not None

    def image_index(self, caption_index: int) -> int:
        """Image of caption ``caption_index``: ``caption_index // captions_per_image``."""
        if not 0 <= caption_index < len(self):
            raise IndexError(f"caption index {caption_index} out of range [0, {len(self)})")
        return caption_index // self.captions_per_image

    def image(self, i: int) -> np.ndarray:
        """Region features of image ``i``: a float32 (R, D) copy; fails on NaN/inf values."""
        if not 0 <= i < self.n_images:
            raise IndexError(f"image index {i} out of range [0, {self.n_images})")
        feats = np.array(self.images[i], dtype=np.float32)
        if not self._features_checked and not np.isfinite(feats).all():
            fail(f"{self.files['ims']}: expected finite features, found NaN/inf in image {i}")
        return feats

    def box(self, i: int) -> np.ndarray:
        """Boxes of image ``i``: float32 (R, 4) x1, y1, x2, y2 in pixels."""
        if self.boxes is None:
            fail(f"{self.files['boxes']}: file not found (boxes were requested)")
        return np.array(self.boxes[i], dtype=np.float32)

    def img_size(self, i: int) -> np.ndarray:
        """Size of image ``i``: float32 (2,) W, H."""
        if self.img_sizes is None:
            fail(f"{self.files['img_sizes']}: file not found (image sizes were requested)")
        return np.array(self.img_sizes[i], dtype=np.float32)

    def validate_features(self, chunk_size: int = DEFAULT_SCAN_CHUNK) -> None:
        """Scan the features in use, ``chunk_size`` images at a time; fail on the first NaN/inf image."""
        bad = find_nonfinite(self.images, chunk_size)
        if bad is not None:
            fail(f"{self.files['ims']}: expected finite features, found NaN/inf in image {bad}")
        self._features_checked = True

    def __repr__(self) -> str:
        return (f"PrecompSplit({str(self.directory)!r}, split={self.split!r}, captions={len(self)}, "
                f"images={self.n_images}, k={self.captions_per_image}, regions={tuple(self.images.shape[1:])})")


# ----------------------------------------------------------------------------------------------
# dataset and collate helper


class PrecompDataset(Dataset):
    """Captions of a :class:`PrecompSplit` with their images; paper packages wrap it with a tokeniser.

    ``dataset[index]`` is ``(image, caption, index, img_id)``: image FloatTensor (R, D), caption str,
    ``img_id = index // captions_per_image``.
    """

    def __init__(self, split: PrecompSplit) -> None:
        self.split = split

    @classmethod
    def from_path(cls, data_path: str | os.PathLike, data_name: str, split: str, **kwargs: Any) -> PrecompDataset:
        """Open ``os.path.join(data_path, data_name)``/``{split}_*`` (kwargs go to :class:`PrecompSplit`)."""
        return cls(PrecompSplit(data_path, data_name, split, **kwargs))

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int, int]:
        img_id = self.split.image_index(index)
        image = torch.from_numpy(self.split.image(img_id))
        return image, self.split.captions[index], index, img_id


def collate_sorted_by_length(batch: Sequence[T], length_of: Callable[[T], Any]) -> list[T]:
    """The batch sorted by ``length_of(item)``, longest first, ties kept in order (the originals'
    ``data.sort(key=..., reverse=True)`` at the top of every ``collate_fn``)."""
    return sorted(batch, key=length_of, reverse=True)


# ----------------------------------------------------------------------------------------------
# writer


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, arr, allow_pickle=False)


def _write_text_lines(path: Path, lines: Sequence[str], what: str) -> None:
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            raise UserError(f"{path}: expected {what} as str, found {type(line).__name__} at line {i + 1}")
        if "\n" in line or "\r" in line:
            raise UserError(f"{path}: expected one {what} a line, found a line break inside line {i + 1}")
    write_lines_atomic(path, lines)


def write_precomp_split(
    root: str | os.PathLike,
    data_name: str,
    split: str,
    images: np.ndarray,
    captions: Sequence[str],
    ids: Sequence[Any] | None = None,
    boxes: np.ndarray | None = None,
    img_sizes: np.ndarray | None = None,
) -> Path:
    """Write one split in the original layout under ``root/data_name``; returns that directory.

    Args:
        images: (N, R, D) features, saved as float32 ``{split}_ims.npy``.
        captions: k*N captions (k per image, image order), saved one a line as UTF-8 ``{split}_caps.txt``.
        ids: N or k*N ids, ``{split}_ids.txt`` (optional).
        boxes: (N, R, 4), ``{split}_boxes.npy``; img_sizes: (N, 2), ``{split}_img_sizes.npy`` (optional, CAMERA).
    """
    directory = split_dir(root, data_name)
    directory.mkdir(parents=True, exist_ok=True)
    files = split_files(directory, split)
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype.kind not in "fiu":
        fail(f"{files['ims']}: expected numeric (N, R, D) features, found {images.dtype} {tuple(images.shape)}")
    n_images = images.shape[0]
    captions_per_image(n_images, len(captions), files["caps"])
    if ids is not None and len(ids) not in (n_images, len(captions)):
        fail(f"{files['ids']}: expected {n_images} or {len(captions)} ids, found {len(ids)}")
    optional = {"boxes": (boxes, (n_images, images.shape[1], 4)), "img_sizes": (img_sizes, (n_images, 2))}
    for key, (arr, shape) in optional.items():
        if arr is not None and tuple(np.shape(arr)) != shape:
            fail(f"{files[key]}: expected shape {shape} to match the features, found {tuple(np.shape(arr))}")

    _save_npy(files["ims"], np.ascontiguousarray(images, dtype=np.float32))
    _write_text_lines(files["caps"], list(captions), "caption")
    if ids is not None:
        _write_text_lines(files["ids"], [str(i) for i in ids], "id")
    for key, (arr, _) in optional.items():
        if arr is not None:
            _save_npy(files[key], np.ascontiguousarray(arr))
    return directory


__all__ = [
    "DEV_CAPTIONS",
    "EAGER_SCAN_MAX_BYTES",
    "PrecompDataset",
    "PrecompSplit",
    "captions_per_image",
    "collate_sorted_by_length",
    "find_nonfinite",
    "read_captions",
    "split_dir",
    "split_files",
    "write_precomp_split",
]
