"""``python rerank.py``: the bi-encoder's top M re-scored by a UNITER ITM cross-encoder (``rerank.py``).

For every caption of the test split the bi-encoder retrieves the top M images (M in ``--thresholds``,
10/20/50/100 as the original) from the faiss index, and the UNITER ITM model re-orders them; likewise
for every image its top M captions. Recall before (bi-encoder alone) and after re-ranking is printed in
one table and written to ``{output_dir}/rerank.json``.

The UNITER scores come either from a checkpoint scored here (``--uniter_checkpoint`` +
``--uniter_config``: an IAIS ``model_step_N.pt`` or an original UNITER ITM checkpoint; ``itr-iais``
must be installed) or, as the original, from an ``inf_itm.py`` output (``--uniter_results``:
``results.bin`` / ``results.npz``, every pair pre-scored). Only the M candidates per query are
scored here, which is the point of the pipeline: M x queries cross-encoder passes instead of all pairs.

Fixes: the original divided the first-stage text-retrieval recall by the number of captions, counted
each image once per caption, and hard-coded its paths and dataset in the script.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from itr_common.amp import Amp, AmpConfig
from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_common.errors import cli_entry, fail, require_file
from itr_common.fileio import write_json_atomic
from itr_common.logging import progress, setup_logging
from itr_lightningdot.build import build_model, check_img_dbs, pick_device, writable_dir
from itr_lightningdot.data import ImageDbGroup
from itr_lightningdot.evaluate import EncodedSplit, encode_split
from itr_lightningdot.indexer import make_indexer
from itr_lightningdot.options import (
    add_itm_params,
    add_logging_params,
    check_common,
    default_params,
    map_db_dirs,
    parse_with_config,
)

LOGGER = logging.getLogger("itr_lightningdot.rerank")
THRESHOLDS = (10, 20, 50, 100)
TOPS = (1, 5, 10)


def parser():
    from itr_common.errors import ArgumentParser

    p = ArgumentParser(prog="rerank.py", description="Re-rank the bi-encoder's top M with a UNITER ITM model.")
    default_params(p)
    add_itm_params(p)
    add_logging_params(p)
    p.add_argument("--uniter_checkpoint", default=None, help="UNITER ITM weights (IAIS model_step_N.pt, ...)")
    p.add_argument("--uniter_config", default=None, help="its model config (uniter-base.json, ...)")
    p.add_argument("--uniter_results", default=None, help="inf_itm.py output (results.bin / results.npz / dir)")
    p.add_argument("--thresholds", type=int, nargs="+", default=list(THRESHOLDS), help="the M values")
    p.add_argument("--uniter_batch_size", type=int, default=100, help="pairs per UNITER forward pass")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = parse_with_config(parser(), argv)
    map_db_dirs(args)
    check_common(args)
    if not args.biencoder_checkpoint:
        fail("--biencoder_checkpoint: expected the bi-encoder to re-rank (biencoder.*.pt), found none")
    if not args.test_txt_db or not args.test_img_db:
        fail("test_txt_db/test_img_db: expected the split to re-rank, found none")
    if bool(args.uniter_checkpoint) == bool(args.uniter_results):
        fail("--uniter_checkpoint/--uniter_results: expected exactly one source of UNITER scores")
    if args.uniter_checkpoint:
        require_file(args.uniter_checkpoint, "--uniter_checkpoint")
        if not args.uniter_config:
            fail("--uniter_config: expected the UNITER model config of --uniter_checkpoint, found none")
        require_file(args.uniter_config, "--uniter_config")
    if any(m <= 0 for m in args.thresholds) or args.uniter_batch_size <= 0:
        fail(f"--thresholds/--uniter_batch_size: expected positive integers, found {args.thresholds}, "
             f"{args.uniter_batch_size}")
    return args


class UniterScorer:
    """Scores (caption, image) pairs with a UNITER ITM ranking head (``itr_iais``)."""

    def __init__(self, checkpoint: str, config: str, txt_db: TxtTokLmdb, img_db, device: torch.device,
                 batch_size: int) -> None:
        self.cache: dict[tuple[str, str], float] = {}
        try:
            from itr_iais.data import image_text_batch
            from itr_iais.inf_itm import load_model
        except ImportError:
            fail("--uniter_checkpoint: scoring with UNITER needs itr-iais (pip install packages/iais), "
                 "or pass --uniter_results from inf_itm.py")
        self.batch_fn = image_text_batch
        self.model = load_model(argparse.Namespace(checkpoint=checkpoint, model_config=config), device)
        self.txt_db, self.img_db, self.device, self.batch_size = txt_db, img_db, device, batch_size
        self.pairs_scored = 0

    @torch.no_grad()
    def __call__(self, txt_id: str, img_names: Sequence[str]) -> np.ndarray:
        from itr_iais.model import batch_to

        todo = [n for n in dict.fromkeys(img_names) if (txt_id, n) not in self.cache]
        ids = self.txt_db.combine_inputs(self.txt_db[txt_id]["input_ids"])
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            feats, poss = zip(*(self.img_db[n] for n in chunk))
            batch = batch_to(self.batch_fn(ids, list(feats), list(poss)), self.device)
            for name, value in zip(chunk, self.model.score(batch).float().view(-1).tolist()):
                self.cache[(txt_id, name)] = value
        self.pairs_scored += len(img_names)
        return np.array([self.cache[(txt_id, n)] for n in img_names], dtype=np.float32)


class MatrixScorer:
    """Scores looked up in an ``inf_itm.py`` score matrix (n_txt, n_img)."""

    def __init__(self, path: str) -> None:
        try:
            from itr_iais.results_io import load_results
        except ImportError:
            fail("--uniter_results: reading inf_itm.py results needs itr-iais (pip install packages/iais)")
        scores, txt_ids, img_ids = load_results(path)
        self.scores = scores.float().numpy()
        self.txt_pos = {t: i for i, t in enumerate(txt_ids)}
        self.img_pos = {t: i for i, t in enumerate(img_ids)}
        self.pairs_scored = 0

    def __call__(self, txt_id: str, img_names: Sequence[str]) -> np.ndarray:
        if txt_id not in self.txt_pos:
            fail(f"--uniter_results: caption {txt_id} not scored there")
        missing = [n for n in img_names if n not in self.img_pos]
        if missing:
            fail(f"--uniter_results: image {missing[0]} not scored there")
        self.pairs_scored += len(img_names)
        return self.scores[self.txt_pos[txt_id], [self.img_pos[n] for n in img_names]]


def recall_rows(split: EncodedSplit, top_img: np.ndarray, top_txt: np.ndarray, scorer, thresholds: Sequence[int]
                ) -> list[dict]:
    """Rows of the table: the bi-encoder alone, then re-ranked top M for each M."""
    owners = split.img2txts

    def recalls(img_lists: list[list[int]], txt_lists: list[list[int]]) -> dict:
        t2i = [100 * np.mean([split.txt2img[t] in img_lists[t][:k] for t in range(len(img_lists))]) for k in TOPS]
        i2t = [100 * np.mean([bool(set(txt_lists[i][:k]) & set(owners[i])) for i in range(len(txt_lists))])
               for k in TOPS]
        return {"i2t": i2t, "t2i": t2i, "rsum": float(sum(i2t) + sum(t2i))}

    rows = [{"method": "bi-encoder", "M": None, **recalls([list(r) for r in top_img], [list(r) for r in top_txt])}]
    for m in thresholds:
        start = time.perf_counter()
        before = scorer.pairs_scored
        img_lists = []
        for t, cand in enumerate(progress(top_img[:, :m], desc=f"re-rank images, M={m}")):
            scores = scorer(split.txt_ids[t], [split.img_fnames[j] for j in cand])
            img_lists.append([int(cand[j]) for j in np.argsort(-scores, kind="stable")])
        txt_lists = []
        for i, cand in enumerate(progress(top_txt[:, :m], desc=f"re-rank texts, M={m}")):
            scores = np.array([float(scorer(split.txt_ids[j], [split.img_fnames[i]])[0]) for j in cand])
            txt_lists.append([int(cand[j]) for j in np.argsort(-scores, kind="stable")])
        rows.append({"method": "re-ranked", "M": m, "seconds": time.perf_counter() - start,
                     "pairs_scored": scorer.pairs_scored - before, **recalls(img_lists, txt_lists)})
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'method':<22}{'i2t R@1':>9}{'R@5':>8}{'R@10':>8}{'t2i R@1':>9}{'R@5':>8}{'R@10':>8}{'rsum':>9}"]
    for row in rows:
        name = row["method"] if row["M"] is None else f"re-ranked top {row['M']}"
        lines.append(f"{name:<22}" + "".join(f"{v:>8.2f} " for v in row["i2t"] + row["t2i"]).rstrip()
                     + f"{row['rsum']:>9.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict]:
    setup_logging(0)
    out = writable_dir(args.output_dir, "output_dir")
    device = pick_device(args.no_cuda)
    img_db = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)[args.test_img_db]
    txt_db = TxtTokLmdb(args.test_txt_db, -1)
    model, img_dim = build_model(args, load_pretrained=False)
    check_img_dbs([img_db], img_dim, f"checkpoint {args.biencoder_checkpoint}")
    scorer = (MatrixScorer(args.uniter_results) if args.uniter_results else
              UniterScorer(args.uniter_checkpoint, args.uniter_config, txt_db, img_db, device, args.uniter_batch_size))
    model.to(device).eval()
    amp = Amp(AmpConfig.from_original(args.fp16, "O2" if args.fp16 else None, device))
    split = encode_split(model, txt_db, img_db, args.valid_batch_size, device, amp)
    top = max(args.thresholds)
    img_index = make_indexer(split.img.shape[1], args.hnsw_index)
    img_index.index_vectors(split.img)
    txt_index = make_indexer(split.txt.shape[1], args.hnsw_index)
    txt_index.index_vectors(split.txt)
    _, top_img = img_index.search(split.txt, min(top, len(split.img)))
    _, top_txt = txt_index.search(split.img, min(top, len(split.txt)))
    thresholds = sorted({min(m, len(split.img)) for m in args.thresholds})
    rows = recall_rows(split, top_img, top_txt, scorer, thresholds)
    print(table(rows))
    sys.stdout.flush()
    write_json_atomic(Path(out) / "rerank.json", {"rows": rows, "n_images": len(split.img),
                                                 "n_captions": len(split.txt),
                                                 "checkpoint": str(args.biencoder_checkpoint)})
    return rows


@cli_entry
def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
