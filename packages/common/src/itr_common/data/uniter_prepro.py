"""Build UNITER ``txt_db`` / ``img_db`` LMDBs from raw annotations and bottom-up features (IAIS, LightningDOT).

UNITER's ``prepro.py`` (NLVR2 only) and ``scripts/convert_imgdir.py``, plus ``--task itm``: the Karpathy-split
JSON (``dataset_flickr30k.json`` / ``dataset_coco.json``) to a txt_db laid out as the released
``itm_{flickr30k,coco}_{split}.db`` (read by :mod:`itr_common.data.uniter_lmdb`).

txt_db (``build_txt_db``): key ``str(sentid)``; record = the Karpathy sentence (tokens, raw, imgid, sentid)
plus ``image_id`` (COCO id, or the Flickr30K file number), ``toked_caption`` (WordPieces), ``input_ids``
(no [CLS]/[SEP]; each whitespace word tokenised alone, as UNITER's ``bert_tokenize``) and ``img_fname``
(``flickr30k_{id:012}.npz``, ``coco_{train2014|val2014}_{id:012}.npz``). ``meta.json`` holds the arguments
plus tokenizer, UNK/CLS/SEP/MASK ids and ``v_range``; then ``id2len.json``, ``txt2img.json``,
``img2txts.json``.

img_db (``convert_imgdir``): one npz per image (``features`` (n, D), ``norm_bb`` (n, 6), ``conf`` (n,),
optional ``soft_labels`` (n, 1601), optional 0-d ``nbb``) to ``{output}/{basename(img_dir)}/{db_name}``:
float32 arrays stored as float16, cut to nbb rows (``min(max_bb, max(min_bb, (conf > conf_th).sum()))``;
``num_bb`` rows when ``conf_th == -1``; all rows with ``keep_all``), plus ``nbb_th*_max*_min*.json``
(``nbb.json`` with ``keep_all``, as IAIS's copy). Unreadable files are skipped with a warning (as the
original); none converted is an error.

Both are resumable: the LMDB is committed in batches, a rerun after a kill keeps what was committed,
skips those keys and writes the rest (no duplicates: LMDB keys are unique and the JSON maps are
rebuilt from the input). A finished db (``img2txts.json`` / the ``__keys__`` entry present) is not
rewritten: remove it to rebuild (the original's rule).
"""

from __future__ import annotations

import glob
import json
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb
import numpy as np

from itr_common.data.uniter_lmdb import (
    INITIAL_MAP_SIZE,
    KEYS_KEY,
    LmdbWriter,
    compute_num_bb,
    encode_img_value,
    encode_txt_value,
    img_db_name,
    nbb_file_name,
    shared_readonly_env,
)
from itr_common.errors import ArgumentParser, fail, require_dir, require_file
from itr_common.fileio import read_json, write_json_atomic
from itr_common.logging import progress

logger = logging.getLogger(__name__)

KARPATHY_SPLITS = ("train", "restval", "val", "test")
TASKS = ("itm", "nlvr", "re")
ARG_KEYS = ("annotations", "missing_imgs", "task", "toker", "split")


# ---------------------------------------------------------------------------------------------- LMDB
class ResumableLmdbWriter(LmdbWriter):
    """:class:`LmdbWriter` that opens an existing LMDB too (to finish an interrupted build)."""

    def __init__(self, path: str | os.PathLike, map_size: int = INITIAL_MAP_SIZE) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        existing = (self.path / "data.mdb").stat().st_size if (self.path / "data.mdb").exists() else 0
        self.env = lmdb.open(str(self.path), map_size=max(map_size, 2 * existing), subdir=True, create=True)
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0

    def keys(self) -> set[bytes]:
        """Keys already committed."""
        with self.env.begin() as txn:
            return set(txn.cursor().iternext(keys=True, values=False))

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin() as txn:
            value = txn.get(key)
            return None if value is None else bytes(value)


# ------------------------------------------------------------------------------------------ tokenizer
def load_toker(toker: str) -> Any:
    """UNITER's ``--toker``: a folder (or file) holding ``vocab.txt``, or a Hugging Face model name
    (``bert-base-cased``). Lower-cases when the name says ``uncased`` (the original's rule)."""
    from itr_common.text import load_bert_tokenizer

    lower = "uncased" in toker
    path = Path(toker)
    if path.exists() or os.sep in toker or toker.startswith("."):
        vocab = path / "vocab.txt" if path.is_dir() else path
        if not vocab.is_file():
            fail(f"--toker {toker}: expected a folder holding vocab.txt (or a BERT name), found no {vocab}")
        return load_bert_tokenizer(path, do_lower_case=lower)
    try:
        from transformers import BertTokenizer

        return BertTokenizer.from_pretrained(toker, do_lower_case=lower)
    except Exception as err:  # no network / unknown name: one line
        fail(f"--toker {toker}: expected a folder holding vocab.txt or a BERT name transformers can load, "
             f"found neither ({type(err).__name__})")


