"""``lightningdot-search``: real-time text -> image retrieval over a saved gallery index.

Build once (the image tower embeds every image of an img_db, with a progress bar), then query::

    lightningdot-search --build --index DIR --checkpoint biencoder.best.pt --img_db /img/coco_val2014 \
        --txt_model_config ./config/bert_base.json --img_model_config ./config/img_base.json \
        --project_dim 768 --vocab /bert-base-cased [--txt_db /db/itm_coco_test.db] [--hnsw_index]
    lightningdot-search --index DIR "a dog runs on the beach" --topk 10

``DIR`` holds ``gallery.index.dpr`` (faiss), ``gallery.index_meta.json`` (image ids, dimension, kind, the
model's fingerprint), ``img_embeddings.npy``, and the query encoder: ``query_encoder.pt`` (the text
tower's state dict), ``query_encoder.json`` (its config) and ``vocab.txt``. A query is tokenised
(``[CLS] ... [SEP]``), embedded by the text tower and searched; the ranked image ids and scores are
printed with the query latency. This is the original's unfinished full-COCO demo as a command.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from itr_common.checkpoint import load_checkpoint, load_state_dict_mapped, save_atomic
from itr_common.errors import ArgumentParser, cli_entry, fail, require_dir
from itr_common.fileio import read_json, write_json_atomic
from itr_lightningdot.indexer import DenseIndexer, make_indexer
from itr_lightningdot.model import BertEncoder, bert_config

LOGGER = logging.getLogger("itr_lightningdot.search")
INDEX_PREFIX = "gallery"


def fingerprint(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict's names, shapes and values (which model built an index)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.float().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def _vocab_file(vocab: str | None, txt_model_config: str) -> Path:
    for candidate in (vocab, txt_model_config):
        if not candidate:
            continue
        path = Path(candidate)
        if path.is_dir() and (path / "vocab.txt").is_file():
            return path / "vocab.txt"
        if path.is_file() and path.name.endswith(".txt"):
            return path
    fail("--vocab: expected the text tower's vocab.txt (or a BERT directory holding it), found none")


def save_gallery(directory: str | Path, split: Any, args: argparse.Namespace, hnsw: bool = False,
                 model: Any = None, ivf: bool = False) -> Path:
    """Write the image index and the query encoder of ``model`` (or of ``args.biencoder_checkpoint``)."""
    from itr_lightningdot.build import build_model

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, _ = build_model(args, load_pretrained=False)
    txt_state = model.txt_model.state_dict()
    vocab = _vocab_file(getattr(args, "vocab", None), args.txt_model_config)
    index = make_indexer(split.img.shape[1], hnsw, ivf)
    index.index_vectors(split.img, list(split.img_fnames))
    meta = {"checkpoint": str(args.biencoder_checkpoint), "txt_fingerprint": fingerprint(txt_state),
            "img_fingerprint": fingerprint(model.img_model.state_dict())}
    index.serialize(out / INDEX_PREFIX, extra=meta)
    np.save(out / "img_embeddings.npy", split.img)
    save_atomic(txt_state, out / "query_encoder.pt")
    config = bert_config(args.txt_model_config)
    write_json_atomic(out / "query_encoder.json", {"bert_config": config.to_dict(), "project_dim": args.project_dim,
                                                    "txt_fingerprint": meta["txt_fingerprint"]})
    if vocab.resolve() != (out / "vocab.txt").resolve():
        shutil.copyfile(vocab, out / "vocab.txt")
    LOGGER.info("gallery of %d images written to %s", len(split.img_fnames), out)
    return out


@dataclass
class Searcher:
    """A loaded gallery: the faiss index, the query encoder and its tokenizer."""

    index: DenseIndexer
    encoder: BertEncoder
    tokenizer: Any
    meta: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path) -> Searcher:
        from transformers import BertConfig, BertModel

        from itr_common.text import load_bert_tokenizer

        root = require_dir(directory, "--index directory")
        index = DenseIndexer.deserialize(root / INDEX_PREFIX)
        meta = DenseIndexer.read_meta(root / INDEX_PREFIX)
        enc_meta = read_json(root / "query_encoder.json", "query encoder config", expect=dict)
        config = BertConfig.from_dict(enc_meta["bert_config"])
        config._attn_implementation = "sdpa"
        encoder = BertEncoder(BertModel(config), int(enc_meta["project_dim"]))
        state = load_checkpoint(root / "query_encoder.pt")
        load_state_dict_mapped(encoder, state, source=str(root / "query_encoder.pt"))
        if fingerprint(state) != meta.get("txt_fingerprint"):
            fail(f"{root}: the query encoder is not the model the index was built with "
                 f"(fingerprint {fingerprint(state)} vs {meta.get('txt_fingerprint')})")
        if encoder.out_size != index.vector_sz:
            fail(f"{root}: index of dimension {index.vector_sz}, query encoder gives {encoder.out_size}")
        tokenizer = load_bert_tokenizer(root / "vocab.txt", do_lower_case=False)
        return cls(index, encoder.eval(), tokenizer, meta)

    @torch.no_grad()
    def embed(self, queries: Sequence[str]) -> np.ndarray:
        from itr_lightningdot.data import _text_inputs

        ids = []
        for query in queries:
            if not isinstance(query, str) or not query.strip():
                fail("query: expected a non-empty text, found an empty one")
            ids.append(torch.tensor(self.tokenizer.encode(query.strip()), dtype=torch.long))
        return self.encoder(**_text_inputs(ids)).pooled.float().numpy()

    def search(self, queries: Sequence[str], topk: int) -> list[list[tuple[str, float]]]:
        scores, rows = self.index.search(self.embed(queries), min(topk, self.index.ntotal))
        ids = self.index.index_id_to_db_id
        return [[(ids[r], float(s)) for r, s in zip(row, score) if r >= 0] for row, score in zip(rows, scores)]


def build_index(args: argparse.Namespace) -> Path:
    """``--build``: embed every image (of ``--txt_db``'s split, or the whole img_db) and save the gallery."""
    from itr_common.data.uniter_lmdb import TxtTokLmdb
    from itr_lightningdot.build import build_model, check_img_dbs
    from itr_lightningdot.data import ImageDbGroup
    from itr_lightningdot.evaluate import EncodedSplit, encode_images

    if not args.checkpoint:
        fail("--build: expected --checkpoint (biencoder.*.pt or LightningDot.pt), found none")
    if not args.img_db:
        fail("--build: expected --img_db, found none")
    _vocab_file(args.vocab, args.txt_model_config)
    out = Path(args.index)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        fail(f"--index {out}: expected a new directory, found files (add --overwrite to rebuild)")
    args.biencoder_checkpoint = args.checkpoint
    args.img_checkpoint = args.txt_checkpoint = None
    model, img_dim = build_model(args, load_pretrained=False)
    img_db = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)[args.img_db]
    check_img_dbs([img_db], img_dim, f"checkpoint {args.checkpoint}")
    if args.txt_db:
        txt_db = TxtTokLmdb(args.txt_db, -1)
        fnames = list(dict.fromkeys(txt_db.txt2img[i] for i in txt_db.ids))
    else:
        fnames = img_db.names
    model.eval()
    start = time.perf_counter()
    img = encode_images(model, img_db, fnames, args.batch_size, torch.device("cpu"), desc="embedding the gallery")
    LOGGER.info("embedded %d images in %.1f s", len(fnames), time.perf_counter() - start)
    split = EncodedSplit(np.zeros((0, img.shape[1]), np.float32), img, [], list(fnames))
    return save_gallery(out, split, args, hnsw=args.hnsw_index, model=model, ivf=args.ivf_index)


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="lightningdot-search",
                       description="Text -> image search over a saved LightningDOT index.")
    p.add_argument("query", nargs="*", help="query text(s)")
    p.add_argument("--index", required=True, help="gallery directory (--build, or eval_itm --save_embeddings)")
    p.add_argument("--topk", type=int, default=10, help="how many images to print per query")
    p.add_argument("--build", action="store_true", help="build the gallery index first")
    p.add_argument("--overwrite", action="store_true", help="with --build: replace an existing index")
    p.add_argument("--checkpoint", help="--build: biencoder.*.pt or LightningDot.pt")
    p.add_argument("--img_db", help="--build: the img_db to index")
    p.add_argument("--txt_db", help="--build: index only the images of this txt_db's split")
    p.add_argument("--txt_model_config", default="./config/bert_base.json", help="--build: BERT dir or config json")
    p.add_argument("--img_model_config", default="./config/img_base.json", help="--build: UNITER config")
    p.add_argument("--txt_model_type", default="bert-base", help=argparse.SUPPRESS)
    p.add_argument("--img_model_type", default="uniter-base", help=argparse.SUPPRESS)
    p.add_argument("--project_dim", type=int, default=768, help="--build: projection size of the checkpoint")
    p.add_argument("--vocab", help="--build: vocab.txt of the text tower (or a BERT directory)")
    p.add_argument("--hnsw_index", action="store_true", help="--build: HNSW (store_n 512, efSearch 128, "
                                                             "efConstruction 200) instead of flat inner product")
    p.add_argument("--ivf_index", action="store_true", help="--build: ours, IVF-flat inner product (4 sqrt(N) "
                                                           "lists, nprobe 32): a few ms per query at 1M images")
    p.add_argument("--conf_th", type=float, default=0.2)
    p.add_argument("--max_bb", type=int, default=100)
    p.add_argument("--min_bb", type=int, default=10)
    p.add_argument("--num_bb", type=int, default=36)
    p.add_argument("--compressed_db", action="store_true")
    p.add_argument("--batch_size", type=int, default=64, help="--build: images per forward pass")
    return p


