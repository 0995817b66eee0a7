"""``aladin-reproduce``: both heads of a checkpoint beside the paper's rows (paper_table.yaml).

    aladin-reproduce --load_checkpoint model_best_rsum.pth.tar --data_dir <data>/coco_ir \\
        --img_feat_file <features>/features.tsv --eval_model_dir <ckpt>/checkpoint-0132780

Runs ``alad/test.py``'s evaluation twice: the 1K subset (``test_img_keys_1k.tsv``) and the 5K split
(``test_img_keys.tsv``, with the mean of its five 1K folds), and prints measured vs paper for each head.
The paper rows are unverified (see paper_table.yaml).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from importlib import resources
from typing import Any

import yaml

from itr_aladin.options import build_test_parser, check_common
from itr_aladin.test import default_out, evaluate
from itr_common.errors import cli_entry, fail
from itr_common.fileio import write_json_atomic
from itr_common.logging import setup_logging

DATASET_OF = {"1k": "coco1k", "coco-5k": "coco5k", "coco-1k-fold5": "coco1k-fold5"}


def load_paper_table() -> dict[str, Any]:
    return yaml.safe_load(resources.files("itr_aladin").joinpath("paper_table.yaml").read_text(encoding="utf-8"))


def comparison_lines(head: str, protocol: str, result: Any, paper: dict[str, list[float]] | None) -> list[str]:
    """Measured R@1/5/10 both ways beside the paper's; a number the table does not hold shows as '-' (not NaN)."""
    out = [f"ALADIN-{head} | {protocol}"]
    for direction, values in (("i2t", result.i2t), ("t2i", result.t2i)):
        ref = (paper or {}).get(direction)
        theirs = " ".join(f"{v:6.1f}" for v in ref) if ref else " ".join(f"{'-':>6}" for _ in range(3))
        out.append(f"  {direction}  measured {values[0]:6.1f} {values[1]:6.1f} {values[2]:6.1f}   "
                   f"paper (unverified) {theirs}")
    return out


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``aladin-reproduce``."""
    parser = build_test_parser("aladin-reproduce")
    args = parser.parse_args(argv)
    if not args.load_checkpoint:
        fail("--load_checkpoint: expected an ALADIN checkpoint (.pth.tar), found none")
    check_common(args)
    args.out = args.out or default_out(args.load_checkpoint)  # beside the checkpoint, as test.py's
    setup_logging()
    table = load_paper_table()["rows"]
    record: dict[str, Any] = {}
    for keys_file in ("test_img_keys_1k.tsv", "test_img_keys.tsv"):
        run = copy.copy(args)
        run.eval_img_keys_file = keys_file
        run.out = f"{args.out.removesuffix('.json')}.{keys_file.removesuffix('.tsv')}.json"
        results = evaluate(run)
        for head, by_protocol in results.items():
            for protocol, result in by_protocol.items():
                paper = (table.get(f"ALADIN-{head}") or {}).get(DATASET_OF[protocol])
                print("\n".join(comparison_lines(head, protocol, result, paper)))
                record[f"{head}/{protocol}"] = {"measured": result.to_dict(), "paper": paper}
    write_json_atomic(args.out, record)
    print(f"comparison written to {args.out}")


if __name__ == "__main__":
    main()