def bert_tokenize(tokenizer: Any, text: str) -> list[str]:
    """UNITER prepro's ``bert_tokenize``: each whitespace word tokenised alone, empty results dropped."""
    pieces: list[str] = []
    for word in text.strip().split():
        pieces.extend(tokenizer.tokenize(word))
    return pieces


def toker_meta(tokenizer: Any, toker: str) -> dict[str, Any]:
    ids = tokenizer.convert_tokens_to_ids
    return {"tokenizer": toker, "bert": toker, "UNK": ids("[UNK]"), "CLS": ids("[CLS]"), "SEP": ids("[SEP]"),
            "MASK": ids("[MASK]"), "v_range": [ids("!"), len(tokenizer.get_vocab())]}


# ------------------------------------------------------------------------------------------- Karpathy
def split_from_output(output: str | os.PathLike) -> str | None:
    """``itm_coco_restval.db`` -> ``restval`` (the last ``_`` part of the db name), if a Karpathy split."""
    name = Path(output).name.split(".")[0]
    last = name.rsplit("_", 1)[-1]
    return last if last in KARPATHY_SPLITS else None


def karpathy_image_name(image: Mapping[str, Any], dataset: str, where: str) -> tuple[str, int]:
    """``(img_fname, image_id)`` of a Karpathy image entry, as UNITER names its features."""
    if dataset == "coco" or "cocoid" in image:
        folder = image.get("filepath") or ("train2014" if "train2014" in str(image.get("filename", "")) else "val2014")
        if "cocoid" not in image:
            fail(f"{where}: expected a 'cocoid' in COCO image entries, found keys {sorted(image)}")
        return f"coco_{folder}_{int(image['cocoid']):012}.npz", int(image["cocoid"])
    stem = Path(str(image.get("filename", ""))).stem
    if not stem.isdigit():
        fail(f"{where}: expected Flickr30K file names like 1000092795.jpg, found {image.get('filename')!r}")
    prefix = "flickr30k" if dataset in ("flickr30k", "") else dataset
    return f"{prefix}_{int(stem):012}.npz", int(stem)


def read_karpathy(path: str | os.PathLike) -> tuple[list[dict[str, Any]], str]:
    """The ``images`` of a Karpathy-split JSON and its ``dataset`` name, checked."""
    data = read_json(path, "Karpathy-split annotations", expect=dict)
    images = data.get("images")
    if not isinstance(images, list) or not images:
        fail(f"{path}: expected a Karpathy JSON with a non-empty 'images' list, found keys {sorted(data)}")
    for index, image in enumerate(images[:1] + images[-1:]):
        missing = [k for k in ("split", "sentences", "filename") if not isinstance(image, dict) or k not in image]
        if missing:
            fail(f"{path}: image entry {index}: expected keys split, sentences, filename; missing {missing}")
    return images, str(data.get("dataset", ""))


def itm_records(images: Sequence[Mapping[str, Any]], dataset: str, splits: Sequence[str], tokenizer: Any,
                missing: set[str], where: str) -> Iterator[dict[str, Any]]:
    """txt_db records of the captions of ``splits``, in file order."""
    for image in images:
        if image.get("split") not in splits:
            continue
        img_fname, image_id = karpathy_image_name(image, dataset, where)
        if img_fname in missing:
            continue
        for sentence in image["sentences"]:
            pieces = bert_tokenize(tokenizer, sentence["raw"])
            record = dict(sentence)
            record.update(image_id=image_id, toked_caption=pieces, input_ids=tokenizer.convert_tokens_to_ids(pieces),
                          img_fname=img_fname)
            record["id"] = str(sentence["sentid"])
            yield record


