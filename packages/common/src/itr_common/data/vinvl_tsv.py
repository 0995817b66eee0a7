"""VinVL / OSCAR ``coco_ir`` data: TSV region features, detector predictions, captions ``.pt``, key lists.

Layout read by OSCAR's ``run_retrieval.py`` (VinVL version) and by ALADIN's ``alad/dataset.py``::

    {data_dir}/{split}_captions.pt    torch.save'd dict int image_id -> list of captions
                                      (or a JSON string of one list); split = train, minival, test
    {data_dir}/test_img_keys.tsv      5,000 image ids, one int a line (COCO 5K)
    {data_dir}/test_img_keys_1k.tsv   1,000 image ids (COCO 1K)
    {feat_dir}/features.tsv           one row per image: ``image_id \\t num_boxes \\t base64(float32)``,
                                      the array reshaped to (num_boxes, 2054): 2048 region feature + 6 box
                                      values (normalised x1, y1, x2, y2, w, h)
    {feat_dir}/features.lineidx       byte offset of each row of features.tsv, one int a line
    {feat_dir}/imageid2idx.json       {"<image_id>": row index in features.tsv}
    {feat_dir}/predictions.tsv        one row per image: ``image_id \\t json``, the json being
                                      ``{"objects": [{"class", "rect", "conf", ...}], "image_h", "image_w"}``
                                      or a bare list of objects
    {feat_dir}/predictions.lineidx    byte offsets of predictions.tsv

``{feat_dir}`` is the folder of ``--img_feat_file``. A ``.lineidx`` is named after its TSV with the
extension swapped (``os.path.splitext(tsv)[0] + '.lineidx'``), as OSCAR's ``TSVFile`` names it.

What the originals do, and what is checked here instead of crashing later:

* rows are fetched by byte offset; every fetch checks the offset starts a row and the row ends where
  the next one begins (a stale or foreign ``.lineidx`` is reported, never read as garbage); a row cut
  short, an offset past the end of the file and a row with the wrong number of fields name the file,
  the row and what was expected;
* each field of a row is ``strip()``-ed, as OSCAR's ``TSVFile.seek`` does;
* features: ``base64`` is decoded strictly, the buffer must hold exactly ``num_boxes * feat_dim``
  float32 values, and NaN/inf values are refused;
* object tags are ``' '.join(object classes)`` in detector order, no de-duplication (OSCAR
  ``get_od_labels``); a bare list of objects gets ``image_h=600, image_w=800`` as in OSCAR;
* captions ``.pt`` files are loaded with ``torch.load(weights_only=True)``: a pickle naming any code
  is refused; a value that is a string is ``json.loads``-ed into the list of captions.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from itr_common.checkpoint import save_atomic
from itr_common.errors import fail, require_file
from itr_common.fileio import atomic_open, read_json, write_bytes_atomic, write_json_atomic, write_lines_atomic

FEATURE_DIM = 2054  # 2048 region feature + 6 box values (OSCAR --img_feature_dim)
FEATURES_NAME = "features"
PREDICTIONS_NAME = "predictions"
IMAGEID2IDX_NAME = "imageid2idx.json"
LINEIDX_SUFFIX = ".lineidx"
FEATURE_COLUMNS = 3  # image_id, num_boxes, base64 array
PREDICTION_COLUMNS = 2  # image_id, json
DEFAULT_IMAGE_H = 600  # OSCAR's image size when predictions.tsv holds a bare list of objects
DEFAULT_IMAGE_W = 800
_KEY_CHUNK = 64  # bytes read at a time when only a row's first field is wanted


# ------------------------------------------------------------------------------------------- lineidx
def lineidx_path_for(tsv_file: str | os.PathLike) -> Path:
    """``features.tsv`` -> ``features.lineidx`` (the extension swapped, as OSCAR's ``TSVFile`` does)."""
    return Path(os.path.splitext(os.fspath(tsv_file))[0] + LINEIDX_SUFFIX)


def generate_lineidx_file(tsv_file: str | os.PathLike, lineidx_file: str | os.PathLike | None = None) -> Path:
    """Write the byte offset of every row of ``tsv_file`` to its ``.lineidx``, atomically; return its path."""
    source = require_file(tsv_file, "TSV file")
    target = Path(lineidx_file) if lineidx_file is not None else lineidx_path_for(source)
    offsets, position = [], 0
    with open(source, "rb") as handle:
        for line in handle:
            offsets.append(position)
            position += len(line)
    try:
        write_bytes_atomic(target, _format_offsets(offsets))
    except OSError as err:
        fail(f"{target}: cannot write the line index of {source} ({err.strerror or err})")
    return target


def _format_offsets(offsets: Sequence[int]) -> bytes:
    return "".join(f"{offset}\n" for offset in offsets).encode("ascii")


def _read_lineidx(lineidx_file: Path) -> np.ndarray:
    """int64 (n_rows,) offsets of a ``.lineidx`` (one int a line; blank lines ignored)."""
    offsets = []
    with open(lineidx_file, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                offsets.append(int(text))
            except ValueError:
                found = text[:40].decode(errors="replace")
                fail(f"{lineidx_file}: line {line_no}: expected a byte offset (an int), found {found!r}")
    return np.asarray(offsets, dtype=np.int64)


# ------------------------------------------------------------------------------------------- TSVFile
class TSVFile:
    """Random access to the rows of a tab-separated file through its ``.lineidx`` byte offsets.

    The offsets are read and checked when the object is made (first offset 0, strictly increasing,
    inside the file, the file ending with a newline). The file itself is opened on first access and
    reopened in a process whose pid differs from the opener's, so a forked DataLoader worker never
    shares a file position with its parent; pickling drops the handle.

    Args:
        tsv_file: the ``.tsv`` path.
        generate_lineidx: build a missing ``.lineidx`` (as OSCAR does); when False a missing one fails.
        num_columns: when set, every row must have exactly this many tab-separated fields.
    """

    def __init__(
        self, tsv_file: str | os.PathLike, generate_lineidx: bool = True, num_columns: int | None = None
    ) -> None:
        self.path = require_file(tsv_file, "TSV file")
        self.lineidx_path = lineidx_path_for(self.path)
        self.num_columns = num_columns
        if not self.lineidx_path.is_file():
            if not generate_lineidx:
                fail(f"{self.lineidx_path}: line index of {self.path} not found (generate_lineidx=True builds it)")
            generate_lineidx_file(self.path, self.lineidx_path)
        self._size = self.path.stat().st_size
        self._offsets = _read_lineidx(self.lineidx_path)
        self._check_offsets()
        self._fp: BinaryIO | None = None
        self._pid: int | None = None

    # -- checks
    def _check_offsets(self) -> None:
        offsets, size, where = self._offsets, self._size, f"{self.lineidx_path}"
        if len(offsets) == 0:
            if size:
                fail(f"{where}: stale line index: it lists no rows but {self.path} has {size} bytes")
            return
        if offsets[0] != 0:
            fail(f"{where}: stale line index: expected the first row at offset 0, found {offsets[0]}")
        steps = np.diff(offsets)
        if (steps <= 0).any():
            row = int(np.argmax(steps <= 0)) + 1
            fail(f"{where}: offsets must increase; row {row} starts at {offsets[row]} after {offsets[row - 1]}")
        if offsets[-1] >= size:
            row = int(np.argmax(offsets >= size))
            fail(
                f"{self.path}: row {row}: offset {offsets[row]} is past the end of the file ({size} bytes); "
                f"the TSV was cut short or {self.lineidx_path.name} is stale"
            )
        with open(self.path, "rb") as handle:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                fail(
                    f"{self.path}: row {len(offsets) - 1} is truncated: expected it to end with a newline, "
                    f"found the file ending without one (file cut short?)"
                )

    # -- file handle
    def _handle(self) -> BinaryIO:
        pid = os.getpid()
        if self._fp is None or self._pid != pid:
            if self._fp is not None:  # inherited through fork: never share the parent's file position
                with contextlib.suppress(OSError):
                    self._fp.close()
            try:
                self._fp = open(self.path, "rb")  # noqa: SIM115 - kept open for random access
            except OSError as err:
                fail(f"{self.path}: cannot open ({err.strerror or err})")
            self._pid = pid
        return self._fp

    def close(self) -> None:
        """Close the file handle (it reopens on the next access)."""
        if self._fp is not None:
            with contextlib.suppress(OSError):
                self._fp.close()
        self._fp, self._pid = None, None

    def __enter__(self) -> TSVFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fp"], state["_pid"] = None, None
        return state

    # -- rows
    def __len__(self) -> int:
        return len(self._offsets)

    def num_rows(self) -> int:
        """Number of rows (OSCAR's name)."""
        return len(self)

    def _bounds(self, index: int) -> tuple[int, int]:
        n = len(self._offsets)
        if not 0 <= index < n:
            raise IndexError(f"{self.path}: row {index} out of range (the file has {n} rows)")
        start = int(self._offsets[index])
        end = int(self._offsets[index + 1]) if index + 1 < n else self._size
        return start, end

    def read_row_bytes(self, index: int) -> bytes:
        """The raw bytes of row ``index`` without its newline, after checking the row's boundaries."""
        start, end = self._bounds(index)
        handle = self._handle()
        handle.seek(start - 1 if start else 0)
        data = handle.read(end - start + (1 if start else 0))
        if start:
            if data[:1] != b"\n":
                fail(
                    f"{self.path}: row {index}: offset {start} from {self.lineidx_path.name} does not start a row "
                    "(stale line index?)"
                )
            data = data[1:]
        if len(data) < end - start:
            fail(
                f"{self.path}: row {index} is truncated: expected {end - start} bytes ending in a newline, "
                f"found {len(data)} (file cut short?)"
            )
        if data.find(b"\n") != len(data) - 1:
            fail(
                f"{self.path}: row {index}: the line index says it spans bytes {start}-{end}, but the row "
                f"ends elsewhere (stale {self.lineidx_path.name}?)"
            )
        return data[:-1]

    def seek(self, index: int) -> list[str]:
        """Row ``index`` as a list of fields (split on tabs, each stripped)."""
        raw = self.read_row_bytes(index)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            fail(f"{self.path}: row {index}: expected UTF-8 text, found a bad byte at column {err.start}")
        fields = [value.strip() for value in text.split("\t")]
        if self.num_columns is not None and len(fields) != self.num_columns:
            fail(f"{self.path}: row {index}: expected {self.num_columns} tab-separated fields, found {len(fields)}")
        return fields

    def __getitem__(self, index: int) -> list[str]:
        return self.seek(index)

    def __iter__(self) -> Iterator[list[str]]:
        for index in range(len(self)):
            yield self.seek(index)

    def get_key(self, index: int) -> str:
        """The first field of row ``index``, reading only as far as its first tab."""
        start, end = self._bounds(index)
        handle = self._handle()
        handle.seek(start)
        head = b""
        while len(head) < end - start:
            chunk = handle.read(min(_KEY_CHUNK, end - start - len(head)))
            if not chunk:
                fail(f"{self.path}: row {index} is truncated: expected {end - start} bytes (file cut short?)")
            head += chunk
            if b"\t" in chunk or b"\n" in chunk:
                break
        key = head.split(b"\t", 1)[0].split(b"\n", 1)[0]
        try:
            return key.decode("utf-8").strip()
        except UnicodeDecodeError:
            fail(f"{self.path}: row {index}: expected a UTF-8 key, found {key[:40]!r}")

    def __repr__(self) -> str:
        return f"TSVFile(tsv_file='{self.path}')"


# -------------------------------------------------------------------------------------- features.tsv
def load_imageid2idx(path: str | os.PathLike, num_rows: int | None = None) -> dict[str, int]:
    """``imageid2idx.json`` as {str image_id: row index}, each index checked to be in ``[0, num_rows)``."""
    source = require_file(path, "imageid2idx.json")
    mapping = read_json(source, "JSON {image_id: row index}", expect=dict)
    for key, row in mapping.items():
        if isinstance(row, bool) or not isinstance(row, int):
            fail(f"{source}: image id {key}: expected an int row index, found {row!r}")
        if row < 0 or (num_rows is not None and row >= num_rows):
            fail(f"{source}: image id {key}: row index {row} is outside the feature file's {num_rows} rows")
    return {str(key): row for key, row in mapping.items()}


def decode_feature_row(
    fields: Sequence[str], source: str | os.PathLike, row: int, feat_dim: int = FEATURE_DIM
) -> np.ndarray:
    """float32 (num_boxes, feat_dim) from the fields ``[image_id, num_boxes, base64]`` of one row."""
    if len(fields) != FEATURE_COLUMNS:
        fail(
            f"{source}: row {row}: expected {FEATURE_COLUMNS} fields (image_id, num_boxes, base64), found {len(fields)}"
        )
    try:
        num_boxes = int(fields[1])
    except ValueError:
        fail(f"{source}: row {row}: expected num_boxes as an int, found {fields[1][:40]!r}")
    if num_boxes < 0:
        fail(f"{source}: row {row}: expected num_boxes >= 0, found {num_boxes}")
    try:
        buffer = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError) as err:
        fail(f"{source}: row {row}: expected base64-encoded float32 features, found bad base64 ({err})")
    expected = num_boxes * feat_dim * 4
    if len(buffer) != expected:
        hint = f" ({len(buffer) / 4 / num_boxes:g} values per box)" if num_boxes else ""
        fail(
            f"{source}: row {row}: expected {expected} bytes ({num_boxes} boxes x {feat_dim} float32), "
            f"found {len(buffer)}{hint}"
        )
    features = np.frombuffer(bytearray(buffer), dtype="<f4").astype(np.float32, copy=False)
    features = features.reshape(num_boxes, feat_dim)
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).sum())
        fail(f"{source}: row {row}: expected finite features, found {bad} NaN/inf values")
    return features


