"""``evaluate_models.py`` of DIME as a command (the original edits paths inside the script instead).

    python evaluate_models.py --model_path runs/f30k_i2t/model_best.pth.tar --data_path $DATA_PATH --split test
    python evaluate_models.py --model_path runs/coco_i2t/model_best.pth.tar \\
        --model_path2 runs/coco_t2i/model_best.pth.tar --data_path $DATA_PATH --split testall --fold5

Defaults are the script's first (uncommented) line: the Flickr30K i2t model, split ``test``, no fold5.
Prints R@1/5/10, medr, meanr both ways, the (correct) rsum and the protocol; writes a JSON result (default:
beside the checkpoint) whose extras hold the encode + score time (``compute_s``, ``latency_ms_per_query``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from itr_common.errors import ArgumentParser, cli_entry
from itr_common.logging import setup_logging
from itr_common.metrics import RetrievalResult
from itr_common.validation import check_device, check_value, integer, require_writable
from itr_dime.evaluation import protocol_for
from itr_dime.evaluation_models import EvalSettings, evalrank

DEFAULT_MODEL = "pretrain_model/flickr/Flickr30K_DIME_it.pth.tar"


def build_parser(prog: str = "evaluate_models.py") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="Evaluate a DIME checkpoint, or the ensemble of two.")
    add = parser.add_argument
    add("--model_path", default=DEFAULT_MODEL, help="checkpoint (model_best.pth.tar) to evaluate")
    add("--model_path2", default=None, help="second checkpoint: evaluate the ensemble (mean of both score matrices)")
    add("--data_path", default=None, help="root of the precomp data (default: the checkpoint's)")
    add("--bert_path", default=None, help="BERT directory (default: the checkpoint's)")
    add("--data_name", default=None, help="f30k_precomp | coco_precomp (default: the checkpoint's)")
    add("--split", default="test", help="test (Flickr30K), testall (COCO 5K), dev")
    add("--fold5", action="store_true", help="COCO 1K: mean over the five 1K folds of testall")
    add("--batch_size", type=int, default=None, help="encoding batch size (default: the checkpoint's)")
    add("--shard_size", type=int, default=None, help="images/captions per scoring block (default 2 x batch_size)")
    add("--workers", type=int, default=0, help="data loader workers")
    add("--device", default=None, help="cpu | cuda | cuda:N")
    add("--fp16", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    add("--out", default=None, help="JSON result path (default: dime_result_<protocol>.json, or "
        "dime_result_ensemble_<protocol>.json, next to --model_path)")
    return parser


def default_out(model_path: str, protocol: str, ensemble: bool) -> Path:
    """``<checkpoint dir>/dime_result[_ensemble]_<protocol>.json``: beside the (first) evaluated checkpoint."""
    return Path(model_path).parent / f"dime_result{'_ensemble' if ensemble else ''}_{protocol}.json"


def run(argv: Sequence[str] | None, prog: str) -> RetrievalResult:
    args = build_parser(prog).parse_args(argv)
    check_device(args.device)
    for name in ("batch_size", "shard_size"):
        check_value(f"--{name}", getattr(args, name), integer(1, optional=True))
    check_value("--workers", args.workers, integer(0))
    out = args.out or default_out(args.model_path, protocol_for(args.split, args.fold5), bool(args.model_path2))
    require_writable(out, "--out", kind="file")
    setup_logging()
    paths = [args.model_path] + ([args.model_path2] if args.model_path2 else [])
    settings = EvalSettings(
        data_path=args.data_path, bert_path=args.bert_path, data_name=args.data_name, split=args.split,
        fold5=args.fold5, batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
        device=args.device, fp16=args.fp16,
    )
    result = evalrank(paths, settings)
    print(result.table())
    print(f"result written to {result.write_json(out)}")
    return result


def evaluate(argv: Sequence[str] | None = None) -> RetrievalResult:
    """``evaluate_models.py`` on ``argv``, returning the :class:`RetrievalResult` (tests, Python API)."""
    return run(argv, "evaluate_models.py")


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``dime-evaluate`` / ``python evaluate_models.py``: exit status 0 on success."""
    evaluate(argv)


if __name__ == "__main__":
    main()
