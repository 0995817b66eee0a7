"""``iais-reproduce``: evaluate a fine-tuned checkpoint on a data root and print it beside the paper's numbers.

    iais-reproduce --checkpoint ckpt/model_step_5000.pt --data_root /data --dataset flickr [--fp16]

``--model_config auto`` (the default) reads the checkpoint and takes the bundled ``uniter-base.json`` (hidden 768,
12 layers) or ``uniter-large.json`` (1024, 24), the two sizes of the IAIS release; any other shape stops with one
line asking for ``--model_config``.

``--data_root`` holds the README tree (``txt_db/``, ``img_db/``, ``pretrained/``); the test split is
``txt_db/itm_flickr30k_test.db`` + ``img_db/flickr30k`` (Flickr30K 1K) or ``txt_db/itm_coco_test.db`` +
``img_db/coco_val2014`` (COCO 5K). The evaluation is ``inf_itm.py``'s (all pairs, standard R@K).

The paper rows come from ``paper_table.yaml`` and are not verified against the paper's Table 1 (it could not be
read here): the one row is the Papers-with-Code listing of the paper, which states neither the backbone nor the
IAIS variant.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor

from itr_common.checkpoint import load_checkpoint, strip_module_prefix
from itr_common.errors import ArgumentParser, cli_entry, fail, require_dir, require_file
from itr_common.metrics import RetrievalResult
from itr_common.models.uniter import require_state_dict
from itr_common.paper_table import load_paper_table
from itr_iais import inf_itm
from itr_iais.options import BUNDLED_CONFIG_DIR

DATASETS = {
    "flickr": ("itm_flickr30k_test.db", "flickr30k", "f30k"),
    "coco": ("itm_coco_test.db", "coco_val2014", "coco5k"),
}
AUTO = "auto"
BUNDLED_BY_SHAPE = {(768, 12): "uniter-base.json", (1024, 24): "uniter-large.json"}
"""(hidden size, encoder layers) -> the bundled config: the two sizes of the IAIS release's fine-tuned checkpoints."""
_LAYER = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")


def uniter_shape(state: Mapping[str, Tensor]) -> tuple[int | None, int]:
    """(hidden size from the word-embedding width or None, number of encoder layers) of a UNITER state dict."""
    hidden = None
    layers: set[int] = set()
    for key, value in strip_module_prefix(state).items():
        if key.endswith("embeddings.word_embeddings.weight") and value.dim() == 2:
            hidden = int(value.shape[1])
        found = _LAYER.search(key)
        if found:
            layers.add(int(found.group(1)))
    return hidden, len(layers)


def choose_model_config(state: Mapping[str, Tensor], source: str) -> Path:
    """The bundled uniter-base.json / uniter-large.json whose shape the checkpoint has, else a one-line error."""
    hidden, layers = uniter_shape(state)
    name = BUNDLED_BY_SHAPE.get((hidden, layers))
    if name is None:
        fail(f"{source}: --model_config auto: expected UNITER-base (hidden 768, 12 layers) or UNITER-large "
             f"(hidden 1024, 24 layers), found hidden {hidden if hidden is not None else 'unknown'}, {layers} layers; "
             f"pass --model_config")
    return BUNDLED_CONFIG_DIR / name


def resolve_auto_config(checkpoint: str) -> tuple[Path, dict[str, Tensor]]:
    """``--model_config auto``: read the checkpoint (inf_itm's loader) and pick the bundled config by shape;
    returns the config and the state dict read (the evaluation loads it from there, not from the file again)."""
    require_file(checkpoint, "--checkpoint")
    state = require_state_dict(load_checkpoint(checkpoint), checkpoint)
    return choose_model_config(state, checkpoint), state


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="iais-reproduce", description="Measured recall beside the IAIS paper's.")
    p.add_argument("--checkpoint", required=True, help="fine-tuned model_step_N.pt (original keys)")
    p.add_argument("--data_root", required=True, help="folder with txt_db/ and img_db/")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="flickr")
    p.add_argument("--model_config", default=AUTO,
                   help="auto (default: uniter-base.json or uniter-large.json, bundled, chosen from the checkpoint's "
                        "hidden size and layers) or a config file (e.g. the synthetic uniter-tiny.json)")
    p.add_argument("--output_dir", default=None, help="default: <checkpoint dir>/reproduce_<dataset>")
    p.add_argument("--batch_size", type=int, default=400)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--compressed_db", action="store_true")
    return p


def _cells(values: Sequence[float] | None) -> list[str]:
    return [f"{v:.2f}" for v in values] if values else ["-", "-", "-"]


def comparison_table(result: RetrievalResult, key: str) -> str:
    """Rows: measured, then each paper row for ``key`` (``f30k`` / ``coco5k``)."""
    header = ["row", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum"]
    rows = [["measured", *_cells(result.i2t[:3]), *_cells(result.t2i[:3]), f"{result.rsum:.2f}"]]
    for name, table in load_paper_table("itr_iais").items():
        entry = table.get(key)
        if entry is None:
            continue
        i2t, t2i = entry.get("i2t"), entry.get("t2i")
        rsum = f"{sum(i2t) + sum(t2i):.2f}" if i2t and t2i else "-"
        rows.append([name, *_cells(i2t), *_cells(t2i), rsum])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def run(opts: argparse.Namespace) -> RetrievalResult | None:
    root = require_dir(opts.data_root, "--data_root")
    txt_name, img_name, key = DATASETS[opts.dataset]
    default_out = Path(opts.checkpoint).resolve().parent / f"reproduce_{opts.dataset}"
    out = Path(opts.output_dir) if opts.output_dir else default_out
    model_config, state = opts.model_config, None
    if model_config == AUTO:
        config_path, state = resolve_auto_config(opts.checkpoint)
        model_config = str(config_path)
        print(f"--model_config auto: {model_config} (from the shape of {opts.checkpoint})", flush=True)
    argv = ["--txt_db", str(root / "txt_db" / txt_name), "--img_db", str(root / "img_db" / img_name),
            "--checkpoint", opts.checkpoint, "--model_config", model_config, "--output_dir", str(out),
            "--batch_size", str(opts.batch_size)]
    argv += ["--fp16"] * opts.fp16 + ["--compressed_db"] * opts.compressed_db
    result = inf_itm.run(inf_itm.parse_args(argv), state)
    if result is not None:
        print(comparison_table(result, key), flush=True)
    return result


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
