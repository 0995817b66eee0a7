"""``scripts/convert_imgdir.py`` (UNITER / IAIS): a folder of bottom-up npz features -> an img_db LMDB.

    python scripts/convert_imgdir.py --img_dir features/flickr30k --output img_db --nproc 8   # -> img_db/flickr30k/
        (feat_th0.2_max100_min10/ + nbb_th0.2_max100_min10.json; --compress, --conf_th -1 --num_bb 36, --keep_all)

Resumable: a run killed half-way finishes when rerun (see :mod:`itr_common.data.uniter_prepro`).
Console script ``iais-convert-imgdir``.
"""

from __future__ import annotations

from collections.abc import Sequence

from itr_common.data.uniter_prepro import run_convert_imgdir
from itr_common.errors import cli_entry


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """``iais-convert-imgdir`` / ``python scripts/convert_imgdir.py``."""
    run_convert_imgdir(argv, "convert_imgdir.py")


if __name__ == "__main__":
    main()