def nlvr2_records(lines: Iterable[str], tokenizer: Any, missing: set[str], where: str) -> Iterator[dict[str, Any]]:
    """UNITER's ``process_nlvr2``: one record per JSON line, the image pair, the 0/1 target."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            id_ = example["identifier"]
            sentence = example["sentence"]
        except (ValueError, KeyError, TypeError) as err:
            fail(f"{where}: line {number}: expected an NLVR2 JSON line with identifier and sentence ({err})")
        img_id = "-".join(id_.split("-")[:-1])
        img_fname = [f"nlvr2_{img_id}-img0.npz", f"nlvr2_{img_id}-img1.npz"]
        if img_fname[0] in missing or img_fname[1] in missing:
            continue
        example["input_ids"] = tokenizer.convert_tokens_to_ids(bert_tokenize(tokenizer, sentence))
        example["img_fname"] = img_fname
        example["target"] = (1 if example["label"] == "True" else 0) if "label" in example else None
        example["id"] = id_
        yield example


def build_txt_db(output: str | os.PathLike, records: Iterable[Mapping[str, Any]], meta: Mapping[str, Any],
                 total: int | None = None, desc: str = "txt_db") -> dict[str, int]:
    """Write (or finish) a txt_db: the LMDB, then id2len.json, txt2img.json and img2txts.json last.

    Returns ``{'written': n, 'kept': n already in the LMDB, 'texts': n}``.
    """
    out = Path(output)
    if (out / "img2txts.json").exists():
        fail(f"{out}: found an existing (finished) txt_db; remove it to re-process")
    previous = out / "meta.json"
    if previous.exists():
        old = read_json(previous, "txt_db meta", expect=dict)
        changed = [k for k in ARG_KEYS if k in meta and k in old and _jsonish(old[k]) != _jsonish(meta[k])]
        if changed:
            fail(f"{out}: an interrupted build with other arguments is there ({changed[0]}: {old[changed[0]]!r}, "
                 f"now {meta[changed[0]]!r}); remove it or rerun with the same arguments")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "meta.json", dict(meta), indent=4)
    id2len: dict[str, int] = {}
    txt2img: dict[str, Any] = {}
    img2txts: dict[str, list[str]] = defaultdict(list)
    written = kept = 0
    with ResumableLmdbWriter(out) as writer:
        done = writer.keys()
        if done:
            logger.info("%s: resuming, %d texts already written", out, len(done))
        for record in progress(records, desc=desc, total=total, unit="text"):
            key = str(record["id"])
            if key in id2len:
                fail(f"{out}: duplicate text id '{key}' in the annotations")
            value = {k: v for k, v in record.items() if k != "id"}
            if key.encode() in done:
                kept += 1
            else:
                writer.put(key.encode("utf-8"), encode_txt_value(value))
                written += 1
            id2len[key] = len(value["input_ids"])
            txt2img[key] = value["img_fname"]
            for fname in [value["img_fname"]] if isinstance(value["img_fname"], str) else value["img_fname"]:
                img2txts[fname].append(key)
    if not id2len:
        fail(f"{out}: no text to write (check --task, --split and --missing_imgs)")
    write_json_atomic(out / "id2len.json", id2len, indent=None)
    write_json_atomic(out / "txt2img.json", txt2img, indent=None)
    write_json_atomic(out / "img2txts.json", dict(img2txts), indent=None)
    return {"written": written, "kept": kept, "texts": len(id2len)}


def _jsonish(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------------- img_db
class ImgdirOptions:
    """convert_imgdir.py's settings (validated)."""

    def __init__(self, conf_th: float = 0.2, max_bb: int = 100, min_bb: int = 10, num_bb: int = 100,
                 keep_all: bool = False, compress: bool = False) -> None:
        if not (conf_th == -1 or 0.0 <= conf_th <= 1.0):
            fail(f"--conf_th: expected a confidence in [0, 1] or -1 (fixed number of boxes), found {conf_th}")
        for name, value in (("--max_bb", max_bb), ("--min_bb", min_bb), ("--num_bb", num_bb)):
            if value < (0 if name == "--min_bb" else 1):
                fail(f"{name}: expected a positive integer, found {value}")
        if min_bb > max_bb:
            fail(f"--min_bb: expected at most --max_bb ({max_bb}), found {min_bb}")
        self.conf_th, self.max_bb, self.min_bb, self.num_bb = conf_th, max_bb, min_bb, num_bb
        self.keep_all, self.compress = keep_all, compress

    @property
    def db_name(self) -> str:
        if self.keep_all:
            return "all_compressed" if self.compress else "all"
        return img_db_name(self.conf_th, self.max_bb, self.min_bb, self.num_bb, self.compress)

    @property
    def nbb_json(self) -> str | None:
        if self.keep_all:
            return "nbb.json"
        return None if self.conf_th == -1 else nbb_file_name(self.conf_th, self.max_bb, self.min_bb)

    def nbb(self, arrays: Mapping[str, np.ndarray], n: int, fname: str) -> int:
        """Boxes kept for one image (raises ValueError when the file cannot give them)."""
        if self.keep_all:
            return int(arrays["nbb"]) if "nbb" in arrays else n
        if self.conf_th == -1:
            if n < self.num_bb:
                raise ValueError(f"{n} boxes, fewer than --num_bb {self.num_bb}")
            return self.num_bb
        if "conf" not in arrays:
            raise ValueError("no 'conf' array to apply --conf_th to")
        return compute_num_bb(arrays["conf"], self.conf_th, self.min_bb, self.max_bb)