class FeatureTSV:
    """Region features by image id: ``features.tsv`` + ``features.lineidx`` + ``imageid2idx.json``.

    Args:
        feat_file: ``features.tsv`` (OSCAR ``--img_feat_file``).
        imageid2idx_path: the id -> row map; ``imageid2idx.json`` beside ``feat_file`` by default.
        feat_dim: values per box (``--img_feature_dim``, 2054 = 2048 + 6 box values).
        generate_lineidx: build a missing ``features.lineidx``.
    """

    def __init__(
        self,
        feat_file: str | os.PathLike,
        imageid2idx_path: str | os.PathLike | None = None,
        feat_dim: int = FEATURE_DIM,
        generate_lineidx: bool = True,
    ) -> None:
        if feat_dim <= 0:
            fail(f"feat_dim: expected a positive int, found {feat_dim}")
        self.tsv = TSVFile(feat_file, generate_lineidx=generate_lineidx, num_columns=FEATURE_COLUMNS)
        self.path = self.tsv.path
        self.feat_dim = feat_dim
        self.imageid2idx_path = Path(imageid2idx_path) if imageid2idx_path else self.path.parent / IMAGEID2IDX_NAME
        self.image_id2idx = load_imageid2idx(self.imageid2idx_path, num_rows=len(self.tsv))

    def __len__(self) -> int:
        return len(self.image_id2idx)

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self.image_id2idx

    @property
    def image_ids(self) -> list[str]:
        """The image ids of ``imageid2idx.json``, as strings, in its order."""
        return list(self.image_id2idx)

    def row_of(self, image_id: int | str) -> int:
        """The features.tsv row of ``image_id`` (fails naming ``imageid2idx.json`` when absent)."""
        row = self.image_id2idx.get(str(image_id))
        if row is None:
            fail(f"{self.imageid2idx_path}: image id {image_id} not found ({len(self.image_id2idx)} ids listed)")
        return row

    def get(self, image_id: int | str) -> np.ndarray:
        """float32 (num_boxes, feat_dim) features of ``image_id``.

        When the row's key is a number it must equal ``image_id`` (a wrong ``imageid2idx.json`` fails).
        """
        row = self.row_of(image_id)
        fields = self.tsv.seek(row)
        key = fields[0]
        if key.isdigit() and str(image_id).isdigit() and int(key) != int(image_id):
            fail(
                f"{self.imageid2idx_path}: image id {image_id} maps to row {row} of {self.path}, "
                f"whose image id is {key}"
            )
        return decode_feature_row(fields, self.path, row, self.feat_dim)

    def __getitem__(self, image_id: int | str) -> np.ndarray:
        return self.get(image_id)

    def close(self) -> None:
        self.tsv.close()


