"""UNITER ``txt_db`` / ``img_db`` LMDB reader and writer (IAIS and LightningDOT read these).

txt_db directory (e.g. ``itm_flickr30k_train.db/``)::

    data.mdb, lock.mdb   LMDB; key ``str(id).encode()`` (Karpathy sentid), value
                         ``lz4.frame.compress(msgpack.dumps(record, use_bin_type=True))`` (msgpack_numpy
                         encoding); record fields tokens, raw, imgid, sentid, image_id, toked_caption,
                         input_ids (no [CLS]/[SEP]), img_fname
    meta.json            prepro arguments plus the ``UNK``, ``CLS``, ``SEP``, ``MASK`` ids and ``v_range``
    id2len.json          txt_id -> len(input_ids)
    txt2img.json         txt_id -> img_fname
    img2txts.json        img_fname -> [txt_id, ...]

img_db directory (e.g. ``img_db/flickr30k/``)::

    feat_th{conf_th}_max{max_bb}_min{min_bb}[_compressed]/   LMDB, or feat_numbb{num_bb}[_compressed]/
                                                             when conf_th == -1
    nbb_th{conf_th}_max{max_bb}_min{min_bb}.json             img_fname -> nbb

An img_db value is a dict of fp16 arrays already cut to ``nbb`` rows: features (nbb, 2048), norm_bb
(nbb, 6) = [x1/w, y1/h, x2/w, y2/h, bw/w, bh/h], conf (nbb,), soft_labels (nbb, 1601); stored with
``msgpack.dumps`` (msgpack_numpy), or as ``np.savez_compressed`` bytes in ``_compressed`` dbs. The key
``__keys__`` holds the JSON list of image names. ``nbb = min(max_bb, max(min_bb, (conf > conf_th).sum()))``.
Reading casts fp16 to fp32 and cuts to ``nbb`` rows again (as UNITER does).

Readers open LMDB read-only and lock-free (``lock=False``, ``readahead=False``). The environment is
opened lazily in each process (the pid is remembered and the env reopened after a fork, and dropped
when pickled), so one db object can be handed to several DataLoader workers.
"""

from __future__ import annotations

import io
import json
import os
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import lmdb
import lz4.frame
import msgpack
import msgpack_numpy
import numpy as np
import torch

from itr_common.errors import UserError, fail, require_dir, require_file
from itr_common.fileio import read_json, write_json_atomic

META_KEYS = ("CLS", "SEP", "MASK", "v_range")
KEYS_KEY = b"__keys__"
IMG_REQUIRED_KEYS = ("features", "norm_bb")
NORM_BB_DIM = 6
COMMIT_EVERY = 1000
COMMIT_BYTES = 64 * 2**20
INITIAL_MAP_SIZE = 64 * 2**20


# ----------------------------------------------------------------------------------------------
# value codecs


def encode_txt_value(record: Mapping[str, Any]) -> bytes:
    """``lz4.frame.compress(msgpack.dumps(record, use_bin_type=True))`` with msgpack_numpy encoding."""
    return lz4.frame.compress(msgpack.packb(dict(record), default=msgpack_numpy.encode, use_bin_type=True))