def load_npz(path: str, opts: ImgdirOptions, nbb_only: bool = False) -> tuple[str, dict[str, np.ndarray] | None,
                                                                             int, str | None]:
    """``(name, arrays cut to nbb and float16, nbb, error)`` of one bottom-up npz; ``arrays`` None on error.

    ``nbb_only``: read just what nbb needs (resuming past a file already written).
    """
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if nbb_only:
                if opts.conf_th == -1 and not opts.keep_all:
                    return name, None, opts.num_bb, None
                wanted = ["conf"]
                if opts.keep_all:
                    wanted = ["nbb"] if "nbb" in npz.files else ["features"]
                arrays = {k: npz[k] for k in wanted if k in npz.files}
                n = arrays["features"].shape[0] if "features" in arrays else 0
                return name, None, opts.nbb(arrays, n, name), None
            arrays = {k: npz[k] for k in npz.files}
        feats, bb = arrays.get("features"), arrays.get("norm_bb")
        if feats is None or bb is None or feats.ndim != 2 or bb.shape != (feats.shape[0], 6):
            shapes = {k: tuple(v.shape) for k, v in arrays.items()}
            raise ValueError(f"expected features (n, D) and norm_bb (n, 6), found {shapes}")
        n = feats.shape[0]
        nbb = opts.nbb(arrays, n, name)
        out = {}
        for key, arr in arrays.items():
            if arr.ndim == 0:  # e.g. the extractor's 'nbb' scalar (IAIS's convert_imgdir drops them too)
                continue
            if arr.ndim > 2 or arr.shape[0] != n:
                raise ValueError(f"'{key}': expected {n} rows of at most 2 dims, found shape {arr.shape}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError(f"'{key}': NaN or inf values")
            arr = arr.astype(np.float16) if arr.dtype == np.float32 else arr
            out[key] = np.ascontiguousarray(arr[:nbb])
        return name, out, nbb, None
    except Exception as err:  # a corrupt file is skipped, as the original
        return name, None, 0, f"{type(err).__name__}: {err}"


def _load(job: tuple[str, ImgdirOptions, bool]) -> tuple[str, dict[str, np.ndarray] | None, int, str | None]:
    return load_npz(*job)


def _pool_map(jobs: list[tuple[str, ImgdirOptions, bool]], nproc: int) -> Iterator[tuple]:
    if nproc <= 1 or len(jobs) <= 1:
        yield from map(_load, jobs)
        return
    # spawn, not fork: a fork of a process that already runs threads (torch's pools, tqdm's monitor) can
    # inherit a held lock and hang forever in the child (seen in the test suite)
    with multiprocessing.get_context("spawn").Pool(nproc) as pool:
        yield from pool.imap(_load, jobs, chunksize=max(1, min(128, len(jobs) // (4 * nproc))))


def _finished_img_db(db_path: Path) -> bool:
    """Whether the LMDB at ``db_path`` holds its ``__keys__`` entry (written last)."""
    if not (db_path / "data.mdb").exists():
        return False
    try:
        env = lmdb.open(str(db_path), readonly=True, lock=False, subdir=True)
    except lmdb.Error:  # already open in this process (a reader has it): ask that environment
        env = shared_readonly_env(db_path)
        with env.begin() as txn:
            return txn.get(KEYS_KEY) is not None
    try:
        with env.begin() as txn:
            return txn.get(KEYS_KEY) is not None
    finally:
        env.close()


def convert_imgdir(img_dir: str | os.PathLike, output: str | os.PathLike, opts: ImgdirOptions,
                   nproc: int = 8) -> dict[str, Any]:
    """Convert ``img_dir/*.npz`` to ``output/{basename(img_dir)}/{db_name}`` (+ nbb json); resumable.

    Returns ``{'db': path, 'images': n converted in total, 'written': n this run, 'skipped': [(name, error)]}``.
    """
    source = require_dir(str(img_dir).rstrip("/") or "/", "--img_dir")
    if nproc < 1:
        fail(f"--nproc: expected a positive integer, found {nproc}")
    files = sorted(glob.glob(os.path.join(glob.escape(str(source)), "*.npz")))
    if not files:
        fail(f"--img_dir {source}: expected bottom-up feature files *.npz, found none")
    if not str(output):
        fail("--output: expected a folder for the img_db, found nothing")
    root = Path(output) / source.name
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"--output {output}: cannot create {root} ({err.strerror})")
    if not os.access(root, os.W_OK):
        fail(f"--output {output}: {root} is not writable")
    db_path = root / opts.db_name
    name2nbb: dict[str, int] = {}
    skipped: list[tuple[str, str]] = []
    written = 0
    if _finished_img_db(db_path):
        fail(f"{db_path}: found an existing (finished) img_db; remove it to re-convert")
    with ResumableLmdbWriter(db_path) as writer:
        done = writer.keys()
        if done:
            logger.info("%s: resuming, %d images already written", db_path, len(done))
        jobs = [(f, opts, os.path.basename(f).encode("utf-8") in done) for f in files]
        bar = progress(_pool_map(jobs, nproc), desc=f"converting {source.name}", total=len(jobs), unit="img")
        for name, arrays, nbb, error in bar:
            if error is not None:
                logger.warning("corrupted file %s (%s): skipped", name, error)
                skipped.append((name, error))
                continue
            if arrays is not None:
                writer.put(name.encode("utf-8"), encode_img_value(arrays, opts.compress))
                written += 1
            name2nbb[name] = nbb
        if not name2nbb:
            first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
            fail(f"--img_dir {source}: expected readable bottom-up npz files, found none of {len(files)}{first}")
        writer.flush()
        if opts.nbb_json is not None:
            write_json_atomic(root / opts.nbb_json, name2nbb, indent=None)
        writer.put(KEYS_KEY, json.dumps(list(name2nbb)).encode("utf-8"))  # last: marks the db finished
    return {"db": db_path, "images": len(name2nbb), "written": written, "skipped": skipped}


# ------------------------------------------------------------------------------------------ commands
def build_prepro_parser(prog: str = "prepro.py") -> ArgumentParser:
    """UNITER ``prepro.py``'s flags, ``--task itm`` added (and ``--split`` to pick Karpathy splits)."""
    parser = ArgumentParser(prog=prog, description="Preprocess annotations into a UNITER txt_db (LMDB).")
    add = parser.add_argument
    add("--annotations", required=True, nargs="+", help="annotation file: Karpathy JSON (itm), NLVR2 jsonl (nlvr)")
    add("--missing_imgs", help="JSON list of image file names to leave out (corrupted features)")
    add("--output", required=True, help="output dir of DB, e.g. txt_db/itm_flickr30k_train.db")
    add("--task", required=True, default="nlvr", choices=TASKS, help="itm (Karpathy split), nlvr (NLVR2)")
    add("--toker", default="bert-base-cased", help="BERT tokenizer: a name, or a folder holding vocab.txt")
    add("--split", default=None,
        help="itm: Karpathy split(s), comma-separated (train, restval, val, test); default: from --output's "
             "name (itm_coco_restval.db -> restval)")
    return parser


def run_prepro(argv: Sequence[str] | None = None, prog: str = "prepro.py") -> dict[str, Any]:
    """``prepro.py``: checks everything, then builds (or finishes) the txt_db. Returns :func:`build_txt_db`'s
    counts plus ``output``."""
    opts = build_prepro_parser(prog).parse_args(argv)
    if opts.task == "re":
        fail("--task re: referring-expression dbs are not built here (IAIS and LightningDOT need itm); "
             "use UNITER's prepro.py for them")
    if len(opts.annotations) != 1:
        fail(f"--annotations: expected one file for --task {opts.task}, found {len(opts.annotations)}")
    annotation = require_file(opts.annotations[0], "--annotations file")
    missing: set[str] = set()
    if opts.missing_imgs is not None:
        names = read_json(opts.missing_imgs, "--missing_imgs list", expect=list)
        if not all(isinstance(n, str) for n in names):
            fail(f"{opts.missing_imgs}: expected a JSON list of image file names, found other values")
        missing = set(names)
    output = Path(opts.output)
    if (output / "img2txts.json").exists():
        fail(f"{output}: found an existing (finished) txt_db; remove it to re-process")
    parent = output.parent if str(output.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        fail(f"--output {output}: {parent} is not writable")
    splits: list[str] = []
    if opts.task == "itm":
        spec = opts.split or split_from_output(output)
        if spec is None:
            fail(f"--split: expected a Karpathy split ({', '.join(KARPATHY_SPLITS)}) for --task itm, found none "
                 f"(and none in --output's name {output.name})")
        splits = [s.strip() for s in spec.split(",") if s.strip()]
        bad = [s for s in splits if s not in KARPATHY_SPLITS]
        if bad or not splits:
            fail(f"--split: expected Karpathy splits among {', '.join(KARPATHY_SPLITS)}, found {spec!r}")
        images, dataset = read_karpathy(annotation)
        chosen = [im for im in images if im.get("split") in splits]
        if not chosen:
            present = sorted({str(im.get("split")) for im in images})
            fail(f"{annotation}: expected images of split {', '.join(splits)}, found only {', '.join(present)}")
    tokenizer = load_toker(opts.toker)
    meta = {"annotations": opts.annotations, "missing_imgs": opts.missing_imgs, "output": opts.output,
            "task": opts.task, "toker": opts.toker, "split": ",".join(splits) or None,
            **toker_meta(tokenizer, opts.toker)}
    if opts.task == "itm":
        total = sum(len(im["sentences"]) for im in chosen if karpathy_image_name(im, dataset, str(annotation))[0]
                    not in missing)
        records = itm_records(chosen, dataset, splits, tokenizer, missing, str(annotation))
        counts = build_txt_db(output, records, meta, total, desc=f"processing {output.name}")
    else:
        with open(annotation, encoding="utf-8") as lines:
            counts = build_txt_db(output, nlvr2_records(lines, tokenizer, missing, str(annotation)), meta,
                                  desc="processing NLVR2")
    kept = f" ({counts['kept']} kept from an interrupted run)" if counts["kept"] else ""
    print(f"{output}: {counts['texts']} texts{kept}")
    return {**counts, "output": output}


def build_imgdir_parser(prog: str = "convert_imgdir.py") -> ArgumentParser:
    """UNITER/IAIS ``scripts/convert_imgdir.py``'s flags and defaults."""
    parser = ArgumentParser(prog=prog, description="Convert a folder of bottom-up npz features to a UNITER img_db.")
    add = parser.add_argument
    add("--img_dir", default=None, type=str, help="The input images (one npz per image).")
    add("--output", default=None, type=str, help="output lmdb root: writes {output}/{basename(img_dir)}/")
    add("--nproc", type=int, default=8, help="number of cores used")
    add("--compress", action="store_true", help="compress the tensors")
    add("--keep_all", action="store_true", help="keep all features, overrides all following args")
    add("--conf_th", type=float, default=0.2, help="threshold for dynamic bounding boxes (-1 for fixed)")
    add("--max_bb", type=int, default=100, help="max number of bounding boxes")
    add("--min_bb", type=int, default=10, help="min number of bounding boxes")
    add("--num_bb", type=int, default=100, help="number of bounding boxes (fixed)")
    return parser


def run_convert_imgdir(argv: Sequence[str] | None = None, prog: str = "convert_imgdir.py") -> dict[str, Any]:
    """``convert_imgdir.py``: checks the flags, then converts (or finishes converting) the folder."""
    opts = build_imgdir_parser(prog).parse_args(argv)
    if not opts.img_dir:
        fail("--img_dir: expected the folder of npz features, found nothing")
    if not opts.output:
        fail("--output: expected the img_db root folder, found nothing")
    settings = ImgdirOptions(opts.conf_th, opts.max_bb, opts.min_bb, opts.num_bb, opts.keep_all, opts.compress)
    done = convert_imgdir(opts.img_dir, opts.output, settings, opts.nproc)
    skipped = f", {len(done['skipped'])} corrupted files skipped" if done["skipped"] else ""
    print(f"{done['db']}: {done['images']} images ({done['written']} written now{skipped})")
    return done


__all__ = [
    "ImgdirOptions",
    "KARPATHY_SPLITS",
    "ResumableLmdbWriter",
    "TASKS",
    "bert_tokenize",
    "build_imgdir_parser",
    "build_prepro_parser",
    "build_txt_db",
    "convert_imgdir",
    "itm_records",
    "karpathy_image_name",
    "load_npz",
    "load_toker",
    "nlvr2_records",
    "read_karpathy",
    "run_convert_imgdir",
    "run_prepro",
    "split_from_output",
    "toker_meta",
]
