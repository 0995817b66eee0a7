"""``evaluate_models.py`` of both variants as a working command (the released one is all comments, and its
``evaluation.py`` calls ``i2t`` with the wrong signature).

    cd camera_SelfAlign && python evaluate_models.py --model_path runs/flickr/model_best.pth.tar \\
        --data_path $DATA_PATH --split test                        # Flickr30K 1K
    python evaluate_models.py --model_path runs/coco/model_best.pth.tar --split testall --fold5   # COCO 1K
    python evaluate_models.py --model_path runs/coco/model_best.pth.tar --split testall          # COCO 5K

Prints R@1/5/10, medr, meanr both ways, the (correct) rsum and the protocol; writes a JSON result. A
checkpoint of the other variant, a split whose features do not match it, a missing boxes file (CAMERA)
or a vocabulary that is not one (VSRN) stop with one line and status 2 before any encoding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from itr_common.data.precomp import PrecompSplit
from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.text import load_bert_tokenizer
from itr_common.validation import check_device, require_writable
from itr_selfalign.data import CameraDataset, VsrnDataset
from itr_selfalign.evaluation import encode_split, evaluate_encoded, protocol_for
from itr_selfalign.models import load_model

logger = logging.getLogger(__name__)
DEFAULT_MODEL = {"camera": "runs/flickr/model_best.pth.tar", "vsrn": "runs/flickr/model_best.pth.tar"}


def build_parser(variant: str, prog: str = "evaluate_models.py") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=f"Evaluate a {variant.upper()}(+SelfAlign) checkpoint.")
    add = parser.add_argument
    add("--model_path", default=DEFAULT_MODEL[variant], help="checkpoint (model_best.pth.tar) to evaluate")
    add("--data_path", default=None, help="root of the precomp data (default: the checkpoint's)")
    add("--data_name", default=None, help="f30k_precomp | coco_precomp (default: the checkpoint's)")
    if variant == "camera":
        add("--bert_path", default=None, help="BERT directory (default: the checkpoint's)")
    else:
        add("--vocab_path", default=None, help="vocabulary folder (default: the checkpoint's)")
    add("--split", default="test", help="test (Flickr30K), testall (COCO 5K / with --fold5 COCO 1K), dev")
    add("--fold5", action="store_true", help="COCO 1K: mean over the five 1K folds of testall")
    add("--batch_size", type=int, default=None, help="encoding batch size (default: the checkpoint's)")
    add("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    add("--fp16", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    add("--chunk", type=int, default=0, help="queries per scoring block (0: as many as 2**25 scores allow)")
    add("--out", default=None,
        help="JSON result path (default: selfalign_<variant>_result_<protocol>.json next to --model_path)")
    return parser


def evaluate(variant: str, model_path: str, data_path: str | None = None, text_path: str | None = None,
             split: str = "test", fold5: bool = False, batch_size: int | None = None, device: str | None = None,
             fp16: bool = False, data_name: str | None = None, chunk: int = 0) -> RetrievalResult:
    """Load, check, encode, rank; returns the :class:`RetrievalResult` (extras: model, variant, selfalign, and
    ``compute_s`` / ``latency_ms_per_query``: the encode + rank time, loading excluded)."""
    import torch

    if batch_size is not None and batch_size < 1:
        fail(f"--batch_size: expected a positive integer, found {batch_size}")
    if chunk < 0:
        fail(f"--chunk: expected a non-negative integer, found {chunk}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, opt, state, text = load_model(model_path, variant, data_path, text_path, dev)
    if data_name is not None:
        opt.data_name = data_name
    camera = variant == "camera"
    data = PrecompSplit(opt.data_path, opt.data_name, split, require_boxes=camera)
    dim, regions = data.images.shape[2], data.images.shape[1]
    if dim != opt.img_dim:
        fail(f"{data.files['ims']}: expected {opt.img_dim}-d region features (the checkpoint's img_dim), found {dim}")
    if fold5 and data.n_images % 5:
        fail(f"--fold5: expected a number of images divisible by 5, found {data.n_images} in {data.files['ims']}")
    dataset = CameraDataset(data, load_bert_tokenizer(opt.bert_path), opt.max_words) if camera else \
        VsrnDataset(data, text, opt.max_len)
    # latency: encoding plus ranking (every fold for fold5), the model loaded and the data opened before
    t0 = time.perf_counter()
    enc = encode_split(model, data, dataset, batch_size or opt.batch_size, dev, fp16)
    encode_s = time.perf_counter() - t0
    protocol = protocol_for(split, fold5)
    result = evaluate_encoded(enc, protocol, chunk=chunk or None, device=dev)
    result.record_latency(time.perf_counter() - t0)
    result.extras.update(model=str(model_path), variant=variant, selfalign=int(opt.selfalign), split=split,
                         regions=regions, encode_s=round(encode_s, 3), epoch=int(state.get("epoch", 0)))
    return result


def run(variant: str, argv: Sequence[str] | None, prog: str = "evaluate_models.py") -> RetrievalResult:
    args = build_parser(variant, prog).parse_args(argv)
    setup_logging()
    default = Path(args.model_path).parent / f"selfalign_{variant}_result_{protocol_for(args.split, args.fold5)}.json"
    out = Path(args.out) if args.out else default
    require_writable(out, "--out", kind="file")
    check_device(args.device)
    text_path = args.bert_path if variant == "camera" else args.vocab_path
    result = evaluate(variant, args.model_path, args.data_path, text_path, args.split, args.fold5, args.batch_size,
                      args.device, args.fp16, args.data_name, args.chunk)
    print(result.table())
    print(f"result written to {result.write_json(out)}")
    return result


@cli_entry
def main_camera(argv: Sequence[str] | None = None) -> None:
    """``selfalign-camera-evaluate`` / ``camera_SelfAlign/evaluate_models.py``."""
    run("camera", argv)


@cli_entry
def main_vsrn(argv: Sequence[str] | None = None) -> None:
    """``selfalign-vsrn-evaluate`` / ``vsrn_SelfAlign/evaluate_models.py``."""
    run("vsrn", argv)


__all__ = ["build_parser", "evaluate", "main_camera", "main_vsrn", "run"]


if __name__ == "__main__":  # python -m itr_selfalign.evaluate_models {camera,vsrn} ...
    import sys

    if len(sys.argv) < 2 or sys.argv[1] not in ("camera", "vsrn"):
        sys.exit("usage: python -m itr_selfalign.evaluate_models {camera,vsrn} [evaluate_models.py flags]")
    {"camera": main_camera, "vsrn": main_vsrn}[sys.argv[1]](sys.argv[2:])
