"""``prepro.py`` (UNITER): annotations -> a txt_db LMDB; ``--task itm`` builds the ITM dbs IAIS trains on.

    python prepro.py --annotations dataset_flickr30k.json --output txt_db/itm_flickr30k_train.db --task itm \\
        --toker bert-base-cased            # or a folder holding vocab.txt; the split comes from the db name
    python prepro.py --annotations dataset_coco.json --output txt_db/itm_coco_restval.db --task itm --toker ...
    python prepro.py --annotations nlvr2/train.json --output txt_db/nlvr2_train.db --task nlvr [--missing_imgs ...]

Resumable: a run killed half-way finishes when rerun with the same flags (see
:mod:`itr_common.data.uniter_prepro`). Console script ``iais-prepro``.
"""

from __future__ import annotations

from collections.abc import Sequence

from itr_common.data.uniter_prepro import run_prepro
from itr_common.errors import cli_entry


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``iais-prepro`` / ``python prepro.py``."""
    run_prepro(argv, "prepro.py")


if __name__ == "__main__":
    main()