# ------------------------------------------------------------------------------------ predictions.tsv
@dataclass(frozen=True)
class ImagePredictions:
    """Detector output for one image: classes (n,), boxes float32 (n, 4) ``rect``, image size."""

    image_h: int
    image_w: int
    classes: list[str]
    boxes: np.ndarray = field(repr=False)

    @property
    def tags(self) -> str:
        """``' '.join(classes)``: OSCAR's object tags string."""
        return " ".join(self.classes)


def _objects_of(payload: Any, source: Path, row: int) -> list[dict[str, Any]]:
    """The object list of a prediction payload (a dict with ``objects``, or a bare list)."""
    objects = payload.get("objects") if isinstance(payload, dict) else payload
    if not isinstance(objects, list):
        found = "a dict without 'objects'" if isinstance(payload, dict) else type(payload).__name__
        fail(f"{source}: row {row}: expected {{'objects': [...], 'image_h', 'image_w'}} or a list, found {found}")
    for number, obj in enumerate(objects):
        if not isinstance(obj, dict) or not isinstance(obj.get("class"), str):
            fail(f"{source}: row {row}: object {number}: expected a dict with a string 'class', found {obj!r:.60}")
    return objects


class PredictionsTSV:
    """Detector predictions by image id: ``predictions.tsv`` rows ``image_id \\t json``.

    The id -> row map is built on first use from the rows' first fields (only those bytes are read).
    """

    def __init__(self, path: str | os.PathLike, generate_lineidx: bool = True) -> None:
        self.tsv = TSVFile(path, generate_lineidx=generate_lineidx, num_columns=PREDICTION_COLUMNS)
        self.path = self.tsv.path
        self._rows: dict[int, int] | None = None

    def _row_map(self) -> dict[int, int]:
        if self._rows is None:
            rows: dict[int, int] = {}
            for row in range(len(self.tsv)):
                key = self.tsv.get_key(row)
                if not key.lstrip("-").isdigit():
                    fail(f"{self.path}: row {row}: expected an int image id, found {key[:40]!r}")
                if int(key) in rows:
                    fail(f"{self.path}: row {row}: image id {key} already in row {rows[int(key)]}")
                rows[int(key)] = row
            self._rows = rows
        return self._rows

    def __len__(self) -> int:
        return len(self.tsv)

    def __contains__(self, image_id: object) -> bool:
        try:
            return int(image_id) in self._row_map()  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    @property
    def image_ids(self) -> list[int]:
        """The image ids of the file, in row order."""
        return list(self._row_map())

    def _row_of(self, image_id: int | str) -> int:
        row = self._row_map().get(int(image_id))
        if row is None:
            fail(f"{self.path}: image id {image_id} not found ({len(self.tsv)} rows)")
        return row

    def payload(self, image_id: int | str) -> Any:
        """The parsed JSON of ``image_id``'s row."""
        row = self._row_of(image_id)
        text = self.tsv.seek(row)[1]
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            fail(f"{self.path}: row {row}: expected JSON predictions, found unreadable JSON ({err})")

    def objects(self, image_id: int | str) -> list[dict[str, Any]]:
        """The detected objects of ``image_id`` (dicts with ``class`` and usually ``rect``, ``conf``)."""
        return _objects_of(self.payload(image_id), self.path, self._row_of(image_id))

    def tags(self, image_id: int | str) -> str:
        """OSCAR's object tags: ``' '.join(object classes)``, in detector order, repeats kept."""
        return " ".join(obj["class"] for obj in self.objects(image_id))

    def record(self, image_id: int | str) -> ImagePredictions:
        """Classes, float32 (n, 4) boxes and image size (600 x 800 for a bare list, as in OSCAR)."""
        payload = self.payload(image_id)
        row = self._row_of(image_id)
        objects = _objects_of(payload, self.path, row)
        try:
            boxes = np.asarray([obj["rect"] for obj in objects], dtype=np.float32).reshape(len(objects), 4)
        except (KeyError, TypeError, ValueError):
            fail(f"{self.path}: row {row}: expected every object to have a 4-number 'rect'")
        if isinstance(payload, dict):
            image_h, image_w = payload.get("image_h", DEFAULT_IMAGE_H), payload.get("image_w", DEFAULT_IMAGE_W)
        else:
            image_h, image_w = DEFAULT_IMAGE_H, DEFAULT_IMAGE_W
        return ImagePredictions(int(image_h), int(image_w), [obj["class"] for obj in objects], boxes)

    def close(self) -> None:
        self.tsv.close()


