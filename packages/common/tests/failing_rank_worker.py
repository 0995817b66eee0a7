"""Worker for test_dist.py under ``torchrun --nproc_per_node 2``: rank 1 fails alone while rank 0 waits in a
collective, the way one rank meets a bad record or a full disk. Both run inside ``dist.shutdown_after()`` and
``cli_entry``, as every training command does: rank 1 must print its error and exit 2 at once (not wait for its
peer in the shutdown barrier), and torchrun then stops rank 0."""

from __future__ import annotations

from itr_common import dist
from itr_common.errors import UserError, cli_entry


@cli_entry
def main() -> int:
    info = dist.init_distributed(device="cpu")
    with dist.shutdown_after():
        if info.rank == 1:
            raise UserError("rank 1: expected a readable record, found a broken one")
        dist.all_gather_object("rank 0 waits here for a peer that never comes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
