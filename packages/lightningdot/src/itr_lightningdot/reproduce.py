"""``lightningdot-reproduce``: evaluate a checkpoint with ``eval_itm.py`` and print it beside the README's rows.

    lightningdot-reproduce --checkpoint flickr-ft.pt --eval_config ./config/flickr30k_eval_config.json --row flickr-ft

The test split of the eval config is evaluated (faiss flat index, the original's recall); the table shows the
measured row and the paper row (``paper_table.yaml``) for that split: ``f30k`` for a 1K gallery, ``coco5k`` for 5K.
Extra flags after ``--`` go to ``eval_itm.py`` (e.g. ``-- --txt_model_config /bert-base-cased``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import resources
from typing import Any

import yaml

from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.metrics import RetrievalResult
from itr_lightningdot import eval_itm
from itr_lightningdot.options import parse_eval_args


def load_paper_table() -> dict[str, Any]:
    text = resources.files("itr_lightningdot").joinpath("paper_table.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["rows"]


def _cells(values: Sequence[float] | None) -> list[str]:
    return [f"{v:.2f}" for v in values] if values else ["-", "-", "-"]


def comparison_table(result: RetrievalResult, rows: dict[str, Any], key: str, only: str | None = None) -> str:
    header = ["row", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum"]
    table = [["measured", *_cells(result.i2t[:3]), *_cells(result.t2i[:3]), f"{result.rsum:.2f}"]]
    for name, entry in rows.items():
        if (only and name != only) or key not in entry:
            continue
        i2t, t2i = entry[key]["i2t"], entry[key]["t2i"]
        table.append([f"paper: {name}", *_cells(i2t), *_cells(t2i), f"{sum(i2t) + sum(t2i):.2f}"])
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *table])


def run(opts: argparse.Namespace) -> RetrievalResult:
    rows = load_paper_table()
    if opts.row and opts.row not in rows:
        fail(f"--row: expected one of {', '.join(rows)}, found '{opts.row}'")
    argv = [opts.eval_config, opts.checkpoint, "--splits", "test", *opts.eval_args]
    if opts.output_dir:
        argv += ["--output_dir", opts.output_dir]
    result = eval_itm.run(parse_eval_args(argv))["test"]
    key = {1000: "f30k", 5000: "coco5k"}.get(result.n_images or 0, "f30k")
    print(f"test split: {result.n_images} images ({key} rows of the README)")
    print(comparison_table(result, rows, key, opts.row), flush=True)
    return result


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="lightningdot-reproduce", description="Measured recall beside the LightningDOT README's.")
    p.add_argument("--checkpoint", required=True, help="biencoder.*.pt or LightningDot.pt / flickr-ft.pt / coco-ft.pt")
    p.add_argument("--eval_config", required=True, help="config/{flickr30k,coco}_eval_config.json")
    p.add_argument("--row", default=None, help="only this paper row (zero-shot, flickr-ft, coco-ft)")
    p.add_argument("--output_dir", default=None, help="where the result JSON goes (default: the config's)")
    p.add_argument("eval_args", nargs=argparse.REMAINDER, help="-- then flags for eval_itm.py")
    opts = p.parse_args(argv)
    opts.eval_args = [a for a in opts.eval_args if a != "--"]
    run(opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
