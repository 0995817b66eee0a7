"""``inf_itm.py``: score every image-caption pair of a txt_db/img_db and report retrieval recall.

    python inf_itm.py --txt_db /txt/itm_flickr30k_test.db --img_db /img/flickr30k \\
        --checkpoint /storage/ckpt/model_step_5000.pt --model_config config/uniter-base.json \\
        --output_dir /storage/itm_eval --fp16 --pin_mem
    torchrun --nproc_per_node 8 inf_itm.py ...      # was: horovodrun -np 8 python inf_itm.py ...

Writes, as the original, ``config.json`` (the options), ``results.bin`` (pickle of
``(score_matrix, txt_ids, img_ids)``) and ``scores.json`` (txt_r1/5/10, img_r1/5/10, means, r_mean);
and ours: ``results.npz`` (the same without pickle) and ``retrieval_result.json`` (standard R@1/5/10,
medr, meanr both ways, rsum, protocol, pairs/s). Prints the original block and the standard table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence

import torch

from itr_common import dist
from itr_common.amp import Amp, AmpConfig
from itr_common.checkpoint import load_checkpoint, strip_module_prefix
from itr_common.data.uniter_lmdb import DetectFeatLmdb, TxtTokLmdb
from itr_common.errors import cli_entry, fail, require_dir, require_file
from itr_common.fileio import result_set, write_json_atomic
from itr_common.logging import get_logger, progress, setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.models.uniter import img_dim_of, load_uniter_state_dict, require_state_dict
from itr_common.validation import check_options, check_same_size, check_value, number, require_writable
from itr_iais.evaluate import evaluate_full, itm_eval, protocol_for, retrieval_result
from itr_iais.model import UniterForImageTextRetrievalHardNeg, load_model_config
from itr_iais.options import INFERENCE_CHECKS, inference_parser, resolve_model_config
from itr_iais.results_io import write_results

LOGGER = get_logger(__name__)
PREPRO_KEYS = ("conf_th", "max_bb", "min_bb", "num_bb")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    opts = inference_parser().parse_args(argv)
    for key in ("txt_db", "img_db", "checkpoint", "model_config", "output_dir"):
        if not getattr(opts, key):
            fail(f"--{key}: required, found none")
    if opts.train_config is not None:
        hps_path = require_file(opts.train_config, "--train_config (hps.json)")
        try:
            hps = json.loads(hps_path.read_text())
        except json.JSONDecodeError as err:
            fail(f"{hps_path}: expected the hps.json of a training run, found invalid JSON ({err.msg})")
        missing = [k for k in PREPRO_KEYS if k not in hps]
        if missing:
            fail(f"{hps_path}: expected keys {', '.join(PREPRO_KEYS)}, missing {', '.join(missing)}")
        for key in PREPRO_KEYS:
            setattr(opts, key, hps[key])
    check_options(opts, INFERENCE_CHECKS)
    if opts.conf_th != -1:
        check_value("--conf_th", opts.conf_th, number(0, 1))
    require_dir(opts.txt_db, "--txt_db")
    require_dir(opts.img_db, "--img_db")
    require_file(opts.checkpoint, "--checkpoint")
    opts.model_config = str(resolve_model_config(opts.model_config))
    require_writable(opts.output_dir, "--output_dir")
    return opts


def load_model(opts: argparse.Namespace, device: torch.device, feature_dim: int | None = None,
               state: Mapping[str, torch.Tensor] | None = None) -> UniterForImageTextRetrievalHardNeg:
    """The ranking model from ``model_config`` and ``checkpoint``; zero-shot checkpoints get ``init_output``.
    ``state``: the checkpoint's state dict when the caller has read it already (default: read here).

    The original tests ``'rank_output' not in checkpoint``, never true for a state dict (its keys are
    ``rank_output.weight``/``.bias``), so it always re-initialised the head; that only worked because
    its own checkpoints store ``itm_output`` row 1 equal to ``rank_output``. Here the test is on the keys.
    """
    if state is None:
        state = require_state_dict(load_checkpoint(opts.checkpoint), str(opts.checkpoint))
    config = load_model_config(opts.model_config, state, feature_dim)
    if feature_dim is not None:
        check_same_size({f"--img_db {opts.img_db}": feature_dim, f"--checkpoint {opts.checkpoint} (img_dim)":
                         img_dim_of(strip_module_prefix(state)) or config.img_dim})
    model = UniterForImageTextRetrievalHardNeg(config)
    # strict but for the documented zero-shot case (a pre-trained UNITER without rank_output, logged by name):
    # encoder weights missing from the checkpoint are refused instead of scored with random weights
    report = load_uniter_state_dict(model, state, strict=False, source=str(opts.checkpoint))
    if report.missing:
        LOGGER.info("%s has no rank_output: zero-shot, ranking head from itm_output", opts.checkpoint)
        model.init_output()
    return model.to(device).eval()


def print_original_block(log: dict) -> None:
    print("======================== Results =========================", flush=True)
    print(f"image retrieval R1: {log['img_r1'] * 100:.2f},\nimage retrieval R5: {log['img_r5'] * 100:.2f},\n"
          f"image retrieval R10: {log['img_r10'] * 100:.2f}\ntext retrieval R1: {log['txt_r1'] * 100:.2f},\n"
          f"text retrieval R5: {log['txt_r5'] * 100:.2f},\ntext retrieval R10: {log['txt_r10'] * 100:.2f}",
          flush=True)
    print("========================================================", flush=True)


def run(opts: argparse.Namespace, state: Mapping[str, torch.Tensor] | None = None) -> RetrievalResult | None:
    """Evaluate; rank 0 writes the outputs and returns the result (other ranks return None). ``state``: the
    checkpoint's state dict, when the caller has read it already."""
    info = dist.init_distributed()
    setup_logging(info.rank)
    txt_db = TxtTokLmdb(opts.txt_db, -1)
    img_db = DetectFeatLmdb(opts.img_db, opts.conf_th, opts.max_bb, opts.min_bb, opts.num_bb, opts.compressed_db)
    model = load_model(opts, info.device, img_db.feature_dim, state)
    amp = Amp(AmpConfig.from_original(fp16=opts.fp16, device=info.device))
    bar = progress(total=len(txt_db.img2txts), desc="inference")
    start = time.perf_counter()  # model loaded, dbs open: from here on the evaluation's own work
    scores, txt_ids, img_ids, seconds = evaluate_full(model.score, txt_db, img_db, opts.batch_size, info.device,
                                                      amp.autocast, iais_layout=opts.IAIS, progress=bar.update)
    compute_s = time.perf_counter() - start
    bar.close()
    if not info.is_main:
        return None
    log = itm_eval(scores, txt_ids, img_ids, txt_db.txt2img, txt_db.img2txts)
    pairs_per_s = scores.numel() / max(seconds, 1e-9)
    result = retrieval_result(
        scores, txt_ids, img_ids, txt_db.txt2img, txt_db.img2txts, protocol_for(opts.txt_db),
        extras={"name": "iais-inf_itm", "checkpoint": str(opts.checkpoint), "time_s": compute_s,
                "pairs_per_s": pairs_per_s, "world_size": info.world_size, "fp16": bool(opts.fp16)},
    ).record_latency(compute_s)
    with result_set(opts.output_dir) as files:  # the old set or the new one, never a mix, no stray temp file
        write_json_atomic(files.path("config.json"), vars(opts), indent=None)
        write_results(files.staging, scores, txt_ids, img_ids)
        write_json_atomic(files.path("scores.json"), log, indent=None)
        result.write_json(files.path("retrieval_result.json"))
    LOGGER.info("evaluation finished in %d seconds, %.0f pairs/s", seconds, pairs_per_s)
    print_original_block(log)
    print(result.table(), flush=True)
    return result


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