# ------------------------------------------------------------------------------------ captions / keys
def _as_image_id(key: Any, source: Path) -> int:
    if isinstance(key, bool):
        fail(f"{source}: expected int image ids as keys, found {key!r}")
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    fail(f"{source}: expected int image ids as keys, found {key!r:.40}")


def _as_caption_list(value: Any, image_id: int, source: Path) -> list[str]:
    if isinstance(value, str):  # OSCAR: a JSON string of the list
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            fail(
                f"{source}: image {image_id}: expected a list of captions or a JSON string of one, found {value!r:.60}"
            )
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        fail(f"{source}: image {image_id}: expected a list of caption strings, found {value!r:.60}")
    return list(value)


def check_captions_per_image(
    captions: Mapping[int, Sequence[str]],
    captions_per_image: int,
    source: str | os.PathLike,
    image_keys: Iterable[int] | None = None,
) -> None:
    """Fail unless every image (of ``image_keys``, default all) has at least ``captions_per_image`` captions.

    OSCAR reads captions ``0 .. k-1`` of each image: more are ignored, fewer would crash.
    """
    if captions_per_image < 1:
        fail(f"captions_per_image: expected a positive int, found {captions_per_image}")
    for image_id in captions if image_keys is None else image_keys:
        found = len(captions[image_id])
        if found < captions_per_image:
            fail(f"{source}: image {image_id}: expected at least {captions_per_image} captions, found {found}")