def run(args: argparse.Namespace) -> list[list[tuple[str, float]]]:
    from itr_lightningdot.options import resolve_bundled

    if args.topk <= 0:
        fail(f"--topk: expected a positive integer, found {args.topk}")
    if args.batch_size <= 0:
        fail(f"--batch_size: expected a positive integer, found {args.batch_size}")
    if not args.build and not args.query:
        fail("query: expected at least one query text (or --build), found none")
    if any(not q.strip() for q in args.query):
        fail("query: expected a non-empty text, found an empty one")
    if args.build:
        args.img_model_config = resolve_bundled(args.img_model_config)
        args.txt_model_config = resolve_bundled(args.txt_model_config)
        build_index(args)
    if not args.query:
        return []
    searcher = Searcher.load(args.index)
    searcher.search(args.query[:1], 1)  # warm-up (first call pays allocation)
    start = time.perf_counter()
    results = searcher.search(args.query, args.topk)
    elapsed_ms = 1000 * (time.perf_counter() - start) / len(args.query)
    for query, hits in zip(args.query, results):
        print(f"query: {query}  ({searcher.index.kind} index, {searcher.index.ntotal} images, "
              f"{elapsed_ms:.2f} ms/query)")
        for rank, (image_id, score) in enumerate(hits, 1):
            print(f"{rank:4d}  {score:10.4f}  {image_id}")
    sys.stdout.flush()
    return results


@cli_entry
def main(argv: list[str] | None = None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
