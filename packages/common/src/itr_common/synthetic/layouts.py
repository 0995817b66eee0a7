"""Write one synthetic :class:`~itr_common.synthetic.world.World` in each original data layout.

The same images and captions go into every layout, read back by the very readers a user points at
the real COCO / Flickr30K files. World split -> layout split names:

==========  ======================  ======================  =============================  ==============
world       f30k_precomp            coco_precomp            UNITER txt_db (flickr / coco)  VinVL coco_ir
==========  ======================  ======================  =============================  ==============
train       train                   train                   train / train + restval        train
dev         dev                     dev                     val / val                      minival
test        test                    testall (+ test = 1K)   test / test                    test (5K, 1K)
==========  ======================  ======================  =============================  ==============

The tree (``write_world(world, out)``)::

    README.txt, world.json                       description and config stamp
    data/f30k_precomp/, data/coco_precomp/       SCAN precomp (+ CAMERA boxes / sizes)
    vocab/{f30k,coco}_precomp_vocab.{pkl,json}   VSRN pickle, SCAN json
    bert/                                        vocab.txt, bert_config.json, config.json, pytorch_model.bin
    txt_db/itm_{flickr30k,coco}_*.db/            UNITER text LMDBs (IAIS README names)
    img_db/{flickr30k,coco_train2014,coco_val2014}/  UNITER image LMDBs
    pretrained/uniter-tiny.{pt,json}             UNITER pretraining checkpoint + model config
    pretrained/checkpoint-0132780/               VinVL/OSCAR coco_ir checkpoint (ALADIN's --eval_model_dir)
    coco_ir/                                     VinVL captions and image keys (ALADIN's --data_dir)
    features/                                    VinVL features.tsv, predictions.tsv (ALADIN's <features-folder>)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from itr_common.errors import UserError, did_you_mean, fail
from itr_common.fileio import read_json, write_json_atomic, write_text_atomic
from itr_common.synthetic import checkpoints as ckpt
from itr_common.synthetic.world import PUNCTUATION, World, WorldConfig, WorldSplit, with_shuffled_training_pairs

FORMAT_VERSION = 1
LAYOUTS = ("precomp", "uniter", "vinvl")
STAMP_FILE = "world.json"
README_FILE = "README.txt"

# UNITER img_db parameters of the IAIS / LightningDOT configs
CONF_TH, MAX_BB, MIN_BB, NUM_BB = 0.2, 100, 10, 36
UNITER_TOKER = "synthetic-bert-cased"  # meta.json 'bert'/'toker': our bert/vocab.txt, read cased as bert-base-cased
TOP_LEVEL = ("data", "vocab", "bert", "txt_db", "img_db", "pretrained", "coco_ir", "features",
             README_FILE, STAMP_FILE)


# ----------------------------------------------------------------------------------------------
# shared helpers


def bert_tokens_for(world: World) -> list[str]:
    """The WordPiece vocabulary of the world (see :func:`checkpoints.bert_vocab_tokens`)."""
    return ckpt.bert_vocab_tokens(world.words)


def _all_captions(world: World) -> list[str]:
    return [c for split in world.splits.values() for c in split.captions]


@dataclass
class Written:
    """What a writer produced: paths relative to the tree root, with a one-line description each."""

    items: dict[str, str] = field(default_factory=dict)

    def add(self, root: Path, path: Path, what: str) -> None:
        self.items[str(path.relative_to(root))] = what

    def update(self, other: Written) -> None:
        self.items.update(other.items)


# ----------------------------------------------------------------------------------------------
# SCAN precomp + vocabularies + BERT dir

PRECOMP_SPLITS = {
    "f30k_precomp": {"train": "train", "dev": "dev", "test": "test"},
    "coco_precomp": {"train": "train", "dev": "dev", "test": "testall"},
}


def write_precomp(world: World, out: str | os.PathLike) -> Written:
    """``data/{f30k,coco}_precomp/{split}_{ims.npy,caps.txt,ids.txt,boxes.npy,img_sizes.npy}``.

    COCO's ``testall`` is the world's test split (5 folds of n_test/5 images: the 1K-fold5 protocol
    at any scale); ``test`` is its first fold (the "1K" file). ``ids.txt`` holds one image id a line.
    """
    from itr_common.data.precomp import write_precomp_split

    root = Path(out)
    written = Written()
    n_test = world.config.n_test
    for data_name, names in PRECOMP_SPLITS.items():
        for split_name, file_split in names.items():
            split = world.split(split_name)
            directory = write_precomp_split(
                root / "data", data_name, file_split, split.images, split.captions, ids=split.image_ids.tolist(),
                boxes=split.precomp_boxes, img_sizes=split.img_sizes,
            )
            written.add(root, directory / f"{file_split}_ims.npy",
                        f"{split.n_images} images x {split.n_regions} regions x {world.config.feat_dim}")
        if data_name == "coco_precomp" and n_test % 5 == 0:
            test = world.split("test")
            fold = n_test // 5
            k = test.captions_per_image
            directory = write_precomp_split(
                root / "data", data_name, "test", test.images[:fold], test.captions[: k * fold],
                ids=test.image_ids[:fold].tolist(), boxes=test.precomp_boxes[:fold], img_sizes=test.img_sizes[:fold],
            )
            written.add(root, directory / "test_ims.npy", f"first fold of testall: {fold} images")
    return written


def write_vocabularies(world: World, out: str | os.PathLike) -> Written:
    """``vocab/{f30k,coco}_precomp_vocab.pkl`` (VSRN pickle) and ``.json`` (SCAN), from every caption
    of the world (threshold 1, so no world word is ``<unk>``)."""
    from itr_common.text import build_vocab, save_vocab_json, save_vocab_pickle

    root = Path(out)
    vocab = build_vocab(_all_captions(world), threshold=1)
    written = Written()
    for data_name in PRECOMP_SPLITS:
        pkl = save_vocab_pickle(vocab, root / "vocab" / f"{data_name}_vocab.pkl")
        save_vocab_json(vocab, root / "vocab" / f"{data_name}_vocab.json")
        written.add(root, pkl, f"{len(vocab)} words (+ .json)")
    return written


def write_bert(world: World, out: str | os.PathLike, seed: int | None = None) -> Written:
    """``bert/``: the world's WordPiece vocab.txt and a tiny random BERT (hidden 64, 2 layers, 4 heads)."""
    root = Path(out)
    tokens = bert_tokens_for(world)
    directory = ckpt.write_bert_dir(root / "bert", tokens, seed=world.config.seed if seed is None else seed)
    written = Written()
    written.add(root, directory, f"tiny random BERT, {len(tokens)} wordpieces")
    return written


