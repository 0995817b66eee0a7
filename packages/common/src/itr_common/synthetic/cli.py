"""``itr-synth``: write the synthetic world in the original data layouts.

    itr-synth --out DIR [--layout all|precomp|uniter|vinvl[,...]] [--size tiny|small|demo|base]
              [--seed N] [--n-train N] [--n-dev N] [--n-test N] [--feat-dim D] [--n-regions R]
              [--max-regions M] [--noise X] [--force]

Idempotent: a tree whose ``world.json`` stamp matches the requested config and layouts is left as
it is. A tree of another config (or a directory holding this tool's folder names but no stamp) is
replaced only with ``--force``, which removes just the folders and files this tool writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from itr_common.errors import ArgumentParser, cli_entry, fail
from itr_common.synthetic.layouts import (
    LAYOUTS,
    TOP_LEVEL,
    check_layouts,
    clear_tree,
    config_stamp,
    read_stamp,
    write_world,
)
from itr_common.synthetic.world import PRESETS, WorldConfig, generate_world, preset

OVERRIDES = {  # flag dest -> WorldConfig field
    "seed": "seed",
    "n_train": "n_train",
    "n_dev": "n_dev",
    "n_test": "n_test",
    "feat_dim": "feat_dim",
    "n_regions": "n_regions",
    "max_regions": "max_regions",
    "captions_per_image": "captions_per_image",
    "noise": "noise",
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="itr-synth",
        description="Write the synthetic image-text world in the original COCO/Flickr30K data layouts "
        "(SCAN precomp, UNITER txt_db/img_db, VinVL coco_ir + TSV features) with tiny checkpoints.",
    )
    parser.add_argument("--out", required=True, help="root of the tree to write")
    parser.add_argument("--layout", action="append", default=None,
                        help=f"'all' (default) or one of {', '.join(LAYOUTS)}; repeat or comma-separate for several")
    parser.add_argument("--size", default="tiny", help=f"preset: {', '.join(PRESETS)} (default tiny)")
    parser.add_argument("--seed", type=int, help="world seed (default 0)")
    parser.add_argument("--n-train", "--n_train", dest="n_train", type=int, help="train images")
    parser.add_argument("--n-dev", "--n_dev", dest="n_dev", type=int, help="dev images")
    parser.add_argument("--n-test", "--n_test", dest="n_test", type=int,
                        help="test images (a multiple of 5 for COCO's 1K-fold5 protocol)")
    parser.add_argument("--feat-dim", "--feat_dim", dest="feat_dim", type=int, help="region feature dimension")
    parser.add_argument("--n-regions", "--n_regions", dest="n_regions", type=int, help="precomp regions per image")
    parser.add_argument("--max-regions", "--max_regions", dest="max_regions", type=int,
                        help="detector rows per image (img_db / VinVL)")
    parser.add_argument("--captions-per-image", "--captions_per_image", dest="captions_per_image", type=int,
                        help="captions per image (default 5)")
    parser.add_argument("--noise", type=float, help="region feature noise (norm relative to a concept vector)")
    parser.add_argument("--force", action="store_true", help="replace an existing tree of another config")
    return parser


def parse_layouts(values: Sequence[str] | None) -> tuple[str, ...]:
    """``--layout`` values (repeated and/or comma-separated; 'all' = every layout) -> layout names."""
    names = [n.strip() for v in (values or ["all"]) for n in v.split(",") if n.strip()]
    if "all" in names:
        return LAYOUTS
    return check_layouts(names)


def config_from_args(args) -> WorldConfig:  # noqa: ANN001 - argparse namespace
    overrides = {field: getattr(args, dest) for dest, field in OVERRIDES.items() if getattr(args, dest) is not None}
    return preset(args.size, **overrides)


def _existing_entries(out: Path) -> list[str]:
    return [name for name in TOP_LEVEL if (out / name).exists()]


def _differences(existing: dict, config: WorldConfig, layouts: Sequence[str]) -> str:
    """``"seed 0 -> 3, layouts precomp -> all"``: what differs between a stamp and the request."""
    old = existing.get("config") if isinstance(existing.get("config"), dict) else {}
    new = {**config.to_dict(), "layouts": list(layouts)}
    old = {**old, "layouts": existing.get("layouts")}
    changed = [f"{key} {old.get(key)} -> {value}" for key, value in new.items() if old.get(key) != value]
    return ", ".join(changed[:3]) or "format version"


def prepare_out(out: Path, config: WorldConfig, layouts: Sequence[str], force: bool) -> bool:
    """True when ``out`` already holds this exact tree (nothing to do); clears it when ``force``."""
    if out.exists() and not out.is_dir():
        fail(f"--out {out}: expected a directory, found a file")
    existing = read_stamp(out)
    if existing is not None and existing.get("stamp") == config_stamp(config, layouts) and not force:
        return True
    entries = _existing_entries(out) if out.is_dir() else []
    if entries and not force:
        if existing is not None:
            what = f"another synthetic world ({_differences(existing, config, layouts)})"
        else:
            what = f"this tool's folder names ({', '.join(entries[:4])}) but no world.json"
        fail(f"--out {out}: holds {what}; pass --force to replace them")
    if entries:
        clear_tree(out)
    return False


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layouts = parse_layouts(args.layout)
    config = config_from_args(args)
    out = Path(args.out)
    if prepare_out(out, config, layouts, args.force):
        print(f"itr-synth: {out} is up to date (stamp {config_stamp(config, layouts)[:12]}, "
              f"layouts {', '.join(layouts)}); pass --force to rewrite it")
        return 0
    start = time.perf_counter()
    world = generate_world(config)
    written = write_world(world, out, layouts)
    elapsed = time.perf_counter() - start
    print(f"itr-synth: wrote a '{args.size}' world (seed {config.seed}: {config.n_train}/{config.n_dev}/"
          f"{config.n_test} images, {config.n_regions} x {config.feat_dim} regions) to {out} in {elapsed:.1f} s")
    for path, what in written.items():
        print(f"  {path}: {what}")
    return 0


if __name__ == "__main__":
    main()