def load_captions_pt(path: str | os.PathLike, captions_per_image: int | None = None) -> dict[int, list[str]]:
    """``{split}_captions.pt`` as {int image_id: [captions]}, in the file's order.

    Loaded with ``torch.load(weights_only=True)``: only dicts, lists, strings and ints may appear; a
    pickle naming anything else is refused before it runs. String values are ``json.loads``-ed.
    """
    source = require_file(path, "captions file")
    if source.stat().st_size == 0:
        fail(f"{source}: expected a torch.save'd dict of captions, found an empty file")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        if named:
            fail(
                f"{source}: refusing to unpickle {named.group(1)}: a captions file may only hold dicts, lists, "
                "strings and ints"
            )
        fail(f"{source}: expected a torch.save'd dict of captions, found a file weights-only loading refuses")
    except Exception as err:  # the weights-only unpickler raises many kinds of error on junk bytes
        fail(f"{source}: expected a torch.save'd dict of captions, found an unreadable file ({type(err).__name__})")
    if not isinstance(loaded, dict) or not loaded:
        found = "an empty dict" if isinstance(loaded, dict) else type(loaded).__name__
        fail(f"{source}: expected a dict image_id -> list of captions, found {found}")
    captions: dict[int, list[str]] = {}
    for key, value in loaded.items():
        image_id = _as_image_id(key, source)
        if image_id in captions:
            fail(f"{source}: image id {image_id} appears twice (as {key!r} and as an int)")
        captions[image_id] = _as_caption_list(value, image_id, source)
    if captions_per_image is not None:
        check_captions_per_image(captions, captions_per_image, source)
    return captions