# ----------------------------------------------------------------------------------------------
# UNITER txt_db / img_db / checkpoint


@dataclass(frozen=True)
class TxtDbSpec:
    """One UNITER text db: its directory name, the world split and image slice it covers, and the img_db."""

    db_name: str
    split: str
    images: slice
    img_db: str


def _restval_start(n_train: int) -> int:
    """COCO's train split is cut into train2014 (first 5/6) and restval (rest, from val2014)."""
    return n_train - n_train // 6 if n_train >= 6 else n_train


def uniter_specs(world: World) -> list[TxtDbSpec]:
    """The txt_dbs of the IAIS README tree and the img_db each one's images live in."""
    n_train = world.config.n_train
    cut = _restval_start(n_train)
    specs = [
        TxtDbSpec("itm_flickr30k_train.db", "train", slice(None), "flickr30k"),
        TxtDbSpec("itm_flickr30k_val.db", "dev", slice(None), "flickr30k"),
        TxtDbSpec("itm_flickr30k_test.db", "test", slice(None), "flickr30k"),
        TxtDbSpec("itm_coco_train.db", "train", slice(0, cut), "coco_train2014"),
    ]
    if cut < n_train:
        specs.append(TxtDbSpec("itm_coco_restval.db", "train", slice(cut, n_train), "coco_val2014"))
    specs += [
        TxtDbSpec("itm_coco_val.db", "dev", slice(None), "coco_val2014"),
        TxtDbSpec("itm_coco_test.db", "test", slice(None), "coco_val2014"),
    ]
    return specs


