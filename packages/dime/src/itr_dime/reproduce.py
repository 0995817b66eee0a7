"""``dime-reproduce``: measured recalls beside the paper's, for given checkpoints and data.

    dime-reproduce --model_path runs/f30k_i2t/model_best.pth.tar --model_path2 runs/f30k_t2i/model_best.pth.tar \\
        --data_path $DATA_PATH

One checkpoint is compared with the paper's row of its direction (DIME-i2t / DIME-t2i), two with the
ensemble row (DIME*). Flickr30K (``*f30k*`` data) is evaluated on ``test``; COCO on ``testall``, whose 5K
score matrix gives both the 5K result and the mean over its five 1K folds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from itr_common import paper_table
from itr_common.errors import ArgumentParser, cli_entry
from itr_common.logging import setup_logging
from itr_common.metrics import evaluate_sims
from itr_common.paper_table import Comparison, compare, report_comparisons
from itr_common.validation import check_device, require_writable
from itr_dime.checkpoints import read_checkpoint
from itr_dime.evaluation import COCO_5K_PROTOCOL, COCO_FOLD5_PROTOCOL, FLICKR_PROTOCOL
from itr_dime.evaluation_models import EvalSettings, load_and_encode


def load_paper_table() -> dict[str, Any]:
    """The paper's DIME rows shipped with the package: ``{row: {dataset: {i2t: [..], t2i: [..]}}}``."""
    return paper_table.load_paper_table("itr_dime")


def paper_row_name(directions: Sequence[str]) -> str:
    """``DIME-ensemble`` for two models, else ``DIME-<direction>``."""
    return "DIME-ensemble" if len(directions) > 1 else f"DIME-{directions[0]}"


def dataset_of(data_name: str) -> str | None:
    """``f30k`` or ``coco`` from a data name such as ``f30k_precomp`` (None for anything else)."""
    for key in ("f30k", "coco"):
        if key in data_name.lower():
            return key
    return None


def reproduce(model_paths: Sequence[str], settings: EvalSettings) -> tuple[str, list[Comparison]]:
    """Evaluate and pair every protocol of the dataset with the paper's row; returns (row name, comparisons)."""
    loaded = load_and_encode(model_paths, settings)
    row = paper_row_name([o.direction for o in loaded.options])
    table = load_paper_table()
    shard = settings.shard_size or loaded.shard_size
    protocol = COCO_5K_PROTOCOL if settings.split == "testall" else FLICKR_PROTOCOL
    result, sims = loaded.evaluate(protocol, shard, settings.fp16)
    results = [result]
    if protocol == COCO_5K_PROTOCOL:  # the 1K folds come from the 5K matrix: its time plus their ranking
        k = loaded.encoded[0].captions_per_image
        start = time.perf_counter()
        folds = evaluate_sims(sims, COCO_FOLD5_PROTOCOL, k)
        folds.record_latency(result.extras["compute_s"] + time.perf_counter() - start)
        results.insert(0, loaded.describe(folds))
    return row, compare(results, table, row)


def build_parser(prog: str = "dime-reproduce") -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description="DIME: measured recalls beside the paper's table.")
    add = parser.add_argument
    add("--model_path", required=True, help="checkpoint (model_best.pth.tar)")
    add("--model_path2", default=None, help="second checkpoint (the other direction): compare the ensemble DIME*")
    add("--data_path", default=None, help="root of the precomp data (default: the checkpoint's)")
    add("--bert_path", default=None, help="BERT directory (default: the checkpoint's)")
    add("--data_name", default=None, help="f30k_precomp | coco_precomp (default: the checkpoint's)")
    add("--split", default=None, help="split to evaluate (default: test for Flickr30K, testall for COCO)")
    add("--batch_size", type=int, default=None, help="encoding batch size")
    add("--shard_size", type=int, default=None, help="images/captions per scoring block")
    add("--workers", type=int, default=0, help="data loader workers")
    add("--device", default=None, help="cpu | cuda | cuda:N")
    add("--fp16", action="store_true", help="autocast (fp16 on CUDA, bf16 on CPU)")
    add("--out", default=None, help="JSON file of the comparison (default: dime_reproduce.json next to --model_path)")
    return parser


def run(argv: Sequence[str] | None = None) -> list[Comparison]:
    """``dime-reproduce`` on ``argv``, returning the comparisons (tests, Python API)."""
    args = build_parser().parse_args(argv)
    check_device(args.device)
    args.out = args.out or str(Path(args.model_path).parent / "dime_reproduce.json")
    require_writable(args.out, "--out", kind="file")
    setup_logging()
    paths = [args.model_path] + ([args.model_path2] if args.model_path2 else [])
    settings = EvalSettings(
        data_path=args.data_path, bert_path=args.bert_path, data_name=args.data_name,
        split=args.split or _default_split(args.model_path, args.data_name),
        batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers, device=args.device,
        fp16=args.fp16,
    )
    row, comparisons = reproduce(paths, settings)
    report_comparisons(row, comparisons, args.out)
    return comparisons


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``dime-reproduce``: exit status 0 on success."""
    run(argv)


def _default_split(model_path: str, data_name: str | None) -> str:
    """``testall`` for COCO, ``test`` otherwise, from ``--data_name`` or the checkpoint's."""
    if data_name is None:
        data_name = read_checkpoint(model_path)["opt"].data_name
    return "testall" if dataset_of(data_name) == "coco" else "test"


if __name__ == "__main__":
    main()
