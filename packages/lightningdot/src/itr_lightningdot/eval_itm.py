"""``python eval_itm.py <eval_config.json> <checkpoint.pt>``: retrieval recall of a LightningDOT checkpoint.

The checkpoint is a ``biencoder.*.pt`` (CheckpointState) or the released ``LightningDot.pt`` (pre-training
layout, ``bert.*``). For each split of the config (``val_*`` as dev, ``test_*``) every caption and image is
encoded once, indexed with faiss (flat IP, ``--hnsw_index`` for HNSW), and recall printed as the
original (``image retrieval recall = {1: .., 5: .., 10: ..}``) and as the standard table; the result
JSON goes to ``{output_dir}/retrieval_result_{split}.json``. ``--save_embeddings DIR`` also writes the
test split's embeddings and image index for ``lightningdot-search``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from itr_common.amp import Amp, AmpConfig
from itr_common.data.uniter_lmdb import TxtTokLmdb
from itr_common.errors import cli_entry
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_lightningdot.build import build_model, check_img_dbs, pick_device, writable_dir
from itr_lightningdot.data import ImageDbGroup
from itr_lightningdot.evaluate import encode_split, evaluate_split, in_batch_stats
from itr_lightningdot.options import parse_eval_args

LOGGER = logging.getLogger("itr_lightningdot.eval_itm")


def run(args: argparse.Namespace) -> dict[str, RetrievalResult]:
    """Evaluate every split of the config; returns {split: result}."""
    setup_logging(0)
    out = writable_dir(args.output_dir, "output_dir")
    if args.save_embeddings:
        writable_dir(args.save_embeddings, "--save_embeddings")
    device = pick_device(args.no_cuda)
    img_group = ImageDbGroup(args.conf_th, args.max_bb, args.min_bb, args.num_bb, args.compressed_db)
    sets = [(name, TxtTokLmdb(txt, -1), img_group[img]) for name, txt, img in args.eval_sets]
    model, img_dim = build_model(args, load_pretrained=False)
    check_img_dbs([img for _, _, img in sets], img_dim, f"checkpoint {args.biencoder_checkpoint}")
    model.to(device).eval()
    amp = Amp(AmpConfig.from_original(args.fp16, "O2" if args.fp16 else None, device))
    results = {}
    for name, txt_db, img_db in sets:
        print("*" * 100)
        print("for set", name)
        start = time.perf_counter()  # model loaded, dbs open: from here on the evaluation's own work
        split = encode_split(model, txt_db, img_db, args.valid_batch_size, device, amp)
        encode_s = time.perf_counter() - start
        loss, correct = in_batch_stats(model, split, args.valid_batch_size)
        result, recall_img, recall_txt = evaluate_split(split, args.hnsw_index, extras={
            "name": "lightningdot", "split": name, "checkpoint": str(args.biencoder_checkpoint),
            "txt_db": str(txt_db.db_dir), "loss": loss, "correct_ratio": correct})
        elapsed = time.perf_counter() - start
        result.extras.update(time_s=elapsed, encode_s=encode_s)
        # latency: encoding every caption and image + building the faiss indexes and searching them (the
        # retrieval itself); the in-batch loss statistics and the recall bookkeeping are not part of it
        result.record_latency(encode_s + result.extras["search_s"])
        print(f"time cost = {elapsed}s")
        print(f"average loss = {loss}, accuracy = {correct}")
        print("indexed ", len(split.img), "data")
        print("image retrieval recall =", {k: round(v, 4) for k, v in recall_img.items()})
        print("txt retrieval recall =", {k: round(v, 4) for k, v in recall_txt.items()})
        print(result.table())
        single = args.result_json and len(sets) == 1
        target = Path(args.result_json) if single else out / f"retrieval_result_{name}.json"
        result.write_json(target)
        results[name] = result
        if args.save_embeddings and name == sets[-1][0]:
            from itr_lightningdot.search import save_gallery

            save_gallery(args.save_embeddings, split, args, hnsw=args.hnsw_index)
    return results


@cli_entry
def main(argv: list[str] | None = None) -> int:
    run(parse_eval_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