def img_fname(img_db: str, image_id: int) -> str:
    """UNITER image file name: ``flickr30k_{id:012}.npz`` or ``coco_{train2014|val2014}_{id:012}.npz``."""
    return f"{img_db}_{int(image_id):012}.npz"


def _image_rows(split: WorldSplit, images: slice) -> range:
    return range(*images.indices(split.n_images))


def _bert_tokenize(tokenizer: Any, text: str, cache: dict[str, list[str]]) -> list[str]:
    """UNITER prepro's ``bert_tokenize``: each whitespace word tokenised alone, empty results dropped."""
    pieces: list[str] = []
    for word in text.strip().split():
        if word not in cache:
            cache[word] = tokenizer.tokenize(word)
        pieces.extend(cache[word])
    return pieces


def _txt_records(world: World, spec: TxtDbSpec, tokenizer: Any, cache: dict[str, list[str]]) -> Iterator[dict]:
    split = world.split(spec.split)
    k = split.captions_per_image
    offset = {"train": 0, "dev": world.config.n_train, "test": world.config.n_train + world.config.n_dev}[spec.split]
    for i in _image_rows(split, spec.images):
        fname = img_fname(spec.img_db, split.image_ids[i])
        for j in range(k * i, k * (i + 1)):
            raw = split.captions[j]
            pieces = _bert_tokenize(tokenizer, raw, cache)
            yield {
                "tokens": [w for w in raw.split() if w not in PUNCTUATION],  # Karpathy tokens: no punctuation
                "raw": raw,
                "imgid": offset + i,  # Karpathy image index over the whole dataset
                "sentid": int(split.sent_ids[j]),
                "image_id": int(split.image_ids[i]),
                "toked_caption": pieces,
                "input_ids": tokenizer.convert_tokens_to_ids(pieces),
                "img_fname": fname,
            }