def read_img_keys(path: str | os.PathLike) -> list[int]:
    """``test_img_keys.tsv`` / ``test_img_keys_1k.tsv``: one int image id a line (blank lines skipped)."""
    source = require_file(path, "image keys file")
    keys: list[int] = []
    seen: set[int] = set()
    with open(source, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            if not text.lstrip("-").isdigit():
                fail(f"{source}: line {line_no}: expected one int image id, found {text[:40]!r}")
            key = int(text)
            if key in seen:
                fail(f"{source}: line {line_no}: image id {key} is listed twice")
            seen.add(key)
            keys.append(key)
    if not keys:
        fail(f"{source}: expected image ids, one a line, found none")
    return keys


# ------------------------------------------------------------------------------------------- writers
def write_tsv(tsv_file: str | os.PathLike, rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``rows`` (fields joined by tabs) and the matching ``.lineidx``; return the TSV path.

    A field holding a tab or a newline fails (it would split the row).
    """
    target = Path(tsv_file)
    offsets: list[int] = []
    position = 0
    with atomic_open(target) as out:
        for number, row in enumerate(rows):
            fields = [str(value) for value in row]
            for value in fields:
                if "\t" in value or "\n" in value or "\r" in value:
                    fail(f"{target}: row {number}: a field may not hold a tab or a newline, found {value[:40]!r}")
            line = ("\t".join(fields) + "\n").encode("utf-8")
            offsets.append(position)
            out.write(line)
            position += len(line)
    write_bytes_atomic(lineidx_path_for(target), _format_offsets(offsets))
    return target


def encode_features(features: np.ndarray, feat_dim: int = FEATURE_DIM, where: str = "features") -> str:
    """base64 of a (num_boxes, feat_dim) array as little-endian float32 (the features.tsv third field)."""
    array = np.asarray(features)
    if array.ndim != 2 or array.shape[1] != feat_dim:
        fail(f"{where}: expected an array (num_boxes, {feat_dim}), found shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        fail(f"{where}: expected float features, found dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype="<f4")
    if not np.isfinite(array).all():
        fail(f"{where}: expected finite features, found NaN/inf values")
    return base64.b64encode(array.tobytes()).decode("ascii")


def write_features_tsv(
    out_dir: str | os.PathLike,
    features: Mapping[int, np.ndarray],
    name: str = FEATURES_NAME,
    feat_dim: int = FEATURE_DIM,
) -> Path:
    """Write ``{name}.tsv``, ``{name}.lineidx`` and ``imageid2idx.json`` into ``out_dir``; return the TSV path.

    Rows follow the mapping's order; each array (num_boxes, feat_dim) is stored as float32 bit for bit.
    """
    directory = Path(out_dir)
    tsv_path = directory / f"{name}.tsv"
    image_ids = [_as_image_id(key, tsv_path) for key in features]
    if len(set(image_ids)) != len(image_ids):
        fail(f"{tsv_path}: image ids must be unique")
    rows = (
        (image_id, np.asarray(array).shape[0], encode_features(array, feat_dim, f"{tsv_path}: image {image_id}"))
        for image_id, array in zip(image_ids, features.values(), strict=True)
    )
    write_tsv(tsv_path, rows)
    mapping = {str(image_id): row for row, image_id in enumerate(image_ids)}
    write_json_atomic(directory / IMAGEID2IDX_NAME, mapping, indent=None)
    return tsv_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_predictions_tsv(
    out_dir: str | os.PathLike, predictions: Mapping[int, Any], name: str = PREDICTIONS_NAME
) -> Path:
    """Write ``{name}.tsv`` (``image_id \\t json``) and ``{name}.lineidx`` into ``out_dir``; return the TSV path.

    Each value is ``{"objects": [{"class", "rect", "conf", ...}], "image_h", "image_w"}`` or a bare list
    of objects; numpy values are converted to JSON numbers and lists.
    """
    tsv_path = Path(out_dir) / f"{name}.tsv"
    rows = []
    for row, (key, payload) in enumerate(predictions.items()):
        image_id = _as_image_id(key, tsv_path)
        text = json.dumps(payload, default=_json_default)
        _objects_of(json.loads(text), tsv_path, row)
        rows.append((image_id, text))
    return write_tsv(tsv_path, rows)


def write_captions_pt(path: str | os.PathLike, captions: Mapping[int, Sequence[str]]) -> Path:
    """``torch.save`` {int image_id: [captions]} atomically (the ``{split}_captions.pt`` format)."""
    target = Path(path)
    plain: dict[int, list[str]] = {}
    for key, value in captions.items():
        image_id = _as_image_id(key, target)
        plain[image_id] = _as_caption_list(value if isinstance(value, str) else list(value), image_id, target)
    return save_atomic(plain, target)


def write_img_keys(path: str | os.PathLike, keys: Iterable[int]) -> Path:
    """Write image ids one a line (the ``test_img_keys.tsv`` format); return the path."""
    target = Path(path)
    image_ids = [_as_image_id(key, target) for key in keys]
    return write_lines_atomic(target, map(str, image_ids))


# ------------------------------------------------------------------------------ retrieval split container
def captions_file(data_dir: str | os.PathLike, split: str) -> Path:
    """``{data_dir}/{split}_captions.pt``."""
    return Path(data_dir) / f"{split}_captions.pt"


def image_caption_index(
    index: int, num_images: int, captions_per_image: int, cross_image: bool = False
) -> tuple[int, int, int]:
    """OSCAR ``get_image_caption_index``: pair ``index`` -> (image idx, caption's image idx, caption idx).

    Plain: pair ``i`` is image ``i // k`` with its own caption ``i % k`` (``num_images * k`` pairs).
    Cross-image evaluation: every image with every caption, image-major (``num_images**2 * k`` pairs):
    image ``i // (k * N)``, caption ``(i % (k * N)) % k`` of image ``(i % (k * N)) // k``.
    A pair is positive when the two image indices are equal.
    """
    k = captions_per_image
    if cross_image:
        image_idx, caption_slot = divmod(index, k * num_images)
        caption_image_idx, caption_idx = divmod(caption_slot, k)
        return image_idx, caption_image_idx, caption_idx
    image_idx, caption_idx = divmod(index, k)
    return image_idx, image_idx, caption_idx


@dataclass
class VinVLRetrievalSplit:
    """One split of a VinVL ``coco_ir`` tree with its features: keys, captions, features and tags.

    Made by :meth:`open`. Pair ``i`` (of ``len(split) = num_images * captions_per_image``) is image
    ``image_keys[i // k]`` with its caption ``i % k``, as in OSCAR's ``RetrievalDataset``; only the
    first ``captions_per_image`` captions of an image are ever used.
    """

    split: str
    image_keys: list[int]
    captions: dict[int, list[str]]
    captions_per_image: int
    features: FeatureTSV
    predictions: PredictionsTSV | None = None
    _tags: dict[int, str] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike,
        img_feat_file: str | os.PathLike,
        split: str,
        *,
        captions_per_image: int = 5,
        img_keys_file: str | os.PathLike | None = None,
        add_od_labels: bool = True,
        feat_dim: int = FEATURE_DIM,
        imageid2idx_path: str | os.PathLike | None = None,
        predictions_file: str | os.PathLike | None = None,
    ) -> VinVLRetrievalSplit:
        """Open ``{data_dir}/{split}_captions.pt`` with ``img_feat_file`` (and ``predictions.tsv`` beside it).

        Image keys are the captions file's keys in its order, or those of ``img_keys_file`` (relative
        to ``data_dir``, as OSCAR's ``--eval_img_keys_file``; OSCAR applies it to evaluation splits
        only, which the caller decides). Every key must have ``captions_per_image`` captions, a
        features row and, with ``add_od_labels``, a predictions row: a missing one fails here, naming
        the file, rather than in a DataLoader worker.
        """
        caption_path = captions_file(data_dir, split)
        captions = load_captions_pt(caption_path)
        if img_keys_file:
            keys_path = Path(data_dir) / img_keys_file
            image_keys, keys_source = read_img_keys(keys_path), keys_path
            missing = [key for key in image_keys if key not in captions]
            if missing:
                fail(
                    f"{keys_path}: image {missing[0]} has no captions in {caption_path} "
                    f"({len(missing)} of {len(image_keys)} images missing)"
                )
        else:
            image_keys, keys_source = list(captions), caption_path
        check_captions_per_image(captions, captions_per_image, caption_path, image_keys)

        features = FeatureTSV(img_feat_file, imageid2idx_path=imageid2idx_path, feat_dim=feat_dim)
        missing = [key for key in image_keys if key not in features]
        if missing:
            fail(
                f"{features.imageid2idx_path}: no features row for image {missing[0]} of {keys_source} "
                f"({len(missing)} of {len(image_keys)} images missing)"
            )
        predictions = None
        if add_od_labels:
            predictions_path = predictions_file or features.path.parent / f"{PREDICTIONS_NAME}.tsv"
            predictions = PredictionsTSV(predictions_path)
            missing = [key for key in image_keys if key not in predictions]
            if missing:
                fail(
                    f"{predictions.path}: no predictions row for image {missing[0]} of {keys_source} "
                    f"({len(missing)} of {len(image_keys)} images missing)"
                )
        kept = {key: captions[key] for key in image_keys}
        return cls(split, image_keys, kept, captions_per_image, features, predictions)

    @property
    def num_images(self) -> int:
        return len(self.image_keys)

    def num_pairs(self, cross_image: bool = False) -> int:
        """``N * k`` pairs, or ``N * N * k`` for OSCAR's cross-image evaluation."""
        n, k = self.num_images, self.captions_per_image
        return n * n * k if cross_image else n * k

    def __len__(self) -> int:
        return self.num_pairs()

    def pair(self, index: int, cross_image: bool = False) -> tuple[int, int, int]:
        """Pair ``index`` -> (image key, key of the caption's image, caption index); positive iff keys equal."""
        if not 0 <= index < self.num_pairs(cross_image):
            raise IndexError(f"pair {index} out of range ({self.num_pairs(cross_image)} pairs)")
        image_idx, caption_image_idx, caption_idx = image_caption_index(
            index, self.num_images, self.captions_per_image, cross_image
        )
        return self.image_keys[image_idx], self.image_keys[caption_image_idx], caption_idx

    def caption(self, image_key: int, caption_idx: int) -> str:
        """Caption ``caption_idx`` (< captions_per_image) of image ``image_key``."""
        if not 0 <= caption_idx < self.captions_per_image:
            raise IndexError(f"caption {caption_idx} out of range ({self.captions_per_image} per image)")
        return self.captions[image_key][caption_idx]

    def flat_captions(self) -> list[str]:
        """All ``N * k`` captions, image-major: caption ``j`` belongs to image ``j // k``."""
        k = self.captions_per_image
        return [caption for key in self.image_keys for caption in self.captions[key][:k]]

    def image_features(self, image_key: int) -> np.ndarray:
        """float32 (num_boxes, feat_dim) region features of ``image_key``."""
        return self.features.get(image_key)

    def tags(self, image_key: int) -> str | None:
        """Object tags of ``image_key`` (``' '.join(classes)``); None when opened without OD labels."""
        if self.predictions is None:
            return None
        if image_key not in self._tags:
            self._tags[image_key] = self.predictions.tags(image_key)
        return self._tags[image_key]

    def close(self) -> None:
        self.features.close()
        if self.predictions is not None:
            self.predictions.close()


__all__ = [
    "FEATURE_DIM",
    "FeatureTSV",
    "ImagePredictions",
    "PredictionsTSV",
    "TSVFile",
    "VinVLRetrievalSplit",
    "captions_file",
    "check_captions_per_image",
    "decode_feature_row",
    "encode_features",
    "generate_lineidx_file",
    "image_caption_index",
    "lineidx_path_for",
    "load_captions_pt",
    "load_imageid2idx",
    "read_img_keys",
    "write_captions_pt",
    "write_features_tsv",
    "write_img_keys",
    "write_predictions_tsv",
    "write_tsv",
]