def decode_txt_value(buf: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_txt_value`; raises the lz4/msgpack error on corrupt data."""
    return msgpack.unpackb(
        lz4.frame.decompress(buf), object_hook=msgpack_numpy.decode, raw=False, strict_map_key=False
    )


def encode_img_value(arrays: Mapping[str, np.ndarray], compressed: bool) -> bytes:
    """An img_db value: ``np.savez_compressed`` bytes when ``compressed`` else msgpack (msgpack_numpy)."""
    if compressed:
        with io.BytesIO() as writer:
            np.savez_compressed(writer, **arrays)
            return writer.getvalue()
    return msgpack.packb(dict(arrays), default=msgpack_numpy.encode, use_bin_type=True)


def decode_img_value(buf: bytes, compressed: bool, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_img_value`: the arrays (all, or only ``keys``), 0-d entries dropped.

    Original compressed values may hold a stray 0-d ``allow_pickle`` entry (old numpy stored the
    keyword as an array); it is dropped. Pickled object arrays are refused.
    """
    if compressed:
        with np.load(io.BytesIO(buf), allow_pickle=False) as npz:
            names = [k for k in npz.files if keys is None or k in keys]
            out = {k: npz[k] for k in names}
    else:
        out = msgpack.unpackb(buf, object_hook=msgpack_numpy.decode, raw=False, strict_map_key=False)
        if not isinstance(out, dict):
            raise ValueError(f"expected a dict of arrays, found {type(out).__name__}")
        out = {k: v for k, v in out.items() if keys is None or k in keys}
    return {k: np.asarray(v) for k, v in out.items() if np.ndim(v) > 0}


# ----------------------------------------------------------------------------------------------
# naming and the nbb rule


def _fmt_th(conf_th: float) -> str:
    """``conf_th`` as UNITER's convert_imgdir.py writes it (argparse float: 0.2 -> '0.2', 0 -> '0.0')."""
    return str(float(conf_th))


def img_db_name(conf_th: float, max_bb: int, min_bb: int, num_bb: int, compressed: bool) -> str:
    """LMDB sub-dir of an img_db: ``feat_th{conf_th}_max{max_bb}_min{min_bb}`` or ``feat_numbb{num_bb}``
    (conf_th == -1), plus ``_compressed``."""
    name = f"feat_numbb{num_bb}" if conf_th == -1 else f"feat_th{_fmt_th(conf_th)}_max{max_bb}_min{min_bb}"
    return name + "_compressed" if compressed else name


def nbb_file_name(conf_th: float, max_bb: int, min_bb: int) -> str:
    """``nbb_th{conf_th}_max{max_bb}_min{min_bb}.json``."""
    return f"nbb_th{_fmt_th(conf_th)}_max{max_bb}_min{min_bb}.json"


def compute_num_bb(confs: np.ndarray, conf_th: float, min_bb: int, max_bb: int) -> int:
    """``min(max_bb, max(min_bb, (confs > conf_th).sum()))``: boxes kept for one image."""
    return int(min(max_bb, max(min_bb, int((np.asarray(confs) > conf_th).sum()))))


def pos_features(norm_bb: torch.Tensor) -> torch.Tensor:
    """UNITER's 7-d box position (nbb, 7): norm_bb (nbb, 6) with the area ``bw/w * bh/h`` appended."""
    return torch.cat([norm_bb, norm_bb[:, 4:5] * norm_bb[:, 5:6]], dim=-1)


# ----------------------------------------------------------------------------------------------
# LMDB access


def _open_readonly_env(path: Path, readahead: bool) -> lmdb.Environment:
    """Open an LMDB directory read-only and lock-free, or fail naming the directory or data.mdb.

    A ``data.mdb`` shorter than its last used page is refused: reading it would crash the process
    with SIGBUS instead of raising.
    """
    data = path / "data.mdb"
    try:
        env = lmdb.open(str(path), readonly=True, create=False, lock=False, readahead=readahead, subdir=True)
    except lmdb.Error as err:
        fail(f"{data}: expected an LMDB data file, found unreadable data ({err})")
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = data.stat().st_size
    if size < needed:
        env.close()
        fail(f"{data}: truncated LMDB file: expected at least {needed} bytes, found {size}")
    return env


# LMDB allows one environment per file per process (py-lmdb refuses a second open), so every reader
# of a db in this process shares one handle: keyed by (pid, st_dev, st_ino) of data.mdb, held weakly
# (closed when its last reader goes). Entries of another pid were inherited over fork.
_SHARED_ENVS: weakref.WeakValueDictionary[tuple[int, int, int], lmdb.Environment] = weakref.WeakValueDictionary()


def _close_inherited_envs() -> None:
    """Close this process's copies of handles opened by a parent before fork (safe with lock=False)."""
    pid = os.getpid()
    for key, env in list(_SHARED_ENVS.items()):
        if key[0] != pid:
            _SHARED_ENVS.pop(key, None)
            env.close()


def shared_readonly_env(path: str | os.PathLike, readahead: bool = False) -> lmdb.Environment:
    """The read-only, lock-free environment of the LMDB directory ``path`` for this process."""
    path = Path(path)
    data = require_file(require_dir(path, "LMDB directory") / "data.mdb", "LMDB data file")
    st = data.stat()
    key = (os.getpid(), st.st_dev, st.st_ino)
    env = _SHARED_ENVS.get(key)
    if env is None:
        _close_inherited_envs()
        env = _open_readonly_env(path, readahead)
        _SHARED_ENVS[key] = env
    return env


class LazyLmdbEnv:
    """A read-only LMDB environment opened on first use in each process.

    The owning pid is stored; after a fork the child opens its own environment instead of using the
    parent's handle (LMDB forbids sharing one across fork), and pickling drops the handle (spawn).
    The directory is checked (and opened) at construction so bad paths fail in the main process.
    Readers of the same db in one process share one handle (:func:`shared_readonly_env`).
    """

    def __init__(self, path: str | os.PathLike, readahead: bool = False) -> None:
        self.path = Path(path)
        self.readahead = readahead
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self.get()

    def get(self) -> lmdb.Environment:
        """The environment of this process."""
        if self._env is None or self._pid != os.getpid():
            self._env = shared_readonly_env(self.path, self.readahead)
            self._pid = os.getpid()
        return self._env

    @property
    def opened_in(self) -> int | None:
        """The pid that opened the current handle (None before the first use in this process)."""
        return self._pid

    def read(self, key: bytes) -> bytes | None:
        """The value stored under ``key`` (a copy), or None."""
        try:
            with self.get().begin(buffers=False) as txn:
                return txn.get(key)
        except lmdb.Error as err:  # MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...
            fail(f"{self.path / 'data.mdb'}: corrupt LMDB reading key {key.decode('utf-8', 'replace')!r} ({err})")

    def keys(self) -> list[bytes]:
        """All keys, in LMDB order."""
        with self.get().begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def close(self) -> None:
        """Drop this reader's handle (the shared environment closes with its last reader)."""
        self._env = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "readahead": self.readahead, "_env": None, "_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class LmdbWriter:
    """Batched LMDB writes that grow the map size when it fills (no guessed terabyte map).

    Writes are committed every ``COMMIT_EVERY`` values or ``COMMIT_BYTES`` bytes; a batch that hits
    ``MapFullError`` is rolled back, the map doubled and the batch replayed.
    """

    def __init__(self, path: str | os.PathLike, map_size: int = INITIAL_MAP_SIZE) -> None:
        self.path = Path(path)
        if (self.path / "data.mdb").exists():
            fail(f"{self.path}: expected a new LMDB directory, found an existing one (remove it to re-create)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(self.path), map_size=map_size, subdir=True, readonly=False, create=True)
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self._pending.append((key, value))
        self._pending_bytes += len(key) + len(value)
        if len(self._pending) >= COMMIT_EVERY or self._pending_bytes >= COMMIT_BYTES:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
            except lmdb.MapFullError:
                self.env.set_mapsize(2 * self.env.info()["map_size"])
                continue
            self._pending.clear()
            self._pending_bytes = 0

    def close(self) -> None:
        self.flush()
        self.env.close()

    def __enter__(self) -> LmdbWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.env.close()


# ----------------------------------------------------------------------------------------------
# txt_db


class TxtLmdb:
    """The LMDB of a txt_db: ``db[str_id] -> dict``.

    ``readonly=True`` (training): lazy, fork-safe, lock-free reader. ``readonly=False`` (prepro):
    ``db[str_id] = record`` writes, committed on :meth:`close` (or leaving ``with``).
    """

    def __init__(self, db_dir: str | os.PathLike, readonly: bool = True, readahead: bool = False) -> None:
        self.db_dir = Path(db_dir)
        self.readonly = readonly
        self._reader = LazyLmdbEnv(self.db_dir, readahead) if readonly else None
        self._writer = None if readonly else LmdbWriter(self.db_dir)

    def __getitem__(self, key: str) -> dict[str, Any]:
        if self._reader is None:
            raise UserError(f"{self.db_dir}: text DB opened for writing, reopen it read-only to read")
        buf = self._reader.read(str(key).encode("utf-8"))
        if buf is None:
            fail(f"{self.db_dir}: text id '{key}' not found in the LMDB")
        try:
            value = decode_txt_value(buf)
        except Exception as err:  # lz4 and msgpack raise many types on corrupt bytes
            fail(f"{self.db_dir}: corrupt value for key '{key}' ({type(err).__name__}: {err})")
        if not isinstance(value, dict):
            fail(f"{self.db_dir}: expected a dict for key '{key}', found {type(value).__name__}")
        return value

    def __contains__(self, key: str) -> bool:
        return self._reader is not None and self._reader.read(str(key).encode("utf-8")) is not None

    def __setitem__(self, key: str, value: Mapping[str, Any]) -> None:
        if self._writer is None:
            raise UserError(f"{self.db_dir}: readonly text DB")
        self._writer.put(str(key).encode("utf-8"), encode_txt_value(value))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> TxtLmdb:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextmanager
def open_lmdb(db_dir: str | os.PathLike, readonly: bool = False) -> Iterator[TxtLmdb]:
    """UNITER's ``open_lmdb``: a :class:`TxtLmdb` closed (and committed) on exit."""
    db = TxtLmdb(db_dir, readonly)
    try:
        yield db
    finally:
        db.close()


class TxtTokLmdb:
    """A tokenised txt_db: ids kept under ``max_txt_len``, their lengths, and the JSON maps.

    Captions longer than ``max_txt_len`` tokens are dropped, not truncated (UNITER); ``-1`` keeps all
    (val/test). ``db[id]`` is the stored record; :meth:`combine_inputs` adds [CLS]/[SEP].

    Attributes: ids (list[str], id2len order), lens (list[int]), id2len (kept ids only), meta,
    cls_, sep, mask, v_range; ``txt2img`` / ``img2txts`` are loaded on first use.
    """

    def __init__(self, db_dir: str | os.PathLike, max_txt_len: int = 60, readahead: bool = False) -> None:
        self.db_dir = require_dir(db_dir, "txt_db directory")
        self.max_txt_len = max_txt_len
        self.meta: dict[str, Any] = read_json(self.db_dir / "meta.json", "txt_db meta", expect=dict)
        missing = [k for k in META_KEYS if k not in self.meta]
        if missing:
            fail(f"{self.db_dir / 'meta.json'}: expected keys {', '.join(META_KEYS)}, missing {', '.join(missing)}")
        id2len = read_json(self.db_dir / "id2len.json", "txt_db id2len", expect=dict)
        bad = next((k for k, v in id2len.items() if not isinstance(v, int) or isinstance(v, bool)), None)
        if bad is not None:
            fail(f"{self.db_dir / 'id2len.json'}: expected integer lengths, found {id2len[bad]!r} for id '{bad}'")
        self.id2len: dict[str, int] = {
            id_: len_ for id_, len_ in id2len.items() if max_txt_len == -1 or len_ <= max_txt_len
        }
        self.ids: list[str] = list(self.id2len)
        self.lens: list[int] = [self.id2len[i] for i in self.ids]
        self.db = TxtLmdb(self.db_dir, readonly=True, readahead=readahead)
        self.cls_: int = self.meta["CLS"]
        self.sep: int = self.meta["SEP"]
        self.mask: int = self.meta["MASK"]
        self.v_range: list[int] = list(self.meta["v_range"])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, id_: str) -> dict[str, Any]:
        return self.db[id_]

    def combine_inputs(self, *inputs: Sequence[int]) -> torch.Tensor:
        """``[CLS] ids_1 [SEP] ids_2 [SEP] ...`` as a LongTensor (L,)."""
        input_ids = [self.cls_]
        for ids in inputs:
            input_ids.extend(int(i) for i in ids)
            input_ids.append(self.sep)
        return torch.tensor(input_ids, dtype=torch.long)

    @cached_property
    def txt2img(self) -> dict[str, Any]:
        """txt_id -> img_fname."""
        return read_json(self.db_dir / "txt2img.json", "txt_db txt2img", expect=dict)

    @cached_property
    def img2txts(self) -> dict[str, list[str]]:
        """img_fname -> [txt_id, ...]."""
        return read_json(self.db_dir / "img2txts.json", "txt_db img2txts", expect=dict)


def get_ids_and_lens(db: TxtTokLmdb, rank: int = 0, world_size: int = 1) -> tuple[list[int], list[str]]:
    """``(lens, ids)`` of this rank's shard ``ids[rank::world_size]`` (UNITER's horovod sharding)."""
    ids = db.ids[rank::world_size]
    return [db.id2len[i] for i in ids], ids


def _record_id(record: Mapping[str, Any], position: int) -> str:
    id_ = record.get("id", record.get("sentid"))
    if id_ is None:
        fail(f"txt_db record {position}: expected an 'id' (or Karpathy 'sentid') field, found keys {sorted(record)}")
    return str(id_)


def _img_fnames(value: Any) -> list[str]:
    """img_fname of a record as a list (NLVR2 records hold a pair)."""
    return [value] if isinstance(value, str) else list(value)


def write_txt_db(db_dir: str | os.PathLike, records: Iterable[Mapping[str, Any]], meta: Mapping[str, Any]) -> Path:
    """Write a txt_db: the LMDB plus meta.json, id2len.json, txt2img.json, img2txts.json.

    Each record needs ``input_ids`` (token ids without [CLS]/[SEP]), ``img_fname`` and ``id`` (or the
    Karpathy ``sentid``); every other field (tokens, raw, imgid, sentid, image_id, toked_caption) is
    stored as given. ``meta`` needs CLS, SEP, MASK, v_range (UNITER's prepro writes UNK and its
    arguments too). Returns ``db_dir``.
    """
    db_dir = Path(db_dir)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        fail(f"{db_dir / 'meta.json'}: expected keys {', '.join(META_KEYS)}, missing {', '.join(missing)}")
    id2len: dict[str, int] = {}
    txt2img: dict[str, Any] = {}
    img2txts: dict[str, list[str]] = defaultdict(list)
    with LmdbWriter(db_dir) as writer:
        for position, record in enumerate(records):
            key = _record_id(record, position)
            if key in id2len:
                fail(f"{db_dir}: duplicate text id '{key}' (record {position})")
            if "input_ids" not in record or "img_fname" not in record:
                fail(f"{db_dir}: record '{key}' needs 'input_ids' and 'img_fname', found keys {sorted(record)}")
            value = dict(record)
            value["input_ids"] = [int(t) for t in record["input_ids"]]
            writer.put(key.encode("utf-8"), encode_txt_value(value))
            id2len[key] = len(value["input_ids"])
            txt2img[key] = record["img_fname"]
            for fname in _img_fnames(record["img_fname"]):
                img2txts[fname].append(key)
    write_json_atomic(db_dir / "meta.json", dict(meta), indent=4)
    write_json_atomic(db_dir / "id2len.json", id2len, indent=None)
    write_json_atomic(db_dir / "txt2img.json", txt2img, indent=None)
    write_json_atomic(db_dir / "img2txts.json", dict(img2txts), indent=None)
    return db_dir


# ----------------------------------------------------------------------------------------------
# img_db


def _fallback_db_name(compressed: bool) -> str:
    return "all_compressed" if compressed else "all"


def _listing(img_dir: Path) -> str:
    names = sorted(p.name for p in img_dir.iterdir() if p.name.startswith(("feat_", "nbb_", "all")))
    return ", ".join(names) if names else "none"


class DetectFeatLmdb:
    """The LMDB of an img_db: ``db[img_fname] -> (features (nbb, D), pos (nbb, 7))``.

    Args mirror UNITER: ``conf_th == -1`` reads ``feat_numbb{num_bb}`` with ``num_bb`` boxes per image;
    otherwise ``feat_th{conf_th}_max{max_bb}_min{min_bb}`` with nbb from the matching nbb json. If that
    json is missing but an ``all[_compressed]`` LMDB is there, nbb is computed from its ``conf`` (UNITER's
    fallback). Attributes: img_dir, db_name, db_path, name2nbb (img_fname -> nbb), compressed.
    """

    def __init__(
        self,
        img_dir: str | os.PathLike,
        conf_th: float = 0.2,
        max_bb: int = 100,
        min_bb: int = 10,
        num_bb: int = 36,
        compressed: bool = True,
        readahead: bool = False,
    ) -> None:
        self.img_dir = require_dir(img_dir, "img_db directory")
        self.conf_th, self.max_bb, self.min_bb, self.num_bb = conf_th, max_bb, min_bb, num_bb
        self.compressed = compressed
        self.db_name = img_db_name(conf_th, max_bb, min_bb, num_bb, compressed)
        name2nbb: dict[str, int] | None = None
        if conf_th != -1:
            nbb_path = self.img_dir / nbb_file_name(conf_th, max_bb, min_bb)
            if nbb_path.exists():
                name2nbb = self._load_nbb(nbb_path)
            elif (self.img_dir / _fallback_db_name(compressed)).is_dir():
                self.db_name = _fallback_db_name(compressed)
            else:
                fail(f"{nbb_path}: nbb file for conf_th={conf_th} max_bb={max_bb} min_bb={min_bb} not found; "
                     f"{self.img_dir} has: {_listing(self.img_dir)}")
        self.db_path = self.img_dir / self.db_name
        if not self.db_path.is_dir():
            fail(f"{self.db_path}: img_db LMDB not found (compressed={compressed}); "
                 f"{self.img_dir} has: {_listing(self.img_dir)}")
        self.env = LazyLmdbEnv(self.db_path, readahead)
        if name2nbb is None:
            name2nbb = self._fixed_nbb() if conf_th == -1 else self._compute_nbb()
        self.name2nbb: dict[str, int] = name2nbb

    # -- nbb --------------------------------------------------------------------------------

    @staticmethod
    def _load_nbb(path: Path) -> dict[str, int]:
        name2nbb = read_json(path, "nbb map", expect=dict)
        bad = next((k for k, v in name2nbb.items() if not isinstance(v, int) or v < 0), None)
        if bad is not None:
            fail(f"{path}: expected a non-negative integer nbb per image, found {name2nbb[bad]!r} for '{bad}'")
        return name2nbb

    def _stored_names(self) -> list[str]:
        buf = self.env.read(KEYS_KEY)
        if buf is not None:
            try:
                return list(json.loads(buf.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as err:
                fail(f"{self.db_path}: corrupt value for key '__keys__' ({err})")
        return [k.decode("utf-8") for k in self.env.keys() if k != KEYS_KEY]

    def _fixed_nbb(self) -> dict[str, int]:
        return {name: self.num_bb for name in self._stored_names()}

    def _compute_nbb(self) -> dict[str, int]:
        name2nbb = {}
        for name in self._stored_names():
            conf = self._decode(name, keys=("conf",)).get("conf")
            if conf is None:
                fail(f"{self.db_path}: image '{name}' has no 'conf' array to compute nbb from")
            name2nbb[name] = compute_num_bb(conf, self.conf_th, self.min_bb, self.max_bb)
        return name2nbb

    # -- reading ----------------------------------------------------------------------------

    def _decode(self, fname: str, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
        buf = self.env.read(fname.encode("utf-8"))
        if buf is None:
            fail(f"{self.db_path}: image '{fname}' not found in the LMDB")
        try:
            return decode_img_value(buf, self.compressed, keys)
        except Exception as err:  # zipfile, numpy and msgpack raise many types on corrupt bytes
            fail(f"{self.db_path}: corrupt value for key '{fname}' ({type(err).__name__}: {err})")

    def _read(self, fname: str, keys: Sequence[str] | None) -> dict[str, np.ndarray]:
        """Arrays of ``fname`` cut to nbb rows, fp16 cast to fp32, checked."""
        nbb = self.name2nbb.get(fname)
        if nbb is None:
            fail(f"{self.db_path}: image '{fname}' not in the nbb map of {self.img_dir}")
        arrays = self._decode(fname, keys)
        missing = [k for k in IMG_REQUIRED_KEYS if (keys is None or k in keys) and k not in arrays]
        if missing:
            fail(f"{self.db_path}: image '{fname}' lacks {', '.join(missing)}; found {', '.join(sorted(arrays))}")
        out = {}
        for key, arr in arrays.items():
            if arr.shape[0] < nbb:
                fail(f"{self.db_path}: image '{fname}' '{key}' has {arr.shape[0]} rows, expected at least nbb={nbb}")
            arr = arr[:nbb]
            out[key] = arr.astype(np.float32) if arr.dtype == np.float16 else np.array(arr)
        feats, bb = out.get("features"), out.get("norm_bb")
        if feats is not None and feats.ndim != 2:
            fail(f"{self.db_path}: image '{fname}' features: expected (nbb, D), found {feats.shape}")
        if bb is not None and (bb.ndim != 2 or bb.shape[1] != NORM_BB_DIM):
            fail(f"{self.db_path}: image '{fname}' norm_bb: expected (nbb, 6), found {bb.shape}")
        for key in IMG_REQUIRED_KEYS:
            if key in out and not np.isfinite(out[key]).all():
                fail(f"{self.db_path}: image '{fname}' {key}: expected finite values, found NaN/inf")
        return out

    def __getitem__(self, fname: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features FloatTensor (nbb, D), pos FloatTensor (nbb, 7))``; pos = norm_bb + area."""
        arrays = self._read(fname, IMG_REQUIRED_KEYS)
        feats = torch.from_numpy(arrays["features"]).float()
        bb = torch.from_numpy(arrays["norm_bb"]).float()
        return feats, pos_features(bb)

    def get_raw(self, fname: str) -> dict[str, np.ndarray]:
        """All stored arrays of ``fname`` (features, norm_bb, conf, soft_labels, ...) cut to nbb, fp32."""
        return self._read(fname, None)

    get_dump = get_raw  # UNITER's name

    @property
    def feature_dim(self) -> int | None:
        """The region feature size D of this img_db (read from its first image), None when it is empty."""
        first = next(iter(self.name2nbb), None)
        return None if first is None else int(self[first][0].shape[1])

    def __contains__(self, fname: str) -> bool:
        return fname in self.name2nbb

    def __len__(self) -> int:
        return len(self.name2nbb)

    @property
    def names(self) -> list[str]:
        return list(self.name2nbb)

    def close(self) -> None:
        self.env.close()


def _checked_item(
    fname: str, arrays: Mapping[str, Any], conf_th: float, max_bb: int, min_bb: int, num_bb: int, where: Path
) -> tuple[dict[str, np.ndarray], int]:
    """Validate one image's arrays, cut them to nbb rows and cast floats to fp16."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    missing = [k for k in (*IMG_REQUIRED_KEYS, *(() if conf_th == -1 else ("conf",))) if k not in arrays]
    if missing:
        fail(f"{where}: image '{fname}' lacks {', '.join(missing)}; found {', '.join(sorted(arrays))}")
    feats, bb = arrays["features"], arrays["norm_bb"]
    n = feats.shape[0] if feats.ndim == 2 else -1
    if n < 0 or bb.shape != (n, NORM_BB_DIM):
        fail(f"{where}: image '{fname}': expected features (n, D) and norm_bb (n, 6), "
             f"found {feats.shape} and {bb.shape}")
    bad = next((k for k, v in arrays.items() if v.ndim == 0 or v.shape[0] != n), None)
    if bad is not None:
        fail(f"{where}: image '{fname}' {bad}: expected {n} rows like features, found shape {arrays[bad].shape}")
    if not np.isfinite(feats).all():
        fail(f"{where}: image '{fname}' features: expected finite values, found NaN/inf")
    if conf_th == -1:
        nbb = num_bb
    else:
        nbb = compute_num_bb(arrays["conf"], conf_th, min_bb, max_bb)
    if n < nbb:
        fail(f"{where}: image '{fname}': expected at least {nbb} boxes (nbb for conf_th={conf_th} "
             f"min_bb={min_bb} num_bb={num_bb}), found {n}")
    out = {}
    for key, arr in arrays.items():
        arr = arr[:nbb]
        if arr.dtype.kind == "f":
            with np.errstate(over="ignore"):
                half = arr.astype(np.float16)
            if not np.isfinite(half).all() and np.isfinite(arr).all():
                fail(f"{where}: image '{fname}' {key}: values overflow float16 (max |x| = {np.abs(arr).max():g})")
            arr = half
        out[key] = np.ascontiguousarray(arr)
    return out, nbb


def write_img_db(
    img_db_root: str | os.PathLike,
    items: Iterable[tuple[str, Mapping[str, Any]]],
    conf_th: float = 0.2,
    max_bb: int = 100,
    min_bb: int = 10,
    num_bb: int = 36,
    compressed: bool = False,
) -> Path:
    """Write an img_db LMDB under ``img_db_root`` (named by :func:`img_db_name`) and its nbb json.

    ``items`` yields ``(img_fname, arrays)`` with features (n, D), norm_bb (n, 6), conf (n,) (needed
    unless conf_th == -1) and optional soft_labels (n, 1601). Each image keeps ``nbb`` rows (the
    UNITER rule, or num_bb when conf_th == -1), floats stored as fp16 (convert_imgdir.py). Returns the
    LMDB directory.
    """
    root = Path(img_db_root)
    db_path = root / img_db_name(conf_th, max_bb, min_bb, num_bb, compressed)
    name2nbb: dict[str, int] = {}
    with LmdbWriter(db_path) as writer:
        for fname, arrays in items:
            if not isinstance(fname, str) or not fname or fname == KEYS_KEY.decode():
                fail(f"{db_path}: expected a non-empty image file name, found {fname!r}")
            if fname in name2nbb:
                fail(f"{db_path}: duplicate image '{fname}'")
            cut, nbb = _checked_item(fname, arrays, conf_th, max_bb, min_bb, num_bb, db_path)
            writer.put(fname.encode("utf-8"), encode_img_value(cut, compressed))
            name2nbb[fname] = nbb
        writer.put(KEYS_KEY, json.dumps(list(name2nbb)).encode("utf-8"))
    if conf_th != -1:
        write_json_atomic(root / nbb_file_name(conf_th, max_bb, min_bb), name2nbb, indent=None)
    return db_path


# ----------------------------------------------------------------------------------------------
# consistency


def check_consistency(txt_db: TxtTokLmdb, img_db: DetectFeatLmdb | Sequence[DetectFeatLmdb]) -> int:
    """Fail unless every kept text id maps (txt2img.json) to images present in ``img_db`` (one or several).

    Returns the number of texts checked.
    """
    img_dbs = [img_db] if isinstance(img_db, DetectFeatLmdb) else list(img_db)
    txt2img = txt_db.txt2img
    where = txt_db.db_dir / "txt2img.json"
    missing: list[tuple[str, str]] = []
    for id_ in txt_db.ids:
        if id_ not in txt2img:
            fail(f"{where}: expected an entry for text id '{id_}' (listed in id2len.json), found none")
        for fname in _img_fnames(txt2img[id_]):
            if not any(fname in db for db in img_dbs):
                missing.append((id_, fname))
    if missing:
        id_, fname = missing[0]
        dirs = ", ".join(str(db.db_path) for db in img_dbs)
        fail(f"{where}: {len(missing)} of {len(txt_db.ids)} texts point at images missing from {dirs} "
             f"(first: text '{id_}' -> '{fname}')")
    return len(txt_db.ids)


__all__ = [
    "DetectFeatLmdb",
    "LazyLmdbEnv",
    "LmdbWriter",
    "TxtLmdb",
    "TxtTokLmdb",
    "check_consistency",
    "compute_num_bb",
    "decode_img_value",
    "decode_txt_value",
    "encode_img_value",
    "encode_txt_value",
    "get_ids_and_lens",
    "img_db_name",
    "nbb_file_name",
    "open_lmdb",
    "pos_features",
    "shared_readonly_env",
    "write_img_db",
    "write_txt_db",
]