def uniter_meta(db_name: str, tokenizer: Any) -> dict[str, Any]:
    """meta.json as UNITER's prepro writes it: its arguments, then tokenizer/bert names, special ids, v_range."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "annotation": [f"synthetic-world/{db_name.removesuffix('.db')}.json"],
        "missing_imgs": None,
        "output": f"/txt/{db_name}",
        "toker": UNITER_TOKER,
        "tokenizer": UNITER_TOKER,
        "bert": UNITER_TOKER,
        "UNK": ids("[UNK]"),
        "CLS": ids("[CLS]"),
        "SEP": ids("[SEP]"),
        "MASK": ids("[MASK]"),
        "v_range": [ids("!"), len(tokenizer.get_vocab())],
    }


def img_db_contents(world: World, specs: Sequence[TxtDbSpec]) -> dict[str, list[tuple[str, int]]]:
    """img_db name -> the ``(world split, image index)`` pairs it holds, each once, in txt_db order."""
    contents: dict[str, dict[tuple[str, int], None]] = {}
    for spec in specs:
        keys = contents.setdefault(spec.img_db, {})
        for i in _image_rows(world.split(spec.split), spec.images):
            keys[(spec.split, i)] = None
    return {name: list(keys) for name, keys in contents.items()}


def _img_items(world: World, keys: Sequence[tuple[str, int]], img_db: str) -> Iterator[tuple[str, dict]]:
    """``(img_fname, arrays)`` for :func:`write_img_db`: all ``max_regions`` rows (the writer cuts to nbb);
    ``soft_labels`` only when ``world.config.img_db_soft_labels`` (off at demo/base size: 1601 floats a region)."""
    norm_bb = {name: world.split(name).norm_bb() for name in {name for name, _ in keys}}
    n_classes = world.config.n_label_classes
    for name, i in keys:
        split = world.split(name)
        arrays = {"features": split.features[i], "norm_bb": norm_bb[name][i], "conf": split.conf[i]}
        if world.config.img_db_soft_labels:
            arrays["soft_labels"] = split.soft_labels(n_classes, rows=slice(i, i + 1))[0]
        yield img_fname(img_db, split.image_ids[i]), arrays


def write_uniter(world: World, out: str | os.PathLike, seed: int | None = None) -> Written:
    """``txt_db/itm_*.db``, ``img_db/{flickr30k,coco_train2014,coco_val2014}`` and ``pretrained/uniter-tiny.*``.

    Text is tokenised with the world's ``bert/vocab.txt`` read cased (UNITER uses bert-base-cased;
    the world's words are lower case, so the cased and uncased readings give the same ids). Each
    img_db holds ``feat_th0.2_max100_min10`` (+ its nbb json) and ``feat_numbb{n_regions}`` (36 at
    demo/base size; a fixed-count db needs that many rows, which the tiny world has not).
    Needs ``bert/`` (:func:`write_bert`) first.
    """
    from itr_common.data.uniter_lmdb import write_img_db, write_txt_db
    from itr_common.text import load_bert_tokenizer

    root = Path(out)
    tokenizer = load_bert_tokenizer(root / "bert", do_lower_case=False)
    cache: dict[str, list[str]] = {}
    written = Written()
    specs = uniter_specs(world)
    for spec in specs:
        db_dir = write_txt_db(root / "txt_db" / spec.db_name, _txt_records(world, spec, tokenizer, cache),
                              uniter_meta(spec.db_name, tokenizer))
        n = len(_image_rows(world.split(spec.split), spec.images))
        written.add(root, db_dir, f"{n * world.config.captions_per_image} captions of {n} images ({spec.img_db})")

    num_bb = min(NUM_BB, world.config.n_regions)
    for img_db, keys in img_db_contents(world, specs).items():
        directory = root / "img_db" / img_db
        db_path = write_img_db(directory, _img_items(world, keys, img_db), CONF_TH, MAX_BB, MIN_BB, NUM_BB)
        write_img_db(directory, _img_items(world, keys, img_db), -1, MAX_BB, MIN_BB, num_bb)
        written.add(root, db_path.parent, f"{len(keys)} images (feat_th0.2_max100_min10, feat_numbb{num_bb})")

    config = ckpt.tiny_config(len(tokenizer.get_vocab()))
    path = ckpt.write_uniter_checkpoint(
        root / "pretrained" / "uniter-tiny.pt", config, img_dim=world.config.feat_dim,
        label_dim=world.config.n_label_classes,
        seed=world.config.seed if seed is None else seed,
    )
    written.add(root, path, f"UniterForPretraining state dict (hidden 64, img_dim {world.config.feat_dim}) + .json")
    return written


# ----------------------------------------------------------------------------------------------
# VinVL / OSCAR (ALADIN)

VINVL_SPLITS = {"train": "train", "dev": "minival", "test": "test"}


def vinvl_rows(split: WorldSplit, class_names: Sequence[str]) -> Iterator[tuple[int, np.ndarray, dict[str, Any]]]:
    """Per image: ``(image_id, float32 (nbb, D + 6) features.tsv row, predictions.tsv dict)``.

    nbb is UNITER's rule at conf 0.2 / min 10 / max 100 (VinVL keeps the detections above 0.2). The
    6 box columns are ``[x1/W, y1/H, x2/W, y2/H, w/W, h/H]``.
    """
    norm_bb = split.norm_bb()
    nbb = split.num_bb(CONF_TH, MIN_BB, MAX_BB)
    for i in range(split.n_images):
        n = int(nbb[i])
        row = np.concatenate([split.features[i, :n], norm_bb[i, :n]], axis=1).astype(np.float32)
        width, height = (int(v) for v in split.img_sizes[i])
        objects = [
            {"class": name, "conf": float(c), "rect": [float(v) for v in box]}
            for name, c, box in zip(
                (class_names[c] for c in split.region_class[i, :n]), split.conf[i, :n], split.boxes[i, :n]
            )
        ]
        yield int(split.image_ids[i]), row, {"objects": objects, "image_h": height, "image_w": width, "num_boxes": n}


def write_vinvl(world: World, out: str | os.PathLike, seed: int | None = None) -> Written:
    """``coco_ir/`` (captions .pt, image keys), ``features/`` (features/predictions TSV) and the OSCAR
    checkpoint ``pretrained/checkpoint-0132780/``. Needs ``bert/`` (its vocab.txt) first."""
    from itr_common.data import vinvl_tsv

    root = Path(out)
    written = Written()
    coco_ir = root / "coco_ir"
    coco_ir.mkdir(parents=True, exist_ok=True)
    for split_name, file_split in VINVL_SPLITS.items():
        split = world.split(split_name)
        k = split.captions_per_image
        captions = {int(image_id): split.captions[k * i : k * (i + 1)] for i, image_id in enumerate(split.image_ids)}
        path = coco_ir / f"{file_split}_captions.pt"
        vinvl_tsv.write_captions_pt(path, captions)
        written.add(root, path, f"{len(captions)} images x {k} captions")
    test_ids = [int(i) for i in world.split("test").image_ids]
    vinvl_tsv.write_img_keys(coco_ir / "test_img_keys.tsv", test_ids)
    vinvl_tsv.write_img_keys(coco_ir / "test_img_keys_1k.tsv", test_ids[: max(1, len(test_ids) // 5)])
    written.add(root, coco_ir / "test_img_keys.tsv", f"all {len(test_ids)} test images (the '5K')")
    written.add(root, coco_ir / "test_img_keys_1k.tsv", f"first {max(1, len(test_ids) // 5)} (the '1K')")

    rows = [r for name in VINVL_SPLITS for r in vinvl_rows(world.split(name), world.class_names)]
    features_dir = root / "features"
    vinvl_tsv.write_features_tsv(features_dir, {image_id: row for image_id, row, _ in rows},
                                 feat_dim=world.config.feat_dim + 6)
    vinvl_tsv.write_predictions_tsv(features_dir, {image_id: pred for image_id, _, pred in rows})
    written.add(root, features_dir / "features.tsv", f"{len(rows)} images, rows (nbb, {world.config.feat_dim + 6})")

    tokens = (root / "bert" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    config = ckpt.oscar_config_dict(len(tokens), world.config.feat_dim + 6, **ckpt.TINY_SIZES)
    directory = ckpt.write_oscar_checkpoint_dir(
        root / "pretrained" / ckpt.OSCAR_CHECKPOINT_NAME, config, tokens,
        seed=world.config.seed if seed is None else seed,
        img_feature_dim=world.config.feat_dim + 6,
    )
    written.add(root, directory, "tiny OSCAR ImageBertForSequenceClassification (hidden 64)")
    return written


# ----------------------------------------------------------------------------------------------
# the whole tree


def config_stamp(config: WorldConfig, layouts: Sequence[str]) -> str:
    """sha256 of the world config, the layouts and the format version: equal stamps, equal trees."""
    payload = json.dumps({"config": config.to_dict(), "layouts": sorted(layouts), "format": FORMAT_VERSION},
                         sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def read_stamp(out: str | os.PathLike) -> dict[str, Any] | None:
    """The ``world.json`` of a tree, or None when there is none (or it is unreadable)."""
    path = Path(out) / STAMP_FILE
    try:
        return read_json(path, "world stamp", expect=dict)
    except (UserError, OSError):
        return None


def check_layouts(layouts: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(layouts))
    for name in chosen:
        if name not in LAYOUTS:
            fail(f"--layout: expected one of {', '.join(LAYOUTS)} or all, found '{name}'{did_you_mean(name, LAYOUTS)}")
    if not chosen:
        fail("--layout: expected at least one layout")
    return chosen


def clear_tree(out: str | os.PathLike) -> None:
    """Remove what :func:`write_world` writes under ``out`` (and nothing else)."""
    root = Path(out)
    for name in TOP_LEVEL:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def write_world(world: World, out: str | os.PathLike, layouts: Sequence[str] = LAYOUTS) -> dict[str, str]:
    """Write ``layouts`` of ``world`` under ``out`` plus ``bert/``, README.txt and the ``world.json`` stamp
    (written last: a tree without it is incomplete). Returns {relative path: description}."""
    chosen = check_layouts(layouts)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written = Written()
    written.update(write_bert(world, root))
    if "precomp" in chosen:
        written.update(write_precomp(world, root))
        written.update(write_vocabularies(world, root))
    if "uniter" in chosen:
        written.update(write_uniter(world, root))
    if "vinvl" in chosen:
        written.update(write_vinvl(world, root))
    write_text_atomic(root / README_FILE, readme_text(world, chosen))
    stamp = {
        "stamp": config_stamp(world.config, chosen),
        "format_version": FORMAT_VERSION,
        "layouts": list(chosen),
        "config": world.config.to_dict(),
        "objects": list(world.objects),
        "attributes": list(world.attributes),
        "backgrounds": list(world.backgrounds),
        "written": written.items,
    }
    write_json_atomic(root / STAMP_FILE, stamp)
    return written.items


def write_honesty_worlds(world: World, out: str | os.PathLike, layouts: Sequence[str] = LAYOUTS) -> dict[str, Path]:
    """Write ``world`` to ``out/real`` and its shuffled twin to ``out/shuffled`` (the honesty control).

    The twin's train and dev pairs are shuffled (:func:`~itr_common.synthetic.world.with_shuffled_training_pairs`)
    and its test pairs are true: the same training run must learn on ``real`` and stay near chance on
    ``shuffled``. Returns ``{"real": path, "shuffled": path}``.
    """
    root = Path(out)
    trees = {"real": root / "real", "shuffled": root / "shuffled"}
    write_world(world, trees["real"], layouts)
    write_world(with_shuffled_training_pairs(world), trees["shuffled"], layouts)
    return trees


def readme_text(world: World, layouts: Sequence[str]) -> str:
    """The README.txt at the root of a tree."""
    cfg = world.config
    k = cfg.captions_per_image
    fold = cfg.n_test // 5
    soft = f", soft_labels ({cfg.n_label_classes} classes)" if cfg.img_db_soft_labels else " (no soft_labels)"
    lines = [
        "Synthetic image-text retrieval world (itr-synth)",
        "=================================================",
        "",
        "Every file here is written in the layout of the original COCO / Flickr30K downloads and read by the",
        "same readers; no real image, caption or pretrained weight is involved. All layouts hold the SAME",
        "images and captions.",
        "",
        f"world: seed {cfg.seed}; {cfg.n_train} train / {cfg.n_dev} dev / {cfg.n_test} test images, {k} captions each;",
        f"{cfg.n_regions} precomp regions ({cfg.max_regions} detector rows) of dimension {cfg.feat_dim};",
        f"{cfg.n_objects} objects, {cfg.n_attributes} attributes, {cfg.n_backgrounds} backgrounds.",
        "An image is a few objects, each with one attribute; a region feature is object + attribute + noise.",
        "Captions name 2-3 of an image's attribute-object pairs ('a red dog next to a wooden table .'), so",
        "retrieval needs word-region alignment. Regions are sorted by detector confidence.",
        "",
        "world split -> file split: train -> train (COCO UNITER: train + restval), dev -> dev / val / minival,",
        "test -> test (Flickr) / testall (COCO precomp) / test (UNITER, VinVL).",
        "",
        "bert/",
        "    vocab.txt (BERT layout: [PAD]=0 [unused0-98] [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103, punctuation,",
        "    letters, the world's words), bert_config.json, config.json, pytorch_model.bin: a tiny random BERT",
        "    (hidden 64, 2 layers, 4 heads) with Google key names (bert.*, LayerNorm gamma/beta, cls.* heads).",
        "    --bert_path of DIME, CAMERA, SelfAlign. The words are lower case, so this one vocabulary also stands",
        "    in for bert-base-cased (UNITER, LightningDOT): cased and uncased readings give the same ids.",
    ]
    if "precomp" in layouts:
        lines += [
            "data/f30k_precomp/",
            "    {train,dev,test}_{ims.npy,caps.txt,ids.txt,boxes.npy,img_sizes.npy}: SCAN precomp (boxes and",
            "    img_sizes for CAMERA). --data_path data --data_name f30k_precomp",
            "data/coco_precomp/",
            f"    {{train,dev,testall}}_*: testall = the test split, five equal folds of {fold} images for the",
            "    1K-fold5 protocol (5K = all of it); test_* = its first fold.",
            "vocab/",
            "    {f30k,coco}_precomp_vocab.pkl (VSRN pickle, class vocab.Vocabulary) and .json (SCAN).",
        ]
    if "uniter" in layouts:
        lines += [
            "txt_db/",
            "    itm_flickr30k_{train,val,test}.db, itm_coco_{train,restval,val,test}.db: UNITER LMDB + meta.json,",
            "    id2len.json, txt2img.json, img2txts.json, named as in the IAIS README; mount as /txt.",
            "img_db/",
            "    flickr30k, coco_train2014, coco_val2014: feat_th0.2_max100_min10 (+ its nbb json) and",
            f"    feat_numbb{min(NUM_BB, cfg.n_regions)}; arrays features, norm_bb, conf{soft}; mount as /img.",
            "pretrained/uniter-tiny.pt, uniter-tiny.json",
            "    UniterForPretraining state dict (uniter.*, cls.*, feat_regress.*, region_classifier.*, itm_output.*),",
            "    hidden 64, 2 layers, and its model config. Stands in for /pretrain/uniter-base.pt.",
        ]
    if "vinvl" in layouts:
        lines += [
            "coco_ir/",
            "    {train,minival,test}_captions.pt (image_id -> 5 captions), test_img_keys.tsv (all",
            f"    {cfg.n_test} test images: the '5K'), test_img_keys_1k.tsv (the first {fold}: the '1K').",
            "    ALADIN's --data_dir.",
            "features/",
            "    features.tsv (+ .lineidx, imageid2idx.json): rows (num_boxes, feat_dim + 6) = region features +",
            "    [x1/W, y1/H, x2/W, y2/H, w/W, h/H]; predictions.tsv (+ .lineidx): the detected classes (od tags).",
            "    ALADIN's <features-folder> (--img_feat_file features/features.tsv).",
            "pretrained/checkpoint-0132780/",
            "    tiny VinVL/OSCAR coco_ir checkpoint: config.json, pytorch_model.bin, vocab.txt,",
            "    special_tokens_map.json, added_tokens.json, training_args.bin. ALADIN's --eval_model_dir.",
        ]
    lines += ["", "world.json", "    the config, its stamp and the files written (regenerate with itr-synth).", ""]
    return "\n".join(lines)


__all__ = [
    "LAYOUTS",
    "PRECOMP_SPLITS",
    "VINVL_SPLITS",
    "bert_tokens_for",
    "check_layouts",
    "clear_tree",
    "config_stamp",
    "img_db_contents",
    "img_fname",
    "read_stamp",
    "readme_text",
    "uniter_meta",
    "uniter_specs",
    "vinvl_rows",
    "write_bert",
    "write_precomp",
    "write_uniter",
    "write_vinvl",
    "write_vocabularies",
    "write_world",
]
