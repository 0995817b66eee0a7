"""``bash scripts/download_itm.sh $PATH_TO_STORAGE``: what to download for each step, and a check of the tree.

The original script fetched UNITER's preprocessed LMDBs and checkpoints with ``wget`` + ``tar`` (and failed
as soon as a download failed). This one downloads nothing: it creates the four folders as the original
(``img_db txt_db pretrained finetune``), prints per step (image dbs, text dbs, pretrained models) the
commands that fetch each missing item, and checks what is already there:

- img_db: ``feat_th0.2_max100_min10[_compressed]/`` LMDB and ``nbb_th0.2_max100_min10.json`` (read with
  :class:`~itr_common.data.uniter_lmdb.DetectFeatLmdb`);
- txt_db: the LMDB, ``meta.json``, ``id2len.json``, ``txt2img.json``, ``img2txts.json`` (read with
  :class:`~itr_common.data.uniter_lmdb.TxtTokLmdb`, first record decoded), and that every text's image is in
  the img_db the configs pair it with;
- pretrained: a non-empty PyTorch file (zip or pickle header);
- sizes/checksums: no size or checksum was published for these files; ``--checksums SHA256SUMS`` (the
  ``sha256sum`` format, paths relative to the storage folder) verifies the files it lists.

Exit status 0 when everything is there, 1 when something is missing or broken (the list says what and how to
get it), 2 for bad arguments. Console script ``iais-download-itm``; the shell script calls this module.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from itr_common.errors import ArgumentParser, UserError, cli_entry, fail

BLOB = "https://convaisharables.blob.core.windows.net/uniter"  # IAIS's copy (UNITER's older: acvrpublicycchen)
IMG_DBS = {"coco_train2014": "coco", "coco_val2014": "coco", "flickr30k": "flickr"}
TXT_DBS = {
    **{f"itm_coco_{s}.db": "coco_train2014" if s == "train" else "coco_val2014" for s in ("train", "restval", "val",
                                                                                           "test")},
    **{f"itm_flickr30k_{s}.db": "flickr30k" for s in ("train", "val", "test")},
}
MODELS = ("uniter-base.pt", "uniter-large.pt")
FOLDERS = ("img_db", "txt_db", "pretrained", "finetune")
CONF = {"conf_th": 0.2, "max_bb": 100, "min_bb": 10}


@dataclass
class Item:
    step: str
    path: str  # relative to the storage folder
    fetch: list[str]
    ok: bool = False
    note: str = ""


def _tar_fetch(store: Path, folder: str, name: str) -> list[str]:
    return [f"wget {BLOB}/{folder}/{name}.tar -P {store / folder}/",
            f"tar -xvf {store / folder / name}.tar -C {store / folder}"]


def check_img_db(directory: Path) -> str:
    """A one-line description of a good img_db; raises UserError naming what is wrong."""
    from itr_common.data.uniter_lmdb import DetectFeatLmdb, img_db_name

    compressed = (directory / img_db_name(compressed=True, num_bb=36, **CONF)).is_dir()
    db = DetectFeatLmdb(directory, num_bb=36, compressed=compressed, **CONF)
    try:
        if not (db.db_path / "data.mdb").is_file() or (db.db_path / "data.mdb").stat().st_size == 0:
            fail(f"{db.db_path}: expected an LMDB (data.mdb), found none or an empty one")
        if not len(db):
            fail(f"{directory}: expected images in the nbb map, found none")
        first = db.names[0]
        db[first]  # decodes one image: the LMDB and the nbb map agree
        return f"{len(db)} images ({db.db_name})"
    finally:
        db.close()


def check_txt_db(directory: Path, img_db: Path | None) -> str:
    """A one-line description of a good txt_db (and its images in ``img_db``); raises UserError otherwise."""
    from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb, check_consistency

    for name in ("data.mdb", "img2txts.json"):
        if not (directory / name).is_file():
            fail(f"{directory / name}: not found")
    db = TxtTokLmdb(directory, max_txt_len=-1)
    if not len(db):
        fail(f"{directory / 'id2len.json'}: expected text ids, found none")
    record = db[db.ids[0]]
    if "input_ids" not in record or "img_fname" not in record:
        fail(f"{directory}: record '{db.ids[0]}' lacks input_ids/img_fname (found {sorted(record)})")
    note = f"{len(db)} texts"
    if img_db is not None and img_db.is_dir():
        try:
            images = DetectFeatLmdb(img_db, num_bb=36, **CONF,
                                    compressed=(img_db / "feat_th0.2_max100_min10_compressed").is_dir())
        except UserError:
            return note + f" (images not checked: {img_db.name} incomplete)"
        check_consistency(db, images)
        note += f", every image in img_db/{img_db.name}"
    return note


def check_model(path: Path) -> str:
    if not path.is_file():
        fail(f"{path}: not found")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4)
    if size == 0 or not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip, or a pickle stream
        fail(f"{path}: expected a PyTorch checkpoint, found {size} bytes that are not one (interrupted download?)")
    return f"{size / 2**20:.0f} MiB"


def read_checksums(path: str) -> dict[str, str]:
    """``sha256sum`` lines ``<64 hex>  <path>`` -> {path: hash}."""
    source = Path(path)
    if not source.is_file():
        fail(f"--checksums {path}: not found")
    sums = {}
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64})\s+\*?(.+)", line.strip())
        if match is None:
            fail(f"--checksums {path}: line {number}: expected '<sha256>  <path>', found {line.strip()!r}")
        sums[match.group(2)] = match.group(1).lower()
    return sums


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan(store: Path, datasets: Sequence[str]) -> list[Item]:
    items = []
    for name, dataset in IMG_DBS.items():
        if dataset in datasets:
            items.append(Item("image dbs", f"img_db/{name}", _tar_fetch(store, "img_db", name)))
    for name, img_db in TXT_DBS.items():
        if IMG_DBS[img_db] in datasets:
            items.append(Item("text dbs", f"txt_db/{name}", _tar_fetch(store, "txt_db", name)))
    for model in MODELS:
        items.append(Item("pretrained", f"pretrained/{model}",
                          [f"wget {BLOB}/pretrained/{model} -P {store / 'pretrained'}/"]))
    return items


def check(store: Path, items: list[Item]) -> None:
    for item in items:
        path = store / item.path
        try:
            if item.path.startswith("img_db/"):
                item.note = check_img_db(path) if path.is_dir() else "not downloaded"
            elif item.path.startswith("txt_db/"):
                item.note = check_txt_db(path, store / "img_db" / TXT_DBS[path.name]) if path.is_dir() \
                    else "not downloaded"
            else:
                item.note = check_model(path) if path.exists() else "not downloaded"
            item.ok = item.note != "not downloaded"
        except UserError as err:
            item.note = f"incomplete: {err}"


def build_parser(prog: str = "download_itm.sh") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Print what to download for IAIS/UNITER ITM and check the tree.")
    parser.add_argument("storage", nargs="?", help="$PATH_TO_STORAGE: img_db/ txt_db/ pretrained/ finetune/ go here")
    parser.add_argument("--datasets", default="flickr,coco", help="flickr, coco or both (default flickr,coco)")
    parser.add_argument("--checksums", default=None, help="sha256sum file (paths relative to the storage folder)")
    return parser


def run(argv: Sequence[str] | None = None, prog: str = "download_itm.sh") -> int:
    args = build_parser(prog).parse_args(argv)
    if not args.storage:
        fail("$PATH_TO_STORAGE: expected a folder argument (bash scripts/download_itm.sh $PATH_TO_STORAGE), found none")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets or any(d not in ("flickr", "coco") for d in datasets):
        fail(f"--datasets: expected flickr, coco or flickr,coco, found {args.datasets!r}")
    sums = read_checksums(args.checksums) if args.checksums else {}
    store = Path(args.storage)
    if store.exists() and not store.is_dir():
        fail(f"{store}: expected a storage folder, found a file")
    try:
        for folder in FOLDERS:
            (store / folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        fail(f"{store}: cannot create the storage folders ({err.strerror})")
    store = store.resolve()
    items = plan(store, datasets)
    check(store, items)
    step = None
    steps = list(dict.fromkeys(i.step for i in items))
    for item in items:
        if item.step != step:
            step = item.step
            print(f"step {steps.index(step) + 1}/{len(steps)}: {step}")
        print(f"  [{'ok' if item.ok else 'missing'}] {item.path}: {item.note}")
        if not item.ok:
            for command in item.fetch:
                print(f"      {command}")
    bad_sums = []
    for rel, expected in sums.items():
        path = store / rel
        actual = sha256(path) if path.is_file() else None
        status = "ok" if actual == expected else ("missing" if actual is None else "checksum mismatch")
        print(f"  [{status}] sha256 {rel}")
        if status != "ok":
            bad_sums.append(rel)
    missing = [i.path for i in items if not i.ok]
    if missing or bad_sums:
        print(f"{len(missing) + len(bad_sums)} item(s) to fetch or repair under {store}; then run this again")
        return 1
    print(f"{store}: complete ({len(items)} items); output goes to {store / 'finetune'} (/storage)")
    return 0


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """``iais-download-itm`` / ``bash scripts/download_itm.sh``: exit 0 complete, 1 incomplete, 2 bad input."""
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
