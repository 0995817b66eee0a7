"""``selfalign-reproduce``: measured recalls beside the paper's, for a checkpoint of either variant.

    selfalign-reproduce --model_path camera_SelfAlign/runs/flickr/model_best.pth.tar --data_path $DATA_PATH

The row follows the checkpoint: CAMERA / VSRN (``--selfalign 0``) or CAMERA+SelfAlign / VSRN+SelfAlign.
Flickr30K (``*f30k*`` data) is evaluated on ``test``; COCO on ``testall``, giving both the 5K result and the
mean over its five 1K folds. Numbers the paper table leaves null are printed as ``-`` (unverified).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from itr_common import paper_table
from itr_common.errors import ArgumentParser, cli_entry
from itr_common.logging import setup_logging
from itr_common.paper_table import Comparison, compare, report_comparisons
from itr_common.validation import check_device, require_writable
from itr_selfalign.checkpoints import checkpoint_options, read_checkpoint, variant_of
from itr_selfalign.evaluate_models import evaluate


def load_paper_table() -> dict[str, Any]:
    """``{row: {dataset: {i2t: [..], t2i: [..]} or None}}`` shipped with the package."""
    return paper_table.load_paper_table("itr_selfalign")


def row_name(variant: str, selfalign: int) -> str:
    return {"camera": "CAMERA", "vsrn": "VSRN"}[variant] + ("+SelfAlign" if selfalign else "")


def build_parser(prog: str = "selfalign-reproduce") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="SelfAlign: measured recalls beside the paper's table.")
    add = parser.add_argument
    add("--model_path", required=True, help="checkpoint (model_best.pth.tar) of either variant")
    add("--data_path", default=None, help="root of the precomp data (default: the checkpoint's)")
    add("--text_path", default=None, help="BERT dir (CAMERA) or vocabulary folder (VSRN); default: the checkpoint's")
    add("--data_name", default=None, help="f30k_precomp | coco_precomp (default: the checkpoint's)")
    add("--split", default=None, help="default: test for Flickr30K, testall for COCO")
    add("--batch_size", type=int, default=None, help="encoding batch size")
    add("--device", default=None, help="cpu | cuda | cuda:N")
    add("--out", default=None,
        help="JSON file of the comparison (default: selfalign_reproduce.json next to --model_path)")
    return parser


def run(argv: Sequence[str] | None = None) -> list[Comparison]:
    args = build_parser().parse_args(argv)
    check_device(args.device)
    args.out = args.out or str(Path(args.model_path).parent / "selfalign_reproduce.json")
    require_writable(args.out, "--out", kind="file")
    setup_logging()
    state = read_checkpoint(args.model_path)
    variant = variant_of(state["opt"]) or "camera"
    opt = checkpoint_options(state, variant)
    data_name = args.data_name or opt.data_name
    split = args.split or ("testall" if "coco" in data_name.lower() else "test")
    row = row_name(variant, opt.selfalign)
    table = load_paper_table()
    common = dict(data_path=args.data_path, text_path=args.text_path, split=split, batch_size=args.batch_size,
                  device=args.device, data_name=args.data_name)
    results = [evaluate(variant, args.model_path, fold5=False, **common)]
    if split == "testall":
        results.insert(0, evaluate(variant, args.model_path, fold5=True, **common))
    comparisons = compare(results, table, row)
    report_comparisons(row, comparisons, args.out)
    return comparisons


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``selfalign-reproduce``: exit status 0 on success."""
    run(argv)


__all__ = ["Comparison", "build_parser", "load_paper_table", "main", "row_name", "run"]


if __name__ == "__main__":
    main()
